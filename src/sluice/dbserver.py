"""A PostgreSQL server of the workspace's own (`sluice dbserver start|stop|status`).

Why: one SQLite file cannot serve a service on a login node and launchers on compute nodes (store/fsinfo.py
refuses that), and most users cannot ask for a database. The system's PostgreSQL binaries can run a private
server with no administrator: data in `<workspace>/dbserver/data`, a free TCP port, password logins only
(SCRAM), loopback unless `--host` says otherwise.

The password is generated, written once to `<workspace>/dbserver/passfile` (libpq's .pgpass format, 0600) and
never shown: sluice.toml names the file (`...?passfile=PATH`), not the password, and libpq reads it. PostgreSQL
refuses to run as root, so a root caller runs initdb, pg_ctl and the server as an unprivileged account (the
data directory's owner; on first start `postgres` if it exists, else a `sluice-db` system user made with
useradd) that owns the data directory alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sluice import config
from sluice.api import migrate
from sluice.api.admin import redact
from sluice.errors import Fault, UserError, one_line

Account = pwd.struct_passwd
"""The unprivileged account a root caller runs the server as."""
ROLE = DATABASE = "sluice"
SERVER_ACCOUNTS = ("postgres",)
"""Accounts a root caller runs the server as, if present (Debian's server packages make `postgres`)."""
NEW_ACCOUNT = "sluice-db"
"""The system account made for it when none of those exists."""
DEBIAN_BINS = Path("/usr/lib/postgresql")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ANYWHERE = ("0.0.0.0", "*", "::")


@dataclass
class Status:
    """What `sluice dbserver` reports: never the password."""

    running: bool
    data_dir: Path
    host: str
    port: int | None
    version: str
    size: int = 0
    url: str = ""
    message: str = ""
    moved: str = ""


class Layout:
    """The files of a workspace's server, all under <workspace>/dbserver/."""

    def __init__(self, root: Path) -> None:
        self.root, self.data, self.passfile = root, root / "data", root / "passfile"
        self.state, self.log = root / "server.json", root / "postgres.log"

    def url(self, host: str, port: int) -> str:
        """The workspace's database URL: user, host, port and the password file; no password."""
        h = socket.gethostname() if host in ANYWHERE else host  # what compute nodes call this host
        h = f"[{h}]" if ":" in h else h
        return f"postgresql+psycopg://{ROLE}@{h}:{port}/{DATABASE}?passfile={quote(str(self.passfile), safe='/')}"


def layout(workspace: str | os.PathLike[str] | None) -> tuple[Path, Layout]:
    root = config.find_workspace(workspace)
    return root, Layout(root / "dbserver")


def find_bindir(major: str | None = None) -> Path:
    """The directory of initdb, pg_ctl and postgres: Debian's /usr/lib/postgresql/N/bin (the newest, or
    version `major`, the one that made an existing data directory), else the one on $PATH."""
    tools = ("initdb", "pg_ctl", "postgres")
    found: dict[str, Path] = {}
    for d in DEBIAN_BINS.glob("*/bin"):
        if all((d / t).is_file() for t in tools):
            found[d.parent.name] = d
    on_path = shutil.which("pg_ctl")
    if on_path:
        d = Path(on_path).resolve().parent
        if all((d / t).is_file() for t in tools):
            found.setdefault(_version(d), d)
    if major is not None:
        if major not in found:
            raise UserError(f"the database server's data was made by PostgreSQL {major}, whose binaries are not "
                            f"installed: `apt-get install postgresql-{major}`")
        return found[major]
    if not found:
        raise UserError(f"no PostgreSQL server binaries (initdb, pg_ctl) under {DEBIAN_BINS}/*/bin or on $PATH; "
                        "install PostgreSQL's server with `apt-get install postgresql` (or load your site's module)")
    return max(found.items(), key=lambda kv: _num(kv[0]))[1]


def _num(v: str) -> list[int]:  # "15" < "16", "9.6" < "10"
    return [int(x) for x in re.findall(r"\d+", v)] or [0]


def _version(bindir: Path) -> str:
    """The major version of the binaries in bindir (`pg_ctl (PostgreSQL) 15.4` -> `15`)."""
    out = subprocess.run([str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+)(?:\.\d+)?", out)
    return m.group(1) if m else "0"


def server_account(data: Path, *, candidates: Sequence[str] = SERVER_ACCOUNTS,
                   new: str = NEW_ACCOUNT) -> Account | None:
    """None when the caller is not root (the server runs as the caller). For root: the data directory's owner,
    else the first existing candidate, else a new system account `new`."""
    if os.geteuid() != 0:
        return None
    if data.exists() and data.stat().st_uid != 0:
        return pwd.getpwuid(data.stat().st_uid)
    for name in (*candidates, new):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    proc = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                           "--shell", "/usr/sbin/nologin", "--comment", "sluice database servers", new],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise Fault(f"PostgreSQL will not run as root, and `useradd {new}` failed: {one_line(proc.stderr)}")
    return pwd.getpwnam(new)


def _check_reachable(path: Path, acct: Account) -> None:
    """The server account must be able to enter every directory above its data (root's 0700 dirs stop it)."""
    groups = set(os.getgrouplist(acct.pw_name, acct.pw_gid))
    for d in reversed(path.parents):
        st = d.stat()
        bit = stat.S_IXUSR if st.st_uid == acct.pw_uid else stat.S_IXGRP if st.st_gid in groups else stat.S_IXOTH
        if not st.st_mode & bit:
            raise UserError(f"the database server runs as user {acct.pw_name} (PostgreSQL refuses root), who cannot "
                            f"enter {d}; allow it with `chmod o+x {d}`, or put the workspace elsewhere")


def _run(argv: list[str], acct: Account | None, cwd: Path, *, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A PostgreSQL tool, as the server account when there is one; its output captured, never shown raw."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "HOME": str(cwd)}
    kw: dict[str, object] = {}
    if acct is not None:
        kw = {"user": acct.pw_uid, "group": acct.pw_gid, "extra_groups": []}
    try:
        return subprocess.run(argv, cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, **kw)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired:
        raise Fault(f"{Path(argv[0]).name} did not finish in {timeout:.0f} s") from None


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    bad = [ln for ln in lines if re.search(r"FATAL|ERROR|error|could not|failed", ln)]
    return one_line((bad or lines or ["no output"])[-1])


def _write(path: Path, text: str, acct: Account | None, mode: int = 0o600) -> None:
    """A file owned by the server account (or the caller), mode set before any content is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        if acct is not None:
            os.fchown(fd, acct.pw_uid, acct.pw_gid)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@contextmanager
def _locked(lay: Layout) -> Iterator[None]:
    """One start or stop at a time per workspace."""
    lay.root.mkdir(mode=0o711, exist_ok=True)
    with open(lay.root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _state(lay: Layout) -> dict[str, object]:
    """server.json: the host and port last used (a restart keeps the URL in sluice.toml valid)."""
    try:
        return dict(json.loads(lay.state.read_text()))
    except (OSError, ValueError):
        return {}


def _initdb(lay: Layout, bindir: Path, acct: Account | None) -> None:
    """A fresh cluster: role `sluice` with a generated password, SCRAM for every login."""
    if acct is not None:
        _check_reachable(lay.data, acct)
    lay.data.mkdir(mode=0o700, exist_ok=True)
    if acct is not None:
        os.chown(lay.data, acct.pw_uid, acct.pw_gid)
    password = secrets.token_urlsafe(24)  # letters, digits, - and _: nothing .pgpass would need escaped
    _write(lay.passfile, f"*:*:*:{ROLE}:{password}\n", None)
    pwfile = lay.root / ".initdb-pw"
    _write(pwfile, password + "\n", acct)
    try:
        proc = _run([str(bindir / "initdb"), "-D", str(lay.data), "-U", ROLE, f"--pwfile={pwfile}",
                     "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions"], acct, lay.root)
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise Fault(f"initdb failed: {_last_error(proc.stderr + proc.stdout)}")
    with open(lay.data / "postgresql.conf", "a") as f:
        f.write("\ninclude_if_exists = 'sluice.conf'  # written by `sluice dbserver start`\n")


def _configure(lay: Layout, host: str, port: int, acct: Account | None) -> None:
    """Where to listen, and who may log in: SCRAM only, from loopback unless the server listens further."""
    listen = "*" if host in ANYWHERE else host
    _write(lay.data / "sluice.conf", f"listen_addresses = '{listen}'\nport = {port}\nunix_socket_directories = ''\n"
           "password_encryption = 'scram-sha-256'\nmax_connections = 200\n", acct)
    nets = ["127.0.0.1/32", "::1/128"] + (["0.0.0.0/0", "::/0"] if host not in LOOPBACK else [])
    hba = ["# written by `sluice dbserver start`: password (SCRAM) logins only", "local all all scram-sha-256",
           *(f"host all all {n} scram-sha-256" for n in nets)]
    _write(lay.data / "pg_hba.conf", "\n".join(hba) + "\n", acct)


def _free(host: str, port: int) -> bool:
    """Whether port can be bound on host now (0: a port the kernel picks is checked and returned instead)."""
    bind = "" if host in ANYWHERE else ("127.0.0.1" if host == "localhost" else host)
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as postgres binds: TIME_WAIT is no owner
        try:
            s.bind((bind, port))
            return True
        except OSError:
            return False


def _a_free_port(host: str) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if _free(host, port):
            return port
    raise Fault("found no free TCP port for the database server")


def _running(lay: Layout, bindir: Path, acct: Account | None) -> bool:
    if not (lay.data / "PG_VERSION").exists():
        return False
    return _run([str(bindir / "pg_ctl"), "-D", str(lay.data), "status"], acct, lay.root).returncode == 0


def _ensure_database(lay: Layout, bindir: Path, host: str, port: int) -> None:
    """The `sluice` database, made on first start (psql and createdb run as the caller: the passfile is ours)."""
    near = "127.0.0.1" if host in ANYWHERE or host == "localhost" else host
    conn, env = ["-h", near, "-p", str(port), "-U", ROLE], {"PGPASSFILE": str(lay.passfile), "PGCONNECT_TIMEOUT": "10"}
    q = _run([str(bindir / "psql"), *conn, "-d", "postgres", "-tAc",
              f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"], None, lay.root, env=env)
    if q.returncode != 0:
        raise Fault(f"the database server does not answer: {_last_error(q.stderr)}; see {lay.log}")
    if q.stdout.strip() != "1":
        made = _run([str(bindir / "createdb"), *conn, DATABASE], None, lay.root, env=env)
        if made.returncode != 0:
            raise Fault(f"createdb failed: {_last_error(made.stderr)}")


def _pg_start(lay: Layout, bindir: Path, acct: Account | None, host: str, port: int | None,
              given: bool) -> int:
    """pg_ctl start on `port` (the one given, or the last one used if still free), else on a free one; a port
    taken in the meantime by someone else costs a retry on another, unless the user chose it."""
    for attempt in range(3):
        p = port if port is not None and attempt == 0 and (given or _free(host, port)) else _a_free_port(host)
        _configure(lay, host, p, acct)
        if not lay.log.exists():
            _write(lay.log, "", acct)
        proc = _run([str(bindir / "pg_ctl"), "-D", str(lay.data), "-l", str(lay.log), "-w", "-t", "60", "start"],
                    acct, lay.root)
        if proc.returncode == 0:
            return p
        tail = lay.log.read_text(errors="replace")[-4000:] if lay.log.exists() else ""
        if "already in use" not in tail or given:
            raise Fault(f"the database server did not start: {_last_error(tail or proc.stderr)}; "
                              f"see {lay.log}")
    raise Fault(f"the database server found no free port; see {lay.log}")


def start(workspace: str | os.PathLike[str] | None, *, host: str | None = None, port: int | None = None,
          migrate_jobs: bool = False) -> Status:
    """Start (first: create) the workspace's server, its database and schema, and point sluice.toml at it.

    Safe to repeat; without `host` or `port` the last ones are kept. A workspace with SQLite data is moved only
    with `migrate_jobs` (else refused, nothing changed), one on another server is refused: neither is ever
    silently left behind.
    """
    root, lay = layout(workspace)
    if host is not None and not re.fullmatch(r"[A-Za-z0-9.:_*-]+", host):
        raise UserError(f"bad --host {host!r}: give an address or host name, e.g. 127.0.0.1 or 0.0.0.0")
    current = config.load(root).db_url
    ours = "passfile=" + quote(str(lay.passfile), safe="/") in current and current.startswith("postgresql")
    held: dict[str, int] = {}
    if current.startswith("sqlite"):
        held = {k: v for k, v in migrate.counts(current).items() if v}
        if held and not migrate_jobs:
            what = ", ".join(f"{v} {k}" for k, v in held.items() if k in ("jobs", "apps")) or "data"
            raise UserError(f"workspace {root} holds {what} in SQLite; `sluice dbserver start --migrate` moves "
                            "them into the new server (or start it and run `sluice db migrate-to URL`)")
        if held:
            migrate.refuse_if_running(current)  # before a server is made for a move that cannot happen yet
    elif not ours:
        raise UserError(f"workspace {root} uses the database {redact(current)}; `sluice dbserver start` "
                        "would leave it behind: set [database] url in sluice.toml yourself to switch")
    with _locked(lay):
        made = (lay.data / "PG_VERSION").exists()
        bindir = find_bindir((lay.data / "PG_VERSION").read_text().strip() if made else None)
        acct = server_account(lay.data)
        st = _state(lay)
        running = made and _running(lay, bindir, acct)
        old_host, old_port = str(st.get("host") or "127.0.0.1"), _port(st)
        want_host = host or old_host
        if running and (want_host != old_host or port not in (None, old_port)):
            raise UserError(f"the database server already runs on {old_host}:{old_port}; "
                            "`sluice dbserver stop` first to change --host or --port")
        if port is not None and not running and not _free(want_host, port):
            raise UserError(f"port {port} on {want_host} is in use; pick another with --port, or leave it out")
        if not made:
            _initdb(lay, bindir, acct)
        elif not lay.passfile.exists():
            raise UserError(f"{lay.passfile} is gone, and with it the server's password; restore it, or move "
                            f"{lay.root} away to start a new, empty server")
        if running and old_port is not None:
            used, message = old_port, "already running"
        else:
            used, message = _pg_start(lay, bindir, acct, want_host, port or old_port, port is not None), "started"
        version = (lay.data / "PG_VERSION").read_text().strip()
        _write(lay.state, json.dumps({"host": want_host, "port": used, "version": version,
                                      "account": acct.pw_name if acct else None}) + "\n", None, 0o644)
        _ensure_database(lay, bindir, want_host, used)
        url = lay.url(want_host, used)
        migrate.create_schema(url)
        out = Status(True, lay.data, want_host, used, version, url=url, message=message)
        if held:
            moved = migrate.migrate(root, url)
            n = ", ".join(f"{v} {k}" for k, v in moved.counts.items() if v)
            out.moved = f"moved {n} from SQLite (kept as {moved.kept_as})"
        elif current != url:
            migrate.set_database_url(root, url)
    return out


def stop(workspace: str | os.PathLike[str] | None) -> Status:
    """Stop the server cleanly (fast mode: sessions are rolled back and closed, then a checkpoint). Safe to
    repeat; sluice.toml keeps naming it, so `start` brings the campaign back as it was."""
    _root, lay = layout(workspace)
    st = _need(lay)
    with _locked(lay):
        bindir = find_bindir((lay.data / "PG_VERSION").read_text().strip())
        acct = server_account(lay.data)
        message = "not running"
        if _running(lay, bindir, acct):
            proc = _run([str(bindir / "pg_ctl"), "-D", str(lay.data), "-m", "fast", "-w", "-t", "120", "stop"],
                        acct, lay.root)
            if proc.returncode != 0:
                raise Fault(f"pg_ctl stop failed: {_last_error(proc.stderr)}; see {lay.log}")
            message = "stopped"
    return Status(False, lay.data, str(st.get("host", "")), _port(st), str(st.get("version", "")),
                  message=message)


def status(workspace: str | os.PathLike[str] | None) -> Status:
    """Running or not, where, and the size of its data."""
    _root, lay = layout(workspace)
    st = _need(lay)
    version = (lay.data / "PG_VERSION").read_text().strip()
    running = _running(lay, find_bindir(version), server_account(lay.data))
    size = sum(f.stat().st_size for f in lay.data.rglob("*") if f.is_file())
    host = str(st.get("host", "127.0.0.1"))
    port = _port(st)
    return Status(running, lay.data, host, port, version, size, lay.url(host, port or 0))


def _port(st: dict[str, object]) -> int | None:
    return int(str(st["port"])) if st.get("port") else None


def _need(lay: Layout) -> dict[str, object]:
    """The server's recorded state; a UserError for a workspace without a server."""
    if not (lay.data / "PG_VERSION").exists():
        raise UserError(f"no database server in this workspace ({lay.root}); start one with `sluice dbserver start`")
    return _state(lay)
