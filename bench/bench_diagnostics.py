"""What metrics and tracing cost: unary gRPC calls/s with and without them, against raw grpc.aio.

    python bench/bench_diagnostics.py [--calls N] [--concurrency C] [--rounds R]

Three servers, each in its own process, the same handler (samples/hello's
Greeter.SayHello) and the same client (grpc.aio, C calls in flight):

- raw grpc.aio;
- an msuite node with JWT + ACL (as in bench_grpc.py);
- the same node with ``diagnostics.metrics: {latency: true}`` and
  ``diagnostics.tracing`` at sample ratio 1.0: every call is counted, timed
  into a histogram and traced, and every span is encoded and sent over UDP to
  a loopback socket (the worst case);
- the same at sample ratio 0.01 (a common production setting): every call is
  counted and timed, one trace in a hundred is recorded.

Ratios are against raw and against the node without diagnostics.
"""

from __future__ import annotations

import argparse
import os

from _load import against, say_hello_driver


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    args = parser.parse_args()

    drive = say_hello_driver(args.calls, args.concurrency)

    # (label, server kind, sample ratio of its tracing)
    servers = (
        ("raw grpc.aio", "grpc-raw", ""),
        ("msuite (JWT + ACL)", "grpc-msuite", ""),
        ("+ metrics(latency) + tracing 1.0", "grpc-msuite-diag", "1.0"),
        ("+ metrics(latency) + tracing 0.01", "grpc-msuite-diag", "0.01"),
    )
    best = dict.fromkeys([label for label, _, _ in servers], 0.0)
    for _ in range(args.rounds):
        for label, kind, ratio in servers:
            os.environ["MSUITE_BENCH_SAMPLE_RATIO"] = ratio or "1.0"
            best[label] = max(best[label], against(kind, drive))
    raw, plain = best["raw grpc.aio"], best["msuite (JWT + ACL)"]
    print(f"unary SayHello, {args.calls} calls, {args.concurrency} in flight:")
    for label, value in best.items():
        line = f"  {label:36} {value:8,.0f}/s   {value / raw:.2f}x raw"
        if label.startswith("+"):
            line += f"   {value / plain:.2f}x without diagnostics"
        print(line)


if __name__ == "__main__":
    main()
