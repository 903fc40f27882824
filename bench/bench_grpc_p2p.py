"""Unary gRPC latency over libp2p against the same call over the server's Unix socket (target: under 3x).

    python bench/bench_grpc_p2p.py [--calls N]

A server process runs samples/hello's node with ``grpc.p2p: true`` and its
Unix socket; a client process runs a p2p-only node bootstrapped to it and
calls SayHello, one call at a time, through ``node.grpc.client(...)`` (found
over libp2p by service name: one HTTP/2 connection piped through one libp2p
stream) and through a plain channel to the server's Unix socket, in 20
alternating blocks so both paths see the same machine state. Reports the
median and p99 latency of each and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "samples" / "hello"


def serve(folder: str) -> None:
    from msuite.runtime.node import Node
    from msuite.runtime.testing import prepare
    from msuite.spec import P2P, load_manifest

    async def main() -> None:
        manifest = prepare(load_manifest(HELLO / "msuite.yaml"), Path(folder))
        assert manifest.grpc is not None
        manifest = manifest.model_copy(
            update={
                "grpc": manifest.grpc.model_copy(update={"p2p": True, "tcp": None}),
                "http": None,
                "p2p": P2P(port=0),
            }
        )
        async with Node(manifest) as node:
            print(json.dumps({"p2p": node.p2p.addrs[0], "unix": node.grpc.server.local_target}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


def measure(p2p: str, unix: str, calls: int) -> dict[str, list[float]]:
    import grpc.aio

    sys.path.insert(0, str(HELLO))
    from gen import hello_pb2, hello_pb2_grpc

    from msuite.runtime.node import Node
    from msuite.spec import Manifest

    async def main() -> dict[str, list[float]]:
        settings = {"name": "caller", "repo": ":memory:", "p2p": {"port": 0, "bootstrap": [p2p]}}
        async with Node(Manifest.model_validate(settings)) as node:
            await node.p2p.find_service("hello.v1.Greeter", timeout=10)
            request = hello_pb2.HelloRequest(name="bench")
            async with grpc.aio.insecure_channel(unix) as direct:
                stubs = {
                    "p2p": hello_pb2_grpc.GreeterStub(node.grpc.client("hello.v1.Greeter")),
                    "unix": hello_pb2_grpc.GreeterStub(direct),
                }
                for stub in stubs.values():
                    for _ in range(100):
                        await stub.SayHello(request)
                # interleaved blocks, so both paths see the same machine state (CPU placement and
                # frequency, gRPC's thread pools) instead of one path measured cold and one warm
                found: dict[str, list[float]] = {label: [] for label in stubs}
                block = max(calls // 20, 1)
                for _ in range(max(calls // block, 1)):
                    for label, stub in stubs.items():
                        times = found[label]
                        for _ in range(block):
                            began = time.perf_counter()
                            await stub.SayHello(request)
                            times.append(time.perf_counter() - began)
            return found

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with tempfile.TemporaryDirectory(prefix="msuite-bench-") as folder:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", folder],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdin is not None and server.stdout is not None
        try:
            addresses = json.loads(server.stdout.readline())
            times = measure(addresses["p2p"], addresses["unix"], args.calls)
        finally:
            server.stdin.close()
            server.wait(30)
            server.stdout.close()
    medians = {label: statistics.median(found) * 1000 for label, found in times.items()}
    p99 = {label: sorted(found)[int(len(found) * 0.99)] * 1000 for label, found in times.items()}
    print(f"unary SayHello, {args.calls} calls one at a time:")
    for label in ("p2p", "unix"):
        print(f"  over {label:5} median {medians[label]:.2f} ms   p99 {p99[label]:.2f} ms")
    print(f"  ratio p2p / unix: {medians['p2p'] / medians['unix']:.2f}x")


if __name__ == "__main__":
    main()
