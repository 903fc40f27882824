"""``msuite up`` from process start to ready, for the scaffold node, without and with ``p2p:``.

    python bench/bench_up.py [--runs N]

Runs ``msuite init`` once into a temporary folder (ports set to 0, code
generated), then N times each: start ``python -m msuite up``, wait for its
last readiness line, stop it with SIGTERM. Reports the wall time from
spawning the process to that line (median and worst) for the scaffold as it
is (target: under 1 s; libp2p is not imported) and with ``p2p: {port: 0}``
added (target: under 1.5 s), beside the time a bare ``python -c "import
grpc, aiohttp"`` takes to start and exit, the floor no Python gRPC + HTTP
server can go under, and the same with ``libp2p`` imported too: the floor of
a node with ``p2p:`` (py-libp2p's package imports nearly all of itself,
QUIC, relay and AutoTLS included, whatever the host uses).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def ready_time(folder: Path, manifest: str = "msuite.yaml", listeners: int = 3) -> float:
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "msuite", "up", "-f", manifest],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        for _ in range(listeners):  # grpc.tcp, grpc.unix, http (and p2p)
            line = process.stdout.readline()
            if not line.startswith(b"ready "):
                raise SystemExit(f"msuite up failed: {line!r}")
        return time.perf_counter() - start
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        process.stdout.close()


def floor(modules: str = "grpc.aio, aiohttp.web") -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {modules}"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msuite-up-") as tmp:
        folder = Path(tmp) / "hello"
        subprocess.run([sys.executable, "-m", "msuite", "init", str(folder)], check=True, capture_output=True)
        manifest = folder / "msuite.yaml"
        text = manifest.read_text().replace("port: 50051", "port: 0").replace("port: 8080", "port: 0")
        manifest.write_text(text.replace("path: hello.sock", f"path: {tmp}/h.sock"))
        generate = [sys.executable, "-m", "msuite", "generate"]
        subprocess.run(generate, cwd=folder, check=True, capture_output=True)
        (folder / "p2p.yaml").write_text(manifest.read_text() + "p2p: {port: 0}\n")
        times = [ready_time(folder) for _ in range(args.runs)]
        with_p2p = [ready_time(folder, "p2p.yaml", listeners=4) for _ in range(args.runs)]
        bare = min(floor() for _ in range(3))
        bare_p2p = min(floor("grpc.aio, aiohttp.web, libp2p") for _ in range(3))
    for label, found in (("scaffold", times), ("scaffold + p2p", with_p2p)):
        print(
            f"msuite up ({label}) to ready: median {statistics.median(found) * 1000:.0f} ms, "
            f"worst {max(found) * 1000:.0f} ms over {args.runs} runs"
        )
    print(f"python -c 'import grpc.aio, aiohttp.web': {bare * 1000:.0f} ms")
    print(f"python -c 'import grpc.aio, aiohttp.web, libp2p' (the floor with p2p): {bare_p2p * 1000:.0f} ms")


if __name__ == "__main__":
    main()
