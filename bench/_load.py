"""The load loop and server handling shared by the transport benchmarks (bench_grpc, bench_http)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent

Drive = Callable[[str, str], Awaitable[float]]
"""``drive(address, token)``: load one server, return its rate (token ``-``: none)."""


async def rate(
    call: Callable[[], Awaitable[None]], count: int, concurrency: int, budget: float = 30.0
) -> float:
    """Calls per second of ``call`` with ``concurrency`` in flight, after 200 warm-up calls."""
    for _ in range(200):
        await call()
    done = 0
    deadline = time.perf_counter() + budget

    async def caller(share: int) -> None:
        nonlocal done
        for _ in range(share):
            if time.perf_counter() > deadline:
                return
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller(count // concurrency) for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def say_hello_driver(calls: int, concurrency: int) -> Drive:
    """A ``drive`` calling samples/hello's SayHello ``calls`` times, ``concurrency`` in flight."""
    hello = str(HERE.parent / "samples" / "hello")
    if hello not in sys.path:
        sys.path.insert(0, hello)

    async def drive(target: str, token: str) -> float:
        import grpc.aio
        from gen import hello_pb2, hello_pb2_grpc

        metadata = (("authorization", f"Bearer {token}"),) if token != "-" else None
        async with grpc.aio.insecure_channel(target) as channel:
            stub = hello_pb2_grpc.GreeterStub(channel)
            request = hello_pb2.HelloRequest(name="bench")

            async def call() -> None:
                await stub.SayHello(request, metadata=metadata)

            return await rate(call, calls, concurrency)

    return drive


def against(kind: str, drive: Drive) -> float:
    """Start server ``kind`` (see ``_serve.py``) in its own process, drive it, stop it."""
    command = [sys.executable, str(HERE / "_serve.py"), kind]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        address, token = process.stdout.readline().split()
        return asyncio.run(drive(address, token))
    finally:
        process.stdin.close()
        process.wait(30)
        process.stdout.close()


def compare(raw: str, ours: str, drive: Drive, rounds: int) -> tuple[float, float]:
    """Best rate of each server over alternating rounds: ``(ours, raw)``."""
    best_raw = best_ours = 0.0
    for _ in range(rounds):
        best_raw = max(best_raw, against(raw, drive))
        best_ours = max(best_ours, against(ours, drive))
    return best_ours, best_raw
