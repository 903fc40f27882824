"""The item store against raw plyvel, doing the same work on the same data, in one run.

    python bench/bench_store.py [--items N] [--rounds R] [--profile]

Rows (throughput in operations per second; ratio = msuite / baseline, higher is better):

  put   store.create(Note)  vs  plyvel put of the item encoded as JSON
        ("+indexes": plyvel writing the record and both index entries in one batch,
        i.e. everything the store writes; the gap to it is the Python layer;
        "bytes only": plyvel putting bytes encoded beforehand)
  get   store.read(Note, id)  vs  plyvel get + Note.model_validate_json
        ("bytes only": plyvel get without turning bytes into an item; "store's
        database": the same two on the store's own database and record keys)
  list  store.list(Note, sort=created_desc) over 10k items  vs  plyvel walking the
        same created index backwards, fetching and decoding each record

The raw databases are opened with the same LevelDB options as the store's
(its bloom filter), so a ratio measures what msuite adds above LevelDB.
Every figure is the median of R rounds (default 5); each round measures every
side once, alternating the order from round to round (msuite first, then last),
so a machine that slows down mid-run weighs on both sides alike. Puts write
fresh keys each round. put runs with sync off (the OS decides when to flush)
and on (each write is fsynced, the store's default); both sides use the same
setting. ``--profile`` prints where msuite's put and get spend their time
(cProfile, own time; its per-call overhead inflates small functions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import plyvel
from pydantic import BaseModel

from msuite.runtime.repo import Repo
from msuite.runtime.store import Sort
from msuite.runtime.store import kv as store_kv

RAW_OPTIONS = {"bloom_filter_bits": getattr(store_kv, "BLOOM_FILTER_BITS", 0)}
"""The raw databases get the LevelDB options the store's has, so the ratios compare the layers
above LevelDB (0: the options of a store without a bloom filter)."""


class Note(BaseModel):
    store_namespace: ClassVar[str] = "notes"
    id: str | None = None
    title: str
    body: str
    rank: int


def note(i: int, tag: str = "note") -> Note:
    return Note(id=f"{tag}-{i:08d}", title=f"title {i}", body="x" * 200, rank=i)


Side = Callable[[int], Awaitable[object]]


async def rate(count: int, fn: Side) -> float:
    start = time.perf_counter()
    for i in range(count):
        await fn(i)
    return count / (time.perf_counter() - start)


async def alternate(rounds: int, sides: dict[str, Callable[[int], Awaitable[float]]]) -> dict[str, float]:
    """The median rate of each side over ``rounds`` rounds, the order reversed every other round."""
    found: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            found[name].append(await sides[name](round_))
    return {name: statistics.median(rates) for name, rates in found.items()}


def report(name: str, ours: float, base: float, label: str) -> None:
    print(f"{name:<22} msuite {ours:>10,.0f}/s   {label:<26} {base:>10,.0f}/s   ratio {ours / base:5.2f}x")


async def profiled(title: str, count: int, fn: Side, top: int = 12) -> None:
    """Run ``fn`` ``count`` times under cProfile and print the top functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(count):
        await fn(i)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt or 1.0  # type: ignore[attr-defined]
    print(f"  {title}: {count:,} calls, {total:.3f} s under cProfile ({total / count * 1e6:.1f} us/call)")
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]  # type: ignore[attr-defined]
    for (file, line, name), (_, calls, own, cumulative, _) in rows:
        where = f"{os.path.basename(file)}:{line}:{name}"[-60:]
        print(
            f"    {where:60} {calls / count:5.1f}/op {own / count * 1e6:6.2f} us own"
            f" {cumulative / count * 1e6:6.2f} us cum"
        )


async def bench_put(folder: Path, count: int, rounds: int, sync: bool, show_profile: bool) -> None:
    repo = Repo.open(folder / f"repo-{sync}", sync=sync)
    raw = plyvel.DB(str(folder / f"raw-{sync}"), create_if_missing=True, **RAW_OPTIONS)

    def timed(fn: Callable[[list[Note]], Side]) -> Callable[[int], Awaitable[float]]:
        async def measure(round_: int) -> float:
            payloads = [note(i, f"r{round_}") for i in range(count)]  # fresh keys every round
            return await rate(count, fn(payloads))

        return measure

    def ours(payloads: list[Note]) -> Side:
        create = repo.store.create

        async def put(i: int) -> None:
            await create(payloads[i])

        return put

    def plain(payloads: list[Note]) -> Side:
        async def put(i: int) -> None:
            item = payloads[i]
            raw.put(b"r" + item.id.encode(), item.model_dump_json().encode(), sync=sync)  # type: ignore[union-attr]

        return put

    def plain_indexed(payloads: list[Note]) -> Side:
        async def put(i: int) -> None:
            item = payloads[i]
            key = item.id.encode()  # type: ignore[union-attr]
            stamp = time.time_ns().to_bytes(8, "big")
            with raw.write_batch(transaction=True, sync=sync) as batch:
                batch.put(b"R" + key, b"\x01" + stamp + stamp + item.model_dump_json().encode())
                batch.put(b"C" + stamp + key, b"")
                batch.put(b"U" + stamp + key, b"")

        return put

    def plain_bytes(payloads: list[Note]) -> Side:
        encoded = [n.model_dump_json().encode() for n in payloads]

        async def put(i: int) -> None:
            raw.put(b"b" + payloads[i].id.encode(), encoded[i], sync=sync)  # type: ignore[union-attr]

        return put

    rates = await alternate(
        rounds,
        {
            "ours": timed(ours),
            "plain": timed(plain),
            "indexed": timed(plain_indexed),
            "bytes": timed(plain_bytes),
        },
    )
    mode = "sync on" if sync else "sync off"
    report(f"put ({mode})", rates["ours"], rates["plain"], "plyvel put + encode")
    report(f"put ({mode})", rates["ours"], rates["indexed"], "plyvel put +indexes")
    report(f"put ({mode})", rates["ours"], rates["bytes"], "plyvel put (bytes only)")
    if show_profile:
        await profiled(f"store.create ({mode})", count, ours([note(i, "profile") for i in range(count)]))
    repo.close()
    raw.close()


