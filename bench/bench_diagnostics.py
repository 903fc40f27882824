"""What metrics and tracing cost: unary gRPC calls/s with and without them, against raw grpc.aio.

    python bench/bench_diagnostics.py [--calls N] [--concurrency C] [--rounds R]

Three servers, each in its own process, the same handler (samples/hello's
Greeter.SayHello) and the same client (grpc.aio, C calls in flight):

- raw grpc.aio;
- an msuite node with JWT + ACL (as in bench_grpc.py);
- the same node with ``diagnostics.metrics: {latency: true}`` and
  ``diagnostics.tracing`` at sample ratio 1.0: every call is counted, timed
  into a histogram and traced, and every span is encoded and sent over UDP to
  a loopback socket.

Ratios are against raw; the cost of diagnostics is the ratio of the last two.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _load import against, rate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samples" / "hello"))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    args = parser.parse_args()

    async def drive(target: str, token: str) -> float:
        import grpc.aio
        from gen import hello_pb2, hello_pb2_grpc

        metadata = (("authorization", f"Bearer {token}"),) if token != "-" else None
        async with grpc.aio.insecure_channel(target) as channel:
            stub = hello_pb2_grpc.GreeterStub(channel)
            request = hello_pb2.HelloRequest(name="bench")

            async def call() -> None:
                await stub.SayHello(request, metadata=metadata)

            return await rate(call, args.calls, args.concurrency)

    kinds = ("grpc-raw", "grpc-msuite", "grpc-msuite-diag")
    best = dict.fromkeys(kinds, 0.0)
    for _ in range(args.rounds):
        for kind in kinds:
            best[kind] = max(best[kind], against(kind, drive))
    raw, plain, diag = best["grpc-raw"], best["grpc-msuite"], best["grpc-msuite-diag"]
    print(f"unary SayHello, {args.calls} calls, {args.concurrency} in flight:")
    print(f"  raw grpc.aio                          {raw:8,.0f}/s")
    print(f"  msuite (JWT + ACL)                    {plain:8,.0f}/s   {plain / raw:.2f}x raw")
    print(
        f"  msuite + metrics(latency) + tracing   {diag:8,.0f}/s   {diag / raw:.2f}x raw"
        f"   ({diag / plain:.2f}x without diagnostics)"
    )


if __name__ == "__main__":
    main()
