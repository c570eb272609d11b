"""A second host for transfer tests: a network namespace reached over a veth pair, with sshd and an rsync daemon.

``remote_host`` (one per test session, per xdist worker) makes:

* a network namespace ``sluice-t-<random>`` joined to this host by a veth pair on a private /30 (this host
  ``.1``, the namespace ``.2``). The namespace has only ``lo`` and its veth end, no default route: traffic goes
  between this host and the namespace, nowhere else.
* a private mount namespace for the remote side, where the remote scratch directory is a tmpfs: a file there
  is visible on this host only if it crossed the wire (the rest of the file system is shared).
* Debian's ``/usr/sbin/sshd`` on port 22 of the namespace address with its own config and host key (both in a
  tmp dir), root login by key only (``PermitRootLogin prohibit-password``), no PAM, ``AuthorizedKeysFile`` the
  client key this fixture generated; and ``rsync --daemon`` on port 873 with module ``scratch`` (that tmpfs).
* a client ssh config (the key, ``BatchMode yes``, ``StrictHostKeyChecking accept-new``, known hosts in the tmp
  dir) and ``env = {"RSYNC_RSH": "ssh -F <config>"}``.

Teardown stops the daemons and deletes the namespace and the veth pair. Without root, ``ip``, namespaces or the
packages (``scripts/test-services.sh`` installs openssh-server, openssh-client, rsync, iproute2), it skips.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
TOOLS = {"ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux", "ssh": "openssh-client",
         "ssh-keygen": "openssh-client", "rsync": "rsync", SSHD: "openssh-server"}
RSYNC_PORT = 873


@dataclass(frozen=True)
class RemoteHost:
    """The second host: its address, a scratch dir only it sees, how to run commands there, the client env."""

    netns: str
    address: str
    """The namespace's end of the /30 (sshd on port 22, the rsync daemon on 873)."""
    local_address: str
    """This host's end of the /30."""
    scratch: Path
    """The remote scratch dir: the same path on this host stays empty (a tmpfs in the remote mount namespace)."""
    ssh_config: Path
    env: dict[str, str] = field(default_factory=dict)
    """What to set for rsync to reach ``root@address``: ``RSYNC_RSH``."""
    pid: int = 0
    """sshd's pid: :meth:`run` enters its network and mount namespaces."""

    def url(self, rel: str = "") -> str:
        """``root@<address>:<scratch>/rel`` for rsync over ssh."""
        return f"root@{self.address}:{self.scratch}/{rel}"

    def daemon_url(self, rel: str = "") -> str:
        """``rsync://<address>/scratch/rel`` for the rsync daemon."""
        return f"rsync://{self.address}/scratch/{rel}"

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
            ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` on the remote host (like ``ip netns exec``, and in its mount namespace too)."""
        return subprocess.run(["nsenter", "-t", str(self.pid), "-n", "-m", "--", *argv], input=input,
                              capture_output=True, check=check, timeout=30)

    def write(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``scratch/rel`` on the remote host (parents made)."""
        path = self.scratch / rel
        self.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", str(path)], input=data)

    def read(self, rel: str) -> bytes:
        """The bytes of ``scratch/rel`` on the remote host."""
        return self.run(["cat", str(self.scratch / rel)]).stdout

    def exists(self, rel: str) -> bool:
        return self.run(["test", "-e", str(self.scratch / rel)], check=False).returncode == 0


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30)


def _must(*argv: str) -> None:
    p = _sh(*argv)
    if p.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")


def _free_slash30() -> ipaddress.IPv4Network:
    """A random /30 in 10.0.0.0/8 that overlaps no address or route of this host."""
    used = []
    for cmd in (["ip", "-o", "-4", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        for word in _sh(*cmd).stdout.split():
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(word, strict=False))
    rng = random.SystemRandom()
    for _ in range(100):
        net = ipaddress.IPv4Network((0x0A000000 + rng.randrange(1, 1 << 22) * 4, 30))
        if not any(net.overlaps(u) for u in used if u.version == 4 and u.prefixlen > 0):
            return net
    raise RuntimeError("no free private /30 for the test namespace")


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {log.read_text(errors='replace')[-1000:]}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {host}:{port} after 15 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _keygen(path: Path) -> None:
    _must("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sluice-test", "-f", str(path))


def _configs(d: Path, net: ipaddress.IPv4Network, scratch: Path) -> tuple[str, str]:
    """Write sshd_config, rsyncd.conf and the client config in ``d``; (namespace address, this host's)."""
    local, remote = (str(a) for a in net.hosts())
    _keygen(d / "host_ed25519")
    _keygen(d / "id_ed25519")
    shutil.copy(d / "id_ed25519.pub", d / "authorized_keys")
    (d / "sshd_config").write_text(
        f"Port 22\nListenAddress {remote}\nHostKey {d / 'host_ed25519'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nX11Forwarding no\nAllowTcpForwarding no\nPrintMotd no\nUseDNS no\n"
    )
    (d / "rsyncd.conf").write_text(
        f"use chroot = no\nuid = root\ngid = root\nlog file = {d / 'rsyncd.log'}\n"
        f"[scratch]\n  path = {scratch}\n  read only = no\n"
    )
    (d / "ssh_config").write_text(
        f"Host *\n  User root\n  IdentityFile {d / 'id_ed25519'}\n  IdentitiesOnly yes\n"
        f"  StrictHostKeyChecking accept-new\n  UserKnownHostsFile {d / 'known_hosts'}\n"
        "  GlobalKnownHostsFile /dev/null\n  BatchMode yes\n  LogLevel ERROR\n"
    )
    return remote, local


@pytest.fixture(scope="session")
def remote_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteHost]:
    """A second host reached over ssh and an rsync daemon (see the module docstring); skips where it cannot."""
    if os.geteuid() != 0:
        pytest.skip("remote_host needs root (network namespaces)")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        pytest.skip(f"remote_host needs {', '.join(missing)} (scripts/test-services.sh installs them)")
    token = secrets.token_hex(3)
    name, veth_here, veth_there = f"sluice-t-{token}", f"slt{token}h", f"slt{token}r"
    d = tmp_path_factory.mktemp("remote_host")
    scratch = d / "remote"
    scratch.mkdir()
    p = _sh("ip", "netns", "add", name)
    if p.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {p.stderr.strip() or p.returncode}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        net = _free_slash30()
        remote, local = _configs(d, net, scratch)
        p = _sh("ip", "link", "add", veth_here, "type", "veth", "peer", "name", veth_there, "netns", name)
        if p.returncode != 0:
            pytest.skip(f"cannot make a veth pair into the namespace: {p.stderr.strip() or p.returncode}")
        _must("ip", "addr", "add", f"{local}/30", "dev", veth_here)
        _must("ip", "link", "set", veth_here, "up")
        _must("ip", "netns", "exec", name, "ip", "addr", "add", f"{remote}/30", "dev", veth_there)
        _must("ip", "netns", "exec", name, "ip", "link", "set", veth_there, "up")
        _must("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        # ip netns exec and unshare exec (no fork), so the Popen's pid is sshd's own
        boot = 'mount -t tmpfs -o size=64m,mode=0700 sluice-remote "$1" && exec "$2" -D -f "$3" -E "$4"'
        sshd = subprocess.Popen(
            ["ip", "netns", "exec", name, "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             boot, "sh", str(scratch), SSHD, str(d / "sshd_config"), str(d / "sshd.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sshd)
        (d / "sshd.log").touch()
        _wait_port(remote, 22, sshd, d / "sshd.log", "sshd")
        daemon = subprocess.Popen(
            ["nsenter", "-t", str(sshd.pid), "-n", "-m", "--", "rsync", "--daemon", "--no-detach",
             f"--config={d / 'rsyncd.conf'}", f"--address={remote}", f"--port={RSYNC_PORT}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(daemon)
        (d / "rsyncd.log").touch()
        _wait_port(remote, RSYNC_PORT, daemon, d / "rsyncd.log", "rsync --daemon")
        host = RemoteHost(name, remote, local, scratch, d / "ssh_config",
                          {"RSYNC_RSH": f"ssh -F {shlex.quote(str(d / 'ssh_config'))}"}, sshd.pid)
        check = _sh("ssh", "-F", str(host.ssh_config), f"root@{remote}", "true")
        if check.returncode != 0:
            raise RuntimeError(f"ssh to the test host failed: {check.stderr.strip()} "
                               f"(sshd log: {(d / 'sshd.log').read_text(errors='replace')[-500:]})")
        yield host
    except RuntimeError as e:
        pytest.fail(f"remote_host: {e}")
    finally:
        for proc in reversed(procs):
            _stop(proc)
        leftover = _sh("ip", "netns", "pids", name).stdout.split()  # sshd's sessions, if any outlived it
        for pid in leftover:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _sh("ip", "netns", "del", name)
        if _sh("ip", "link", "show", veth_here).returncode == 0:  # gone with the namespace, normally
            _sh("ip", "link", "del", veth_here)