async def bench_get_and_list(folder: Path, count: int, rounds: int, show_profile: bool) -> None:
    repo = Repo.open(folder / "repo-read", sync=False)
    raw = plyvel.DB(str(folder / "raw-read"), create_if_missing=True, **RAW_OPTIONS)
    for i in range(count):
        n = await repo.store.create(note(i))
        stamp = time.time_ns().to_bytes(8, "big")
        raw.put(b"r" + (n.id or "").encode(), n.model_dump_json().encode())
        raw.put(b"c" + stamp + (n.id or "").encode(), b"")
    ids = [f"note-{i:08d}" for i in range(count)]
    read = repo.store.read

    async def ours(i: int) -> None:
        await read(Note, ids[i])

    async def plain_decoded(i: int) -> None:
        Note.model_validate_json(raw.get(b"r" + ids[i].encode()))

    async def plain_bytes(i: int) -> None:
        raw.get(b"r" + ids[i].encode())

    # the same reads on the store's own database (the repository's plyvel handle, the record keys
    # as docs/storage.md lays them out): what is left between these and msuite is the store's
    # Python layer; the rows above also count that the store's database holds more (index
    # entries, the records' headers, longer keys), which at 10k items no longer fits LevelDB's
    # 4 MiB memtable while the raw one does
    own_get = repo.kv.get
    records = b"store\x00r\x05notes"

    async def own_decoded(i: int) -> None:
        Note.model_validate_json(own_get(records + ids[i].encode())[17:])  # type: ignore[index]

    async def own_bytes(i: int) -> None:
        own_get(records + ids[i].encode())

    def timed(fn: Side) -> Callable[[int], Awaitable[float]]:
        async def measure(round_: int) -> float:
            return await rate(count, fn)

        return measure

    rates = await alternate(
        rounds,
        {
            "ours": timed(ours),
            "plain": timed(plain_decoded),
            "bytes": timed(plain_bytes),
            "own": timed(own_decoded),
            "own bytes": timed(own_bytes),
        },
    )
    report("get", rates["ours"], rates["plain"], "plyvel get + decode")
    report("get", rates["ours"], rates["bytes"], "plyvel get (bytes only)")
    report("get", rates["ours"], rates["own"], "same, store's database")
    report("get", rates["ours"], rates["own bytes"], "bytes, store's database")

    def raw_list() -> list[Note]:
        out = []
        with raw.snapshot() as snap, snap.iterator(prefix=b"c", reverse=True, include_value=False) as it:
            for key in it:
                out.append(Note.model_validate_json(snap.get(b"r" + key[9:])))
        return out

    async def ours_list(round_: int) -> float:
        start = time.perf_counter()
        assert len(await repo.store.list(Note, sort=Sort.CREATED_DESC)) == count
        return 1 / (time.perf_counter() - start)

    async def plain_list(round_: int) -> float:
        start = time.perf_counter()
        assert len(await asyncio.to_thread(raw_list)) == count
        return 1 / (time.perf_counter() - start)

    rates = await alternate(rounds, {"ours": ours_list, "plain": plain_list})
    report(f"list {count // 1000}k created_desc", rates["ours"], rates["plain"], "plyvel index walk + decode")
    if show_profile:
        await profiled("store.read", count, ours)
    repo.close()
    raw.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions too")
    args = parser.parse_args()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"median of {args.rounds} alternating rounds; load {load} on {os.cpu_count()} cores; "
        f"LevelDB options of both sides: {RAW_OPTIONS}"
    )
    folder = Path(tempfile.mkdtemp(prefix="msuite-bench-"))
    try:
        await bench_put(folder, args.items, args.rounds, sync=False, show_profile=args.profile)
        await bench_put(folder, max(200, args.items // 20), args.rounds, sync=True, show_profile=False)
        await bench_get_and_list(folder, args.items, args.rounds, args.profile)
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    asyncio.run(main())
