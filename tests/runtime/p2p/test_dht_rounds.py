"""The DHT advertising loop: a peer connecting during a round wakes the next one."""

from __future__ import annotations

import pytest
import trio

from msuite.runtime.p2p import dht as dht_module
from msuite.runtime.p2p.dht import Dht


class SlowDht:
    def __init__(self) -> None:
        self.provided: list[float] = []

    async def provide(self, key: str) -> bool:
        await trio.sleep(0.3)
        self.provided.append(trio.current_time())
        return True

    async def add_peer(self, peer_id: object) -> bool:
        return True


def test_a_peer_connecting_during_a_round_wakes_another_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dht_module, "ADVERTISE_EVERY", 60.0)
    fake = SlowDht()

    async def main() -> None:
        dht = Dht(["svc.v1.S"])
        dht._dht = fake
        async with trio.open_nursery() as nursery:
            dht._nursery = nursery
            nursery.start_soon(dht._advertise_forever)
            await trio.sleep(1.1)  # inside the first round's provide (1 s debounce + 0.3 s)
            dht.peer_connected("peer")
            with trio.move_on_after(5):
                while dht.advertised < 2:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert dht.advertised >= 2  # not only after ADVERTISE_EVERY (60 s)

    trio.run(main)
