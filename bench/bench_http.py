"""HttpTransfer.copy against curl on one large file served from loopback, in the same run.

A server process (http.server, threaded, sending with sendfile) serves one file (1 GiB by default, in /dev/shm
when it exists, else a temp dir; deleted afterwards). Each round downloads it once with
``HttpTransfer().copy`` and once with ``curl -s -o`` into the same directory (the order alternates per round),
checks the size, deletes the copy. The medians give the throughputs; the last line is their ratio
(sluice / curl: 1.0 is as fast as curl; the target is >= 0.8).

    .venv/bin/python bench/bench_http.py [--size-mib 1024] [--rounds 3] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sluice.transfers.http import HttpTransfer  # noqa: E402

MIB = 1 << 20


def serve(path: str) -> None:
    """Serve ``path`` as /<its name> on 127.0.0.1 (a free port, printed first) until stdin closes."""
    size = os.path.getsize(path)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(path, "rb") as f:
                self.connection.sendfile(f)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(httpd.server_address[1], flush=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    sys.stdin.read()
    httpd.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    curl = shutil.which("curl")
    if curl is None:
        sys.exit("curl not found: apt-get install -y curl")
    work = Path(tempfile.mkdtemp(prefix="sluice_bench_http.", dir=args.dir))
    server = None
    try:
        src = work / "big.bin"
        block = os.urandom(MIB)
        with src.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(block)
        size = src.stat().st_size
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(src)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}/big.bin"
        out = work / "out"
        out.mkdir()

        def ours() -> float:
            t = time.perf_counter()
            HttpTransfer().copy(url, out / "sluice.bin")
            return time.perf_counter() - t

        def theirs() -> float:
            t = time.perf_counter()
            subprocess.run([curl, "-s", "-o", str(out / "curl.bin"), url], check=True)
            return time.perf_counter() - t

        times: dict[str, list[float]] = {"sluice": [], "curl": []}
        for r in range(args.rounds):
            order = [("sluice", ours), ("curl", theirs)]
            for name, run in order if r % 2 == 0 else order[::-1]:
                s = run()
                got = out / f"{name}.bin"
                assert got.stat().st_size == size, f"{name} wrote {got.stat().st_size} of {size} bytes"
                got.unlink()
                times[name].append(s)
                print(f"round {r + 1} {name:6} {s:6.3f} s  {size / s / MIB:8.0f} MiB/s", flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"median {k:6} {v:6.3f} s  {size / v / MIB:8.0f} MiB/s")
        print(f"ratio sluice/curl throughput: {med['curl'] / med['sluice']:.2f} "
              f"({args.size_mib} MiB over loopback, median of {args.rounds})")
    finally:
        if server is not None:
            server.communicate(timeout=10)  # closing its stdin stops it
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
