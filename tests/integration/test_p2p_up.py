"""Two ``msuite up`` processes with p2p find each other by service name and call each other over libp2p."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import sys
import time
from pathlib import Path

from tests.integration.test_up import Up, _forget_gen

PAIR = Path(__file__).parent / "pair"

MANIFEST = """\
name: {name}
services:
  {service}:
    proto: protos/pair.proto
    impl: impl:{impl}
grpc:
  unix: {{path: {socket}}}
  p2p: true
p2p:
  port: 0
  bootstrap: [{bootstrap}]
discovery:
  static: {{{static}}}
shutdown: {{grace: 3s}}
"""


def socket_path() -> str:
    return f"/tmp/msuite-pair-{os.getpid()}-{time.monotonic_ns()}.sock"


def project(
    root: Path, name: str, service: str, impl: str, socket: str, *, bootstrap: str = "", static: str = ""
) -> Path:
    folder = root / name
    shutil.copytree(PAIR, folder)
    text = MANIFEST.format(
        name=name, service=service, impl=impl, socket=socket, bootstrap=bootstrap, static=static
    )
    (folder / "msuite.yaml").write_text(text)
    return folder


def test_two_up_processes_call_each_other_over_libp2p(tmp_path: Path) -> None:
    """go-msuite's two-clients case too: alpha reaches beta's service through a static Unix
    address, beta reaches alpha's by name over libp2p; both calls cross processes."""
    alpha_socket, beta_socket = socket_path(), socket_path()
    sockets = [alpha_socket, beta_socket]
    static = f"pair.v1.Pong: 'unix:{beta_socket}'"
    alpha_dir = project(tmp_path, "alpha", "pair.v1.Ping", "Ping", alpha_socket, static=static)
    alpha = Up(alpha_dir)
    beta = None
    try:
        listeners = alpha.wait_ready(2, timeout=60)  # grpc.unix, p2p
        beta_dir = project(tmp_path, "beta", "pair.v1.Pong", "Pong", beta_socket, bootstrap=listeners["p2p"])
        beta = Up(beta_dir)
        beta.wait_ready(2, timeout=60)

        sys.path.insert(0, str(alpha_dir))
        try:
            _forget_gen()
            pair_pb2 = importlib.import_module("gen.pair_pb2")
            pair_pb2_grpc = importlib.import_module("gen.pair_pb2_grpc")
        finally:
            sys.path.remove(str(alpha_dir))

        async def ask() -> tuple[str, str]:
            import grpc.aio

            async with (
                grpc.aio.insecure_channel(f"unix:{alpha_socket}") as to_alpha,
                grpc.aio.insecure_channel(f"unix:{beta_socket}") as to_beta,
            ):
                from_alpha = await pair_pb2_grpc.PingStub(to_alpha).Ask(pair_pb2.Msg(), timeout=30)
                from_beta = await pair_pb2_grpc.PongStub(to_beta).Ask(pair_pb2.Msg(), timeout=30)
                return from_alpha.text, from_beta.text

        assert asyncio.run(ask()) == (
            "pong from beta to alpha via static unix",
            "ping from alpha to beta via p2p",
        )
        assert beta.stop() == 0
        assert alpha.stop() == 0
    finally:
        for up in (alpha, beta):
            if up is not None:
                up.kill()
        _forget_gen()
        for socket in sockets:
            Path(socket).unlink(missing_ok=True)


def test_a_peer_meeting_a_starting_node_never_sees_a_service_it_cannot_call(tmp_path: Path) -> None:
    """alpha's p2p host meets the observer while alpha's gRPC server is still being built (its
    impl takes 2 s to construct): alpha announces pair.v1.Ping only once the server is bound, so
    the first call the observer makes on seeing it is answered."""
    from msuite.codegen import generate
    from msuite.runtime.node import Node
    from msuite.spec import P2P, Manifest, load_manifest

    alpha_socket = socket_path()
    folder = project(tmp_path, "alpha", "pair.v1.Ping", "Ping", alpha_socket)
    manifest_text = (folder / "msuite.yaml").read_text()
    assert "bootstrap: []" in manifest_text
    generate(load_manifest(folder / "msuite.yaml"))
    sys.path.insert(0, str(folder))
    try:
        _forget_gen()
        pair_pb2 = importlib.import_module("gen.pair_pb2")
        pair_pb2_grpc = importlib.import_module("gen.pair_pb2_grpc")
    finally:
        sys.path.remove(str(folder))

    async def observe() -> tuple[str, float]:
        observer = Node(Manifest(name="observer", repo=str(tmp_path / "observer"), p2p=P2P(port=0)))
        async with observer:
            (folder / "msuite.yaml").write_text(
                manifest_text.replace("bootstrap: []", f"bootstrap: [{observer.p2p.addrs[0]}]")
            )
            alpha = await asyncio.to_thread(Up, folder)
            try:
                loop = asyncio.get_running_loop()
                began = loop.time()
                while not observer.p2p.providers("pair.v1.Ping"):
                    assert loop.time() - began < 60, "alpha never announced pair.v1.Ping"
                    await asyncio.sleep(0.005)
                seen_after = loop.time() - began
                stub = pair_pb2_grpc.PingStub(observer.grpc.client("pair.v1.Ping"))
                reply = await stub.Call(pair_pb2.Msg(text="observer"), timeout=1.0)
                assert await asyncio.to_thread(alpha.stop) == 0
                return reply.text, seen_after
            finally:
                await asyncio.to_thread(alpha.kill)

    env = os.environ.copy()
    os.environ["PAIR_SLOW_START"] = "2"
    try:
        text, seen_after = asyncio.run(observe())
    finally:
        os.environ.clear()
        os.environ.update(env)
        _forget_gen()
        Path(alpha_socket).unlink(missing_ok=True)
    assert text == "ping from alpha to observer"
    assert seen_after >= 2.0  # the service appeared only after the slow constructor
