"""Pubsub burst: messages per second from one publisher to two subscribers, and how many arrive.

    python bench/bench_pubsub.py [--messages N] [--size BYTES]

Three nodes in one process (a publisher and two subscribers bootstrapped to
it, GossipSub as msuite configures it). After the mesh forms, the publisher
publishes N messages as fast as ``await publish(...)`` returns; reported:
the publish rate, the time until the publisher has handed every message to
GossipSub (``publish`` returns once its message is queued for the p2p
thread), the time until both subscribers have every message, the delivery
rate, the number lost (py-libp2p's defaults lost a third of a 300-message
burst; msuite's settings must lose none) and the CPU time the process spent
on the burst (all three nodes: one process, so one GIL for the three p2p
threads; in separate processes each node has its own).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from msuite.runtime.node import Node
from msuite.spec import Manifest


def manifest(name: str, bootstrap: list[str] | None = None) -> Manifest:
    return Manifest.model_validate(
        {"name": name, "repo": ":memory:", "p2p": {"port": 0, "bootstrap": bootstrap or []}}
    )


async def run(messages: int, size: int) -> None:
    async with Node(manifest("publisher")) as publisher:
        readers = [Node(manifest(f"r{i}", publisher.p2p.addrs)) for i in range(2)]
        counts = [0, 0]
        try:
            for index, reader in enumerate(readers):
                await reader.start()

                async def count(message: object, index: int = index) -> None:
                    counts[index] += 1

                await reader.p2p.pubsub.subscribe("bench", count)
            while len(publisher.p2p.pubsub.peers("bench")) < 2:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # one heartbeat: the mesh forms
            payload = b"x" * size
            cpu = time.process_time()
            began = time.perf_counter()
            for _ in range(messages):
                await publisher.p2p.pubsub.publish("bench", payload)
            published = time.perf_counter() - began
            handed = None
            deadline = time.perf_counter() + 60
            while min(counts) < messages and time.perf_counter() < deadline:
                if handed is None and not getattr(publisher.p2p.pubsub, "pending", 0):
                    handed = time.perf_counter() - began
                await asyncio.sleep(0.005)
            delivered = time.perf_counter() - began
            cpu = time.process_time() - cpu
        finally:
            for reader in readers:
                await reader.stop()
    print(f"{messages} messages of {size} bytes to 2 subscribers:")
    print(f"  published in {published:.2f} s ({messages / published:,.0f}/s)")
    if handed is not None:
        print(f"  handed to GossipSub in {handed:.2f} s ({messages / handed:,.0f}/s)")
    print(f"  all delivered in {delivered:.2f} s ({messages / delivered:,.0f}/s per subscriber)")
    print(f"  lost: {messages - counts[0]} and {messages - counts[1]}")
    print(f"  CPU for the burst: {cpu:.2f} s ({cpu / messages * 1000:.2f} ms a message, 3 nodes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.size))


if __name__ == "__main__":
    main()
