"""Request/response round trips per second over libp2p: node.protocols (through the bridge) vs pure trio.

    python bench/bench_p2p.py [--calls N] [--concurrency C] [--size BYTES]

A server and a client, each in its own process, on 127.0.0.1, with the same
py-libp2p configuration (TCP, Noise, yamux), the same framing, one stream
per request and an echo handler:

- **pure trio**: a py-libp2p host under ``trio.run`` on each side, the
  handler in trio;
- **msuite**: a node on each side, ``await client.protocols.send(...)`` from
  asyncio, the handler a coroutine on the server's asyncio loop; each request
  crosses the bridge four times (asyncio -> trio and back on the client,
  trio -> asyncio and back for the server's handler).

(Hosts in one process but different threads are twice as slow either way:
their I/O hands the GIL back and forth, which says nothing about the bridge.)

Reported for 1 call at a time (latency) and C in flight (throughput); the
ratio is msuite / pure trio (target: at least 0.7x).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

PROTOCOL = "/bench/echo/1.0.0"


def serve_trio() -> None:
    """The pure-trio echo server: prints its multiaddr, serves until stdin closes."""
    import multiaddr
    import trio
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol

    from msuite.runtime.p2p.compat import route_logs as _route_libp2p_logs
    from msuite.runtime.p2p.framing import FrameReader, encode_frame
    from msuite.runtime.p2p.host import build_host
    from msuite.runtime.p2p.protocols import stream_reader

    _route_libp2p_logs()

    async def main() -> None:
        host = build_host(create_new_key_pair())

        async def handle(stream: Any) -> None:
            request = await FrameReader(stream_reader(stream)).read_frame(1 << 24)
            await stream.write(encode_frame(b"\x00" + (request or b"")))
            await stream.close()

        async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            host.set_stream_handler(TProtocol(PROTOCOL), handle)
            print(host.get_addrs()[0], flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
            await host.close()

    trio.run(main)


def serve_msuite() -> None:
    """The msuite echo server: a node whose handler runs on its asyncio loop."""
    from msuite.runtime.node import Node
    from msuite.spec import Manifest

    async def main() -> None:
        async def echo(peer: str, request: bytes) -> bytes:
            return request

        node = Node(Manifest.model_validate({"name": "server", "repo": ":memory:", "p2p": {"port": 0}}))
        node.protocols.register(PROTOCOL, echo)
        async with node:
            print(node.p2p.addrs[0], flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


def measure_trio(address: str, calls: int, concurrency: int, size: int) -> dict[str, float]:
    import multiaddr
    import trio
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from msuite.runtime.p2p.compat import route_logs as _route_libp2p_logs
    from msuite.runtime.p2p.framing import FrameReader, encode_frame
    from msuite.runtime.p2p.host import build_host
    from msuite.runtime.p2p.protocols import stream_reader

    _route_libp2p_logs()
    result: dict[str, float] = {}

    async def main() -> None:
        client = build_host(create_new_key_pair())
        async with client.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
            await client.connect(info)
            payload = b"x" * size

            async def call() -> None:
                stream = await client.new_stream(info.peer_id, [TProtocol(PROTOCOL)])
                await stream.write(encode_frame(payload))
                answer = await FrameReader(stream_reader(stream)).read_frame(1 << 24)
                await stream.close()
                assert answer is not None and answer[1:] == payload

            for _ in range(50):
                await call()
            began = time.perf_counter()
            for _ in range(calls):
                await call()
            result["sequential"] = calls / (time.perf_counter() - began)

            async def worker(count: int) -> None:
                for _ in range(count):
                    await call()

            began = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker, calls // concurrency)
            result["concurrent"] = (calls // concurrency * concurrency) / (time.perf_counter() - began)
            await client.close()

    trio.run(main)
    return result


def measure_msuite(address: str, calls: int, concurrency: int, size: int) -> dict[str, float]:
    from msuite.runtime.node import Node
    from msuite.spec import Manifest

    async def main() -> dict[str, float]:
        settings = {"name": "client", "repo": ":memory:", "p2p": {"port": 0, "bootstrap": [address]}}
        async with Node(Manifest.model_validate(settings)) as node:
            while not node.p2p.peers():
                await asyncio.sleep(0.01)
            payload = b"x" * size
            target = node.p2p.peers()[0]["id"]

            async def call() -> None:
                answer = await node.protocols.send(target, PROTOCOL, payload)
                assert answer == payload

            for _ in range(50):
                await call()
            found: dict[str, float] = {}
            began = time.perf_counter()
            for _ in range(calls):
                await call()
            found["sequential"] = calls / (time.perf_counter() - began)

            async def worker(count: int) -> None:
                for _ in range(count):
                    await call()

            began = time.perf_counter()
            await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
            found["concurrent"] = (calls // concurrency * concurrency) / (time.perf_counter() - began)
            return found

    return asyncio.run(main())


def child(mode: str, calls: int, concurrency: int, size: int) -> dict[str, float]:
    """Start mode's server in one process, load it from another; both exit after."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--mode", f"serve-{mode}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        address = server.stdout.readline().strip()
        command = [sys.executable, __file__, "--mode", mode, "--address", address, "--calls", str(calls)]
        command += ["--concurrency", str(concurrency), "--size", str(size)]
        out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=600).stdout
    finally:
        server.stdin.close()
        server.wait(30)
        server.stdout.close()
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "serve-trio":
        return serve_trio()
    if args.mode == "serve-msuite":
        return serve_msuite()
    if args.mode in ("trio", "msuite"):
        measure = measure_trio if args.mode == "trio" else measure_msuite
        print(json.dumps(measure(args.address, args.calls, args.concurrency, args.size)))
        return None
    trio_rates = child("trio", args.calls, args.concurrency, args.size)
    ours = child("msuite", args.calls, args.concurrency, args.size)
    print(f"{args.size}-byte request/response, one stream each, {args.calls} calls:")
    for kind, label in (("sequential", "1 at a time"), ("concurrent", f"{args.concurrency} in flight")):
        ratio = ours[kind] / trio_rates[kind]
        print(
            f"  {label:12} msuite {ours[kind]:7,.0f}/s ({1000 / ours[kind]:.2f} ms)   "
            f"pure trio {trio_rates[kind]:7,.0f}/s ({1000 / trio_rates[kind]:.2f} ms)   ratio {ratio:.2f}x"
        )


if __name__ == "__main__":
    main()
