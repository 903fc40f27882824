"""Unary gRPC calls per second: an msuite node (JWT + ACL on) against a raw grpc.aio server.

    python bench/bench_grpc.py [--calls N] [--concurrency C] [--rounds R] [--no-tls]

Each server runs in its own process with the same handler (samples/hello's
Greeter.SayHello); the same client (grpc.aio, C calls in flight) drives both
from this process. msuite's calls carry a bearer token that is verified
(cached after the first call) and checked against an ACL entry, and pass its
recovery interceptor. Ratio = msuite calls/s / raw calls/s; target >= 0.85.

Then the same over TLS (unless ``--no-tls``): both servers serve one
certificate for 127.0.0.1 (made with trustme), the client trusts its CA;
msuite's listener takes it from ``grpc.tcp.tls``. Target >= 0.9x.
"""

from __future__ import annotations

import argparse

from _load import compare, say_hello_driver, tls


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    parser.add_argument("--no-tls", action="store_true", help="skip the TLS pair")
    args = parser.parse_args()

    drive = say_hello_driver(args.calls, args.concurrency)

    ours, raw = compare("grpc-raw", "grpc-msuite", drive, args.rounds)
    print(
        f"unary SayHello, {args.calls} calls, {args.concurrency} in flight: msuite (JWT + ACL) "
        f"{ours:,.0f}/s   raw grpc.aio {raw:,.0f}/s   ratio {ours / raw:.2f}x"
    )
    if not args.no_tls:
        with tls():
            ours, raw = compare("grpc-raw", "grpc-msuite", drive, args.rounds)
        print(
            f"unary SayHello over TLS, {args.calls} calls, {args.concurrency} in flight: msuite (JWT + ACL) "
            f"{ours:,.0f}/s   raw grpc.aio {raw:,.0f}/s   ratio {ours / raw:.2f}x"
        )


if __name__ == "__main__":
    main()
