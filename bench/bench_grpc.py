"""Unary gRPC calls per second: an msuite node (JWT + ACL on) against a raw grpc.aio server.

    python bench/bench_grpc.py [--calls N] [--concurrency C]

Each server runs in its own process with the same handler (samples/hello's
Greeter.SayHello); the same client (grpc.aio, C calls in flight) drives both
from this process. msuite's calls carry a bearer token that is verified
(cached after the first call) and checked against an ACL entry, and pass its
recovery interceptor. Ratio = msuite calls/s / raw calls/s; target >= 0.85.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "samples" / "hello"))


def serve(kind: str) -> tuple[subprocess.Popen[str], str, str]:
    command = [sys.executable, str(HERE / "_serve.py"), kind]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    address, token = process.stdout.readline().split()
    return process, address, token


async def drive(target: str, token: str, calls: int, concurrency: int, budget: float) -> float:
    import grpc.aio
    from gen import hello_pb2, hello_pb2_grpc

    metadata = (("authorization", f"Bearer {token}"),) if token != "-" else None
    async with grpc.aio.insecure_channel(target) as channel:
        stub = hello_pb2_grpc.GreeterStub(channel)
        request = hello_pb2.HelloRequest(name="bench")
        for _ in range(200):  # warm up
            await stub.SayHello(request, metadata=metadata)
        done = 0
        deadline = time.perf_counter() + budget

        async def caller(share: int) -> None:
            nonlocal done
            for _ in range(share):
                if time.perf_counter() > deadline:
                    return
                await stub.SayHello(request, metadata=metadata)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(caller(calls // concurrency) for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def measure(kind: str, calls: int, concurrency: int, budget: float) -> float:
    process, address, token = serve(kind)
    try:
        return asyncio.run(drive(address, token, calls, concurrency, budget))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    args = parser.parse_args()
    budget = 30.0
    raw = ours = 0.0
    for _ in range(args.rounds):
        raw = max(raw, measure("grpc-raw", args.calls, args.concurrency, budget))
        ours = max(ours, measure("grpc-msuite", args.calls, args.concurrency, budget))
    print(
        f"unary SayHello, {args.calls} calls, {args.concurrency} in flight: msuite (JWT + ACL) "
        f"{ours:,.0f}/s   raw grpc.aio {raw:,.0f}/s   ratio {ours / raw:.2f}x"
    )


if __name__ == "__main__":
    main()
