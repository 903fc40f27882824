"""Call the hello node over gRPC (TCP and Unix socket) and HTTP while `msuite up` serves it.

Usage: python client.py [NAME]
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

import grpc.aio

from msuite.spec import load_manifest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Written by `msuite generate` (or `msuite up`) from protos/hello.proto.
from gen import hello_pb2, hello_pb2_grpc  # noqa: E402


async def main(name: str) -> None:
    manifest = load_manifest(HERE / "msuite.yaml")
    targets = []
    if manifest.grpc and manifest.grpc.tcp:
        targets.append(f"{manifest.grpc.tcp.host}:{manifest.grpc.tcp.port}")
    if manifest.grpc and manifest.grpc.unix:
        targets.append(f"unix:{manifest.resolve(manifest.grpc.unix.path)}")
    for target in targets:
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await hello_pb2_grpc.GreeterStub(channel).SayHello(hello_pb2.HelloRequest(name=name))
            print(f"gRPC {target}: {reply.message}")
    if manifest.http:
        url = f"http://{manifest.http.host}:{manifest.http.port}/v1/hello/{name}"
        with urllib.request.urlopen(url, timeout=5) as response:
            print(f"HTTP {url}: {json.loads(response.read())['message']}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "world"))
