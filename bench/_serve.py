"""Servers for the transport benchmarks, each run in its own process.

    python bench/_serve.py grpc-raw|grpc-msuite|grpc-msuite-diag|http-raw|http-msuite|otlp-sink

Prints one line, ``<address> <token>``, once serving, then serves until
stdin closes. The handler is the same in both kinds of each pair. With
``MSUITE_BENCH_TLS`` naming a folder holding ``cert.pem`` and ``key.pem``,
the gRPC and HTTP servers, raw and msuite alike, serve TLS with that
certificate. ``otlp-sink`` is an OTLP/HTTP receiver that reads each export and
answers 200 without decoding it.
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


def _tls() -> tuple[Path, Path] | None:
    """``(cert, key)`` when the benchmark runs over TLS."""
    folder = os.environ.get("MSUITE_BENCH_TLS")
    return (Path(folder) / "cert.pem", Path(folder) / "key.pem") if folder else None


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
    tls = _tls()
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        pair = (tls[1].read_bytes(), tls[0].read_bytes())
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([pair]))
    await server.start()
    print(f"127.0.0.1:{port} -", flush=True)
    await _until_stdin_closes()
    await server.stop(None)


def _manifest(folder: Path, *, grpc: bool, http: bool, diagnostics: dict[str, Any] | None = None) -> Any:
    from msuite.runtime.testing import prepare
    from msuite.spec import Auth, Diagnostics, load_manifest
    from msuite.spec.models import ServerTLS

    manifest = load_manifest(HELLO / "msuite.yaml")
    auth = {
        "jwt": {"secret": SECRET},
        "acl": {"/hello.v1.Greeter/SayHello": "authenticated_read", "/hello": "authenticated_read"},
    }
    update: dict[str, Any] = {"auth": Auth.model_validate(auth)}
    prepared = prepare(manifest, folder)
    assert prepared.grpc is not None and prepared.http is not None and prepared.grpc.tcp is not None
    tls = _tls()
    if tls is not None:
        secure = {"tls": ServerTLS(cert=str(tls[0]), key=str(tls[1]))}
        prepared = prepared.model_copy(
            update={
                "grpc": prepared.grpc.model_copy(update={"tcp": prepared.grpc.tcp.model_copy(update=secure)}),
                "http": prepared.http.model_copy(update=secure),
            }
        )
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
    """grpc-msuite plus metrics (latency histogram) and tracing of every call.

    ``MSUITE_BENCH_EXPORTER=jaeger`` (the default) sends spans over UDP to a
    socket nobody reads; ``otlp`` posts them to ``MSUITE_BENCH_OTLP`` (an
    ``otlp-sink``)."""
    import socket

    from msuite.runtime.node import Node

    with (
        tempfile.TemporaryDirectory(prefix="msuite-bench-") as folder,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
    ):
        sink.bind(("127.0.0.1", 0))  # spans are encoded and sent for real; nobody reads them
        tracing: dict[str, Any] = {"sample_ratio": float(os.environ.get("MSUITE_BENCH_SAMPLE_RATIO", "1.0"))}
        if os.environ.get("MSUITE_BENCH_EXPORTER", "jaeger") == "otlp":
            tracing["otlp"] = {"endpoint": os.environ["MSUITE_BENCH_OTLP"]}
        else:
            tracing["jaeger"] = f"127.0.0.1:{sink.getsockname()[1]}"
        diagnostics = {"metrics": {"latency": True}, "tracing": tracing}
        only = os.environ.get("MSUITE_BENCH_DIAGNOSTICS")  # "metrics" or "tracing": that one alone
        if only:
            diagnostics = {only: diagnostics[only]}
        node = Node(_manifest(Path(folder), grpc=True, http=True, diagnostics=diagnostics))
        async with node:
            token = node.auth.jwt.issue("bench", "authenticated_read")
            print(f"{node.grpc.server.listeners[0].target} {token}", flush=True)
            await _until_stdin_closes()
            status = await node.status.report()  # type: ignore[misc]
            spans = status.get("tracing", {}).get("spans")
            if spans is not None and (spans["failed"] or spans["dropped"]):
                print(f"spans not delivered: {spans}", file=sys.stderr, flush=True)


async def otlp_sink() -> None:
    from aiohttp import web

    async def export(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]} -", flush=True)
    await _until_stdin_closes()
    await runner.cleanup()


async def _hello(request: Any) -> Any:
    from aiohttp import web

    return web.Response(text="Hello, world!")


async def http_raw() -> None:
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/hello", _hello)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    tls = _tls()
    context = None
    if tls is not None:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls[0], tls[1])
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    scheme = "https" if tls is not None else "http"
    print(f"{scheme}://127.0.0.1:{runner.addresses[0][1]} -", flush=True)
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
    "otlp-sink": otlp_sink,
}

if __name__ == "__main__":
    asyncio.run(SERVERS[sys.argv[1]]())
