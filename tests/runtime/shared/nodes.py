"""Nodes with the shared store on real libp2p hosts on 127.0.0.1, for the shared store's tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from msuite.runtime.node import Node
from msuite.spec import Manifest
from tests.helpers import eventually


class Note(BaseModel):
    store_namespace: ClassVar[str] = "notes"
    id: str | None = None
    text: str


def manifest(
    name: str, folder: Path, bootstrap: tuple[str, ...] = (), channel: str = "test", **shared: Any
) -> Manifest:
    return Manifest.model_validate(
        {
            "name": name,
            "repo": str(folder / name),
            "p2p": {"port": 0, "bootstrap": list(bootstrap)},
            "storage": {"sync": False, "shared": {"channel": channel, "rebroadcast": "1s", **shared}},
            "http": {"port": 0},
            "diagnostics": {"metrics": True},
        }
    )


async def mesh(started: list[Node], topic: str) -> None:
    """Wait until every node has every other in its pubsub mesh view of ``topic``."""
    count = len(started)
    for node in started:
        await eventually(lambda n=node: len(n.p2p.peers()) >= count - 1, timeout=15)
    for node in started:
        await eventually(lambda n=node: len(n.p2p.pubsub.peers(topic)) >= count - 1, timeout=15)


@contextlib.asynccontextmanager
async def nodes(
    count: int, folder: Path, channels: tuple[str, ...] = (), **shared: Any
) -> AsyncIterator[list[Node]]:
    """``count`` started nodes, each connected to every other (``channels[i]``: node i's channel)."""
    started: list[Node] = []
    try:
        for index in range(count):
            bootstrap = tuple(n.p2p.addrs[0] for n in started)
            channel = channels[index] if channels else "test"
            node = Node(manifest(f"n{index}", folder, bootstrap, channel, **shared))
            await node.start()
            started.append(node)
        if not channels:
            await mesh(started, "msuite/test/shared")
        else:
            for node in started:
                await eventually(lambda n=node: len(n.p2p.peers()) >= count - 1, timeout=15)
        yield started
    finally:
        for node in reversed(started):
            await node.stop()


async def state(node: Node, namespace: str = "app") -> dict[str, str]:
    return {n.id or "": n.text for n in await node.shared(namespace).list(Note)}


async def until(read: Any, expected: object, timeout: float) -> float:
    """Poll ``await read()`` every 10 ms until it equals ``expected``; how long that took.
    AssertionError with the last value read after ``timeout`` seconds."""
    began = time.monotonic()
    while True:
        value = await read()
        if value == expected:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"still {value!r} after {timeout} s, expected {expected!r}")
        await asyncio.sleep(0.01)


async def agree(started: list[Node], timeout: float, namespace: str = "app") -> dict[str, str]:
    """Poll until every node lists the same items; that state. AssertionError after ``timeout``."""
    began = time.monotonic()
    while True:
        states = [await state(node, namespace) for node in started]
        if all(s == states[0] for s in states):
            return states[0]
        if time.monotonic() - began > timeout:
            raise AssertionError(
                f"the nodes still disagree after {timeout} s: {[len(s) for s in states]} items"
            )
        await asyncio.sleep(0.01)


async def rebroadcast_heard(listener: Node, speaker: Node, timeout: float = 5.0) -> None:
    """Wait until ``listener`` hears an announcement ``speaker`` makes from now on (a rebroadcast:
    every later state a test asserts has had the chance to travel)."""
    since = time.time()
    by_peer = listener.component("shared").counters.by_peer
    peer = speaker.p2p.peer_id
    await eventually(lambda: peer in by_peer and by_peer[peer].heard > since, timeout=timeout)


async def drained(store: Any) -> None:
    """Wait until ``store``'s on_change callbacks have run for every change so far."""
    await eventually(lambda: store._queue is None or store._queue.empty(), timeout=5)
    await asyncio.sleep(0)  # the callback taken last has returned
