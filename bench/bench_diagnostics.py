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
  counted and timed, one trace in a hundred is recorded;
- tracing alone at 1.0, once per exporter: Jaeger (UDP to a socket nobody
  reads) and OpenTelemetry (OTLP/HTTP to a sink process that answers 200).

Ratios are against raw and against the node without diagnostics; for the
tracing rows, the cost per call in microseconds of server time (1/rate minus
1/rate without diagnostics; the server is the bottleneck at C in flight).
"""

from __future__ import annotations

import argparse
import os

from _load import against, say_hello_driver, serving


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    args = parser.parse_args()

    drive = say_hello_driver(args.calls, args.concurrency)

    # (label, server kind, sample ratio of its tracing, exporter, only this diagnostic)
    servers = (
        ("raw grpc.aio", "grpc-raw", "", "", ""),
        ("msuite (JWT + ACL)", "grpc-msuite", "", "", ""),
        ("+ metrics(latency) + tracing 1.0", "grpc-msuite-diag", "1.0", "jaeger", ""),
        ("+ metrics(latency) + tracing 0.01", "grpc-msuite-diag", "0.01", "jaeger", ""),
        ("+ tracing jaeger 1.0", "grpc-msuite-diag", "1.0", "jaeger", "tracing"),
        ("+ tracing otlp 1.0", "grpc-msuite-diag", "1.0", "otlp", "tracing"),
    )
    best = dict.fromkeys([label for label, *_ in servers], 0.0)
    with serving("otlp-sink") as (sink, _):
        os.environ["MSUITE_BENCH_OTLP"] = sink
        for _ in range(args.rounds):
            for label, kind, ratio, exporter, only in servers:
                os.environ["MSUITE_BENCH_SAMPLE_RATIO"] = ratio or "1.0"
                os.environ["MSUITE_BENCH_EXPORTER"] = exporter or "jaeger"
                os.environ["MSUITE_BENCH_DIAGNOSTICS"] = only
                best[label] = max(best[label], against(kind, drive))
    raw, plain = best["raw grpc.aio"], best["msuite (JWT + ACL)"]
    print(f"unary SayHello, {args.calls} calls, {args.concurrency} in flight:")
    for label, value in best.items():
        line = f"  {label:36} {value:8,.0f}/s   {value / raw:.2f}x raw"
        if label.startswith("+"):
            line += f"   {value / plain:.2f}x without diagnostics"
        if label.startswith("+ tracing"):
            line += f"   {(1 / value - 1 / plain) * 1e6:+.0f} us per call"
        print(line)


if __name__ == "__main__":
    main()
