"""Lock round trips: msuite's Redis locker against redis-py's own lock, same server, one run.

    python bench/bench_locks.py [--rounds N]

Each round acquires and releases one key. Starts its own redis-server on a free
loopback port. Ratio = msuite round trips per second / redis-py's.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis.asyncio as aioredis

from msuite.runtime.locks.redis import RedisLocker


def start_redis(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return process, f"redis://127.0.0.1:{port}/0"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_redis(folder)
        try:
            locker = RedisLocker(url, ttl=8)
            client = aioredis.Redis.from_url(url)
            for _ in range(50):  # warm up both
                await (await locker.try_lock("warm", 1)).release()
            start = time.perf_counter()
            for _ in range(args.rounds):
                lease = await locker.try_lock("bench", timeout=1)
                await lease.release()
            ours = args.rounds / (time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(args.rounds):
                lock = client.lock("bench-raw", timeout=8)
                await lock.acquire(blocking_timeout=1)
                await lock.release()
            raw = args.rounds / (time.perf_counter() - start)
            print(
                f"acquire+release: msuite {ours:,.0f}/s   redis-py lock {raw:,.0f}/s   "
                f"ratio {ours / raw:.2f}x"
            )
            await locker.close()
            await client.aclose()
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    asyncio.run(main())
