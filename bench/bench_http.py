"""HTTP requests per second: a hello route through an msuite node against raw aiohttp.

    python bench/bench_http.py [--requests N] [--concurrency C]

Each server runs in its own process with the same handler; the same aiohttp
client (C requests in flight, one keep-alive connection pool) drives both from
this process. msuite's requests pass its whole pipeline (access log, recovery,
CORS, a bearer token verified and checked against an ACL entry for /hello).
Ratio = msuite requests/s / raw requests/s; target >= 0.80.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def serve(kind: str) -> tuple[subprocess.Popen[str], str, str]:
    command = [sys.executable, str(HERE / "_serve.py"), kind]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    address, token = process.stdout.readline().split()
    return process, address, token


async def drive(base: str, token: str, requests: int, concurrency: int, budget: float) -> float:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token != "-" else {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=base, connector=connector, headers=headers) as http:
        for _ in range(200):  # warm up
            async with http.get("/hello") as response:
                assert response.status == 200, response.status
                await response.read()
        done = 0
        deadline = time.perf_counter() + budget

        async def caller(share: int) -> None:
            nonlocal done
            for _ in range(share):
                if time.perf_counter() > deadline:
                    return
                async with http.get("/hello") as response:
                    await response.read()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(caller(requests // concurrency) for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def measure(kind: str, requests: int, concurrency: int, budget: float) -> float:
    process, address, token = serve(kind)
    try:
        return asyncio.run(drive(address, token, requests, concurrency, budget))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    args = parser.parse_args()
    raw = ours = 0.0
    for _ in range(args.rounds):
        raw = max(raw, measure("http-raw", args.requests, args.concurrency, 30.0))
        ours = max(ours, measure("http-msuite", args.requests, args.concurrency, 30.0))
    print(
        f"GET /hello, {args.requests} requests, {args.concurrency} in flight: msuite (JWT + ACL) "
        f"{ours:,.0f}/s   raw aiohttp {raw:,.0f}/s   ratio {ours / raw:.2f}x"
    )


if __name__ == "__main__":
    main()
