"""Servers for the transport benchmarks, each run in its own process.

    python bench/_serve.py grpc-raw|grpc-msuite|grpc-msuite-diag|http-raw|http-msuite

Prints one line, ``<address> <token>``, once serving, then serves until
stdin closes. The handler is the same in both kinds of each pair.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "samples" / "hello"
SECRET = "a-benchmark-secret-of-at-least-32-bytes!"


class _Config:
    def __init__(self) -> None:
        self.config = {"greeting": "Hello"}


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def grpc_raw() -> None:
    import grpc.aio

    sys.path.insert(0, str(HELLO))
    from gen import hello_pb2_grpc
    from hello_service import Greeter

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    hello_pb2_grpc.add_GreeterServicer_to_server(Greeter(_Config()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"127.0.0.1:{port} -", flush=True)
    await _until_stdin_closes()
    await server.stop(None)


def _manifest(folder: Path, *, grpc: bool, http: bool, diagnostics: dict[str, Any] | None = None) -> Any:
    from msuite.runtime.testing import prepare
    from msuite.spec import Auth, Diagnostics, load_manifest

    manifest = load_manifest(HELLO / "msuite.yaml")
    auth = {
        "jwt": {"secret": SECRET},
        "acl": {"/hello.v1.Greeter/SayHello": "authenticated_read", "/hello": "authenticated_read"},
    }
    update: dict[str, Any] = {"auth": Auth.model_validate(auth)}
    prepared = prepare(manifest, folder)
    assert prepared.grpc is not None and prepared.http is not None
    update["grpc"] = prepared.grpc.model_copy(update={"unix": None}) if grpc else prepared.grpc
    update["http"] = prepared.http.model_copy(update={"gateway": False}) if http else None
    if diagnostics is not None:
        update["diagnostics"] = Diagnostics.model_validate(diagnostics)
    return prepared.model_copy(update=update)


async def grpc_msuite() -> None:
    from msuite.runtime.node import Node

    with tempfile.TemporaryDirectory(prefix="msuite-bench-") as folder:
        node = Node(_manifest(Path(folder), grpc=True, http=False))
        async with node:
            token = node.auth.jwt.issue("bench", "authenticated_read")
            print(f"{node.grpc.server.listeners[0].target} {token}", flush=True)
            await _until_stdin_closes()


async def grpc_msuite_diag() -> None:
    """grpc-msuite plus metrics (latency histogram) and tracing of every call to a UDP sink."""
    import socket

    from msuite.runtime.node import Node

    with (
        tempfile.TemporaryDirectory(prefix="msuite-bench-") as folder,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
    ):
        sink.bind(("127.0.0.1", 0))  # spans are encoded and sent for real; nobody reads them
        diagnostics = {
            "metrics": {"latency": True},
            "tracing": {
                "jaeger": f"127.0.0.1:{sink.getsockname()[1]}",
                "sample_ratio": float(os.environ.get("MSUITE_BENCH_SAMPLE_RATIO", "1.0")),
            },
        }
        only = os.environ.get("MSUITE_BENCH_DIAGNOSTICS")  # "metrics" or "tracing": that one alone
        if only:
            diagnostics = {only: diagnostics[only]}
        node = Node(_manifest(Path(folder), grpc=True, http=True, diagnostics=diagnostics))
        async with node:
            token = node.auth.jwt.issue("bench", "authenticated_read")
            print(f"{node.grpc.server.listeners[0].target} {token}", flush=True)
            await _until_stdin_closes()


async def _hello(request: Any) -> Any:
    from aiohttp import web

    return web.Response(text="Hello, world!")


async def http_raw() -> None:
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/hello", _hello)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]} -", flush=True)
    await _until_stdin_closes()
    await runner.cleanup()


async def http_msuite() -> None:
    from msuite.runtime.node import Node

    with tempfile.TemporaryDirectory(prefix="msuite-bench-") as folder:
        node = Node(_manifest(Path(folder), grpc=True, http=True))
        node.http.router.add_get("/hello", _hello)
        async with node:
            token = node.auth.jwt.issue("bench", "authenticated_read")
            print(f"{node.http.address} {token}", flush=True)
            await _until_stdin_closes()


SERVERS = {
    "grpc-raw": grpc_raw,
    "grpc-msuite": grpc_msuite,
    "grpc-msuite-diag": grpc_msuite_diag,
    "http-raw": http_raw,
    "http-msuite": http_msuite,
}

if __name__ == "__main__":
    asyncio.run(SERVERS[sys.argv[1]]())
