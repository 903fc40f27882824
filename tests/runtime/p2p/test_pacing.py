"""The publish pump's pacing: it waits only for the peers of the topic it is about to publish on."""

from __future__ import annotations

import types

import trio

from msuite.runtime.p2p import pubsub as pubsub_module
from msuite.runtime.p2p.pubsub import OUTBOUND_QUEUE, PubSub


def fake_router(queues: dict[str, list[int]], topics: dict[str, set[str]]) -> object:
    return types.SimpleNamespace(peer_queues=queues, peer_topics=topics)


def test_a_backed_up_peer_of_another_topic_does_not_hold_a_publish_back() -> None:
    full = list(range(OUTBOUND_QUEUE // 2))
    router = fake_router({"slow": full, "fast": []}, {"news": {"fast"}, "logs": {"slow"}})

    async def main() -> float:
        began = trio.current_time()
        with trio.fail_after(pubsub_module.STALLED_AFTER / 2):
            await PubSub()._room_downstream(router, "news")
        return trio.current_time() - began

    assert trio.run(main) < 0.1


def test_a_backed_up_peer_of_the_topic_is_waited_for_until_it_drains() -> None:
    queue = list(range(OUTBOUND_QUEUE // 2))
    router = fake_router({"slow": queue}, {"news": {"slow"}})

    async def main() -> tuple[bool, bool]:
        done = trio.Event()

        async def pace() -> None:
            await PubSub()._room_downstream(router, "news")
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pace)
            await trio.sleep(0.05)
            waited = not done.is_set()
            del queue[:]  # the peer drains
            with trio.fail_after(1):
                await done.wait()
        return waited, done.is_set()

    assert trio.run(main) == (True, True)
