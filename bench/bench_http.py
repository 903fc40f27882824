"""HTTP requests per second: a hello route through an msuite node against raw aiohttp.

    python bench/bench_http.py [--requests N] [--concurrency C] [--rounds R] [--no-tls]

Each server runs in its own process with the same handler; the same aiohttp
client (C requests in flight on a keep-alive pool) drives both from this
process. msuite's requests pass its whole pipeline (access log, recovery,
CORS, a bearer token verified and checked against an ACL entry for /hello).
Ratio = msuite requests/s / raw requests/s; target >= 0.80.

Then the same over HTTPS (unless ``--no-tls``): both servers serve one
certificate for 127.0.0.1 (made with trustme), the client trusts its CA;
msuite's listener takes it from ``http.tls``. Target >= 0.9x.
"""

from __future__ import annotations

import argparse
import ssl

from _load import compare, rate, tls, tls_ca


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    parser.add_argument("--no-tls", action="store_true", help="skip the HTTPS pair")
    args = parser.parse_args()

    async def drive(base: str, token: str) -> float:
        import aiohttp

        headers = {"Authorization": f"Bearer {token}"} if token != "-" else {}
        ca = tls_ca()
        context = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
        connector = aiohttp.TCPConnector(limit=args.concurrency, ssl=context if context is not None else True)
        async with aiohttp.ClientSession(base_url=base, connector=connector, headers=headers) as http:

            async def call() -> None:
                async with http.get("/hello") as response:
                    assert response.status == 200, response.status
                    await response.read()

            return await rate(call, args.requests, args.concurrency)

    ours, raw = compare("http-raw", "http-msuite", drive, args.rounds)
    print(
        f"GET /hello, {args.requests} requests, {args.concurrency} in flight: msuite (JWT + ACL) "
        f"{ours:,.0f}/s   raw aiohttp {raw:,.0f}/s   ratio {ours / raw:.2f}x"
    )
    if not args.no_tls:
        with tls():
            ours, raw = compare("http-raw", "http-msuite", drive, args.rounds)
        print(
            f"GET /hello over TLS, {args.requests} requests, {args.concurrency} in flight: "
            f"msuite (JWT + ACL) "
            f"{ours:,.0f}/s   raw aiohttp {raw:,.0f}/s   ratio {ours / raw:.2f}x"
        )


if __name__ == "__main__":
    main()
