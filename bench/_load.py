"""The load loop and server handling shared by the transport benchmarks (bench_grpc, bench_http)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent

Drive = Callable[[str, str], Awaitable[float]]
"""``drive(address, token)``: load one server, return its rate (token ``-``: none)."""


@contextlib.contextmanager
def tls() -> Iterator[Path]:
    """Servers started inside serve TLS (``MSUITE_BENCH_TLS``) with a certificate for 127.0.0.1
    from a CA made here (trustme); yields the CA file clients trust."""
    import trustme

    with tempfile.TemporaryDirectory(prefix="msuite-bench-tls-") as folder:
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(os.path.join(folder, "ca.pem"))
        leaf.cert_chain_pems[0].write_to_path(os.path.join(folder, "cert.pem"))
        leaf.private_key_pem.write_to_path(os.path.join(folder, "key.pem"))
        os.environ["MSUITE_BENCH_TLS"] = folder
        try:
            yield Path(folder) / "ca.pem"
        finally:
            del os.environ["MSUITE_BENCH_TLS"]


def tls_ca() -> Path | None:
    """The CA file clients trust while :func:`tls` is on, else None."""
    folder = os.environ.get("MSUITE_BENCH_TLS")
    return Path(folder) / "ca.pem" if folder else None


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
        ca = tls_ca()
        if ca is None:
            channel = grpc.aio.insecure_channel(target)
        else:
            channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca.read_bytes()))
        async with channel:
            stub = hello_pb2_grpc.GreeterStub(channel)
            request = hello_pb2.HelloRequest(name="bench")

            async def call() -> None:
                await stub.SayHello(request, metadata=metadata)

            return await rate(call, calls, concurrency)

    return drive


def against(kind: str, drive: Drive) -> float:
    """Start server ``kind`` (see ``_serve.py``) in its own process, drive it, stop it."""
    with serving(kind) as (address, token):
        return asyncio.run(drive(address, token))


@contextlib.contextmanager
def serving(kind: str) -> Iterator[tuple[str, str]]:
    """Server ``kind`` (see ``_serve.py``) in its own process while inside: ``(address, token)``."""
    command = [sys.executable, str(HERE / "_serve.py"), kind]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        address, token = process.stdout.readline().split()
        yield address, token
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
