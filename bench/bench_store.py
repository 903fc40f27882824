"""The item store against raw plyvel, doing the same work on the same data, in one run.

    python bench/bench_store.py [--items N]

Rows (throughput in operations per second; ratio = msuite / baseline, higher is better):

  put   store.create(Note)  vs  plyvel put of the item encoded as JSON
        ("+indexes": plyvel writing the record and both index entries in one batch,
        i.e. everything the store writes; the gap to it is the Python layer;
        "bytes only": plyvel putting bytes encoded beforehand)
  get   store.read(Note, id)  vs  plyvel get + Note.model_validate_json
        ("bytes only": plyvel get without turning bytes into an item)
  list  store.list(Note, sort=created_desc) over 10k items  vs  plyvel walking the
        same created index backwards, fetching and decoding each record

put runs with sync off (the OS decides when to flush) and on (each write is
fsynced, the store's default); both sides use the same setting.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import plyvel
from pydantic import BaseModel

from msuite.runtime.repo import Repo
from msuite.runtime.store import Sort


class Note(BaseModel):
    store_namespace: ClassVar[str] = "notes"
    id: str | None = None
    title: str
    body: str
    rank: int


def note(i: int) -> Note:
    return Note(id=f"note-{i:08d}", title=f"title {i}", body="x" * 200, rank=i)


async def rate(count: int, fn: Callable[[int], Awaitable[object]]) -> float:
    start = time.perf_counter()
    for i in range(count):
        await fn(i)
    return count / (time.perf_counter() - start)


def report(name: str, ours: float, base: float, label: str) -> None:
    print(f"{name:<22} msuite {ours:>10,.0f}/s   {label:<26} {base:>10,.0f}/s   ratio {ours / base:5.2f}x")


async def bench_put(folder: Path, count: int, sync: bool) -> None:
    repo = Repo.open(folder / f"repo-{sync}", sync=sync)
    raw = plyvel.DB(str(folder / f"raw-{sync}"), create_if_missing=True)
    payloads = [note(i) for i in range(count)]
    encoded = [n.model_dump_json().encode() for n in payloads]

    async def ours(i: int) -> None:
        await repo.store.create(payloads[i])

    async def plain(i: int) -> None:
        item = payloads[i]
        raw.put(b"r" + item.id.encode(), item.model_dump_json().encode(), sync=sync)  # type: ignore[union-attr]

    async def plain_bytes(i: int) -> None:
        raw.put(b"b" + payloads[i].id.encode(), encoded[i], sync=sync)  # type: ignore[union-attr]

    async def plain_indexed(i: int) -> None:
        item = payloads[i]
        key = item.id.encode()  # type: ignore[union-attr]
        stamp = time.time_ns().to_bytes(8, "big")
        with raw.write_batch(transaction=True, sync=sync) as batch:
            batch.put(b"R" + key, b"\x01" + stamp + stamp + item.model_dump_json().encode())
            batch.put(b"C" + stamp + key, b"")
            batch.put(b"U" + stamp + key, b"")

    mode = "sync on" if sync else "sync off"
    ours_rate = await rate(count, ours)
    report(f"put ({mode})", ours_rate, await rate(count, plain), "plyvel put + encode")
    report(f"put ({mode})", ours_rate, await rate(count, plain_indexed), "plyvel put +indexes")
    report(f"put ({mode})", ours_rate, await rate(count, plain_bytes), "plyvel put (bytes only)")
    repo.close()
    raw.close()


async def bench_get_and_list(folder: Path, count: int) -> None:
    repo = Repo.open(folder / "repo-read", sync=False)
    raw = plyvel.DB(str(folder / "raw-read"), create_if_missing=True)
    for i in range(count):
        n = await repo.store.create(note(i))
        stamp = time.time_ns().to_bytes(8, "big")
        raw.put(b"r" + (n.id or "").encode(), n.model_dump_json().encode())
        raw.put(b"c" + stamp + (n.id or "").encode(), b"")
    ids = [f"note-{i:08d}" for i in range(count)]

    async def ours(i: int) -> None:
        await repo.store.read(Note, ids[i])

    async def plain_decoded(i: int) -> None:
        Note.model_validate_json(raw.get(b"r" + ids[i].encode()))

    async def plain_bytes(i: int) -> None:
        raw.get(b"r" + ids[i].encode())

    ours_rate = await rate(count, ours)
    report("get", ours_rate, await rate(count, plain_decoded), "plyvel get + decode")
    report("get", ours_rate, await rate(count, plain_bytes), "plyvel get (bytes only)")

    def raw_list() -> list[Note]:
        out = []
        with raw.snapshot() as snap, snap.iterator(prefix=b"c", reverse=True, include_value=False) as it:
            for key in it:
                out.append(Note.model_validate_json(snap.get(b"r" + key[9:])))
        return out

    rounds = 5
    start = time.perf_counter()
    for _ in range(rounds):
        assert len(await repo.store.list(Note, sort=Sort.CREATED_DESC)) == count
    ours_list = rounds / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(rounds):
        assert len(await asyncio.to_thread(raw_list)) == count
    raw_rate = rounds / (time.perf_counter() - start)
    report(f"list {count // 1000}k created_desc", ours_list, raw_rate, "plyvel index walk + decode")
    repo.close()
    raw.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="msuite-bench-"))
    try:
        await bench_put(folder, args.items, sync=False)
        await bench_put(folder, max(200, args.items // 20), sync=True)
        await bench_get_and_list(folder, args.items)
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    asyncio.run(main())
