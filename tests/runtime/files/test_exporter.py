"""The exporter reads back what the importer wrote, by range, and refuses DAGs that lie."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msuite.runtime.files import dagpb
from msuite.runtime.files.cids import DAG_CBOR, DAG_PB, RAW, make_cid
from msuite.runtime.files.exporter import (
    MAX_DEPTH,
    ExportError,
    FileStat,
    read_file,
    resolve,
    stat,
    walk_cids,
)
from msuite.runtime.files.importer import build_directory, import_bytes
from msuite.runtime.files.unixfs import DataType, UnixFSData, encode_data, file_node
from tests.runtime.files.content import content


class Blocks:
    """An in-memory loader that records what it was asked for."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}
        self.batches: list[list[bytes]] = []

    def put(self, cid: bytes, block: bytes) -> None:
        self.blocks[cid] = block

    async def load(self, cids: Sequence[bytes]) -> list[bytes]:
        self.batches.append(list(cids))
        return [self.blocks[cid] for cid in cids]

    @property
    def loaded(self) -> int:
        return sum(len(batch) for batch in self.batches)


async def _read(root: bytes, blocks: Blocks, **kwargs: int | None) -> bytes:
    return b"".join([piece async for piece in read_file(root, blocks.load, **kwargs)])  # type: ignore[arg-type]


SIZES = [0, 1, 5, 16, 17, 64, 65, 16 * 4, 16 * 4 + 1, 16 * 16, 16 * 16 + 3, 1000]


@pytest.mark.parametrize("size", SIZES)
async def test_a_file_reads_back_whole(size: int) -> None:
    blocks = Blocks()
    data = content(size)
    result = import_bytes(data, blocks.put, chunk_size=16, max_links=4)
    assert await _read(result.cid, blocks) == data
    info = await stat(result.cid, blocks.load)
    assert (info.kind, info.size) == ("raw" if size <= 16 else "file", size)


async def test_a_kubo_sized_file_reads_back_in_windows() -> None:
    blocks = Blocks()
    data = content(262144 * 200 + 7)
    result = import_bytes(data, blocks.put)
    assert await _read(result.cid, blocks, window=16) == data
    assert max(len(batch) for batch in blocks.batches) <= 16
    assert blocks.loaded == len(blocks.blocks)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(0, 3000), st.integers(0, 3100), st.one_of(st.none(), st.integers(0, 3100)), st.integers(1, 9)
)
def test_any_range_reads_exactly_that_range(size: int, offset: int, length: int | None, window: int) -> None:
    blocks = Blocks()
    data = content(size)
    result = import_bytes(data, blocks.put, chunk_size=32, max_links=3)
    got = asyncio.run(_read(result.cid, blocks, offset=offset, length=length, window=window))
    assert got == data[offset : None if length is None else offset + length]


async def test_a_range_loads_only_the_blocks_it_needs() -> None:
    blocks = Blocks()
    data = content(100 * 16)
    result = import_bytes(data, blocks.put, chunk_size=16, max_links=4)
    assert await _read(result.cid, blocks, offset=16 * 50 + 3, length=20) == data[803:823]
    leaves = [cid for batch in blocks.batches for cid in batch if cid[1] == RAW]
    assert leaves == [make_cid(RAW, data[800:816]), make_cid(RAW, data[816:832])]
    assert blocks.loaded == 4 + 2  # root, two inner nodes on the way, and the two leaves


async def test_inline_data_comes_before_the_children() -> None:
    blocks = Blocks()
    leaf = make_cid(RAW, b"world")
    blocks.put(leaf, b"world")
    cid, block = file_node([(leaf, 5, 5)], data=b"hello ")
    blocks.put(cid, block)
    assert await _read(cid, blocks) == b"hello world"
    assert await _read(cid, blocks, offset=4, length=4) == b"o wo"
    raw_node = dagpb.encode(dagpb.PBNode((), encode_data(UnixFSData(DataType.RAW, b"abc", 3))))
    blocks.put(make_cid(DAG_PB, raw_node), raw_node)
    assert await _read(make_cid(DAG_PB, raw_node), blocks) == b"abc"


def _lying_parent(blocks: Blocks, sizes: tuple[int, ...], filesize: int, children: list[bytes]) -> bytes:
    for child in children:
        blocks.put(make_cid(RAW, child), child)
    unixfs = encode_data(UnixFSData(DataType.FILE, None, filesize, sizes))
    links = tuple(dagpb.PBLink(make_cid(RAW, child), "", len(child)) for child in children)
    block = dagpb.encode(dagpb.PBNode(links, unixfs))
    cid = make_cid(DAG_PB, block)
    blocks.put(cid, block)
    return cid


@pytest.mark.parametrize(
    ("sizes", "filesize", "message"),
    [
        ((3, 3), 6, "is 4 bytes, but its parent says 3"),
        ((5, 4), 9, "is 3 bytes, but its parent says 5"),
        ((3,), 3, "2 links but 1 blocksizes"),
        ((3, 4), 8, "declares 8 bytes but its parts add up to 7"),
    ],
)
async def test_a_parent_that_lies_is_an_error_not_wrong_bytes(
    sizes: tuple[int, ...], filesize: int, message: str
) -> None:
    blocks = Blocks()
    cid = _lying_parent(blocks, sizes, filesize, [b"abc", b"defg"])
    with pytest.raises(ExportError, match=message):
        await _read(cid, blocks)


async def test_a_child_file_node_that_disagrees_with_its_parent_is_named() -> None:
    blocks = Blocks()
    inner = import_bytes(content(40), blocks.put, chunk_size=16)
    cid, block = file_node([(inner.cid, inner.tsize, 41)])
    blocks.put(cid, block)
    with pytest.raises(ExportError, match="holds 40 bytes, but its parent says 41"):
        await _read(cid, blocks)


async def test_directories_and_other_kinds_are_refused() -> None:
    blocks = Blocks()
    directory = build_directory([], blocks.put)
    with pytest.raises(ExportError, match="is a directory"):
        await _read(directory.cid, blocks)
    symlink = dagpb.encode(dagpb.PBNode((), encode_data(UnixFSData(DataType.SYMLINK, b"/etc"))))
    blocks.put(make_cid(DAG_PB, symlink), symlink)
    with pytest.raises(ExportError, match="not a file"):
        await _read(make_cid(DAG_PB, symlink), blocks)
    blocks.put(make_cid(DAG_PB, b"\xff"), b"\xff")
    with pytest.raises(ExportError, match="not a DAG-PB node"):
        await _read(make_cid(DAG_PB, b"\xff"), blocks)
    blocks.put(make_cid(DAG_CBOR, b"\xa0"), b"\xa0")
    with pytest.raises(ExportError, match="codec 0x71"):
        await _read(make_cid(DAG_CBOR, b"\xa0"), blocks)


async def test_a_dag_deeper_than_the_limit_is_refused() -> None:
    blocks = Blocks()
    cid = make_cid(RAW, b"x")
    blocks.put(cid, b"x")
    tsize = 1
    for _ in range(MAX_DEPTH + 1):
        cid, block = file_node([(cid, tsize, 1)])
        blocks.put(cid, block)
        tsize += len(block)
    with pytest.raises(ExportError, match="levels deep"):
        await _read(cid, blocks)


async def test_stat_reads_the_root_only() -> None:
    blocks = Blocks()
    result = import_bytes(content(1000), blocks.put, chunk_size=100, max_links=4)
    assert await stat(result.cid, blocks.load) == FileStat(result.cid, "file", 1000, 4)
    assert blocks.loaded == 1
    directory = build_directory([("f", result.cid, result.tsize)], blocks.put)
    assert await stat(directory.cid, blocks.load) == FileStat(directory.cid, "directory", directory.tsize, 2)


async def test_resolve_walks_directories() -> None:
    blocks = Blocks()
    file = import_bytes(b"hi", blocks.put)
    inner = build_directory([("c.txt", file.cid, file.tsize)], blocks.put)
    top = build_directory([("b", inner.cid, inner.tsize), ("x", file.cid, file.tsize)], blocks.put)
    assert await resolve(top.cid, "b/c.txt", blocks.load) == file.cid
    assert await resolve(top.cid, "/b//c.txt/", blocks.load) == file.cid
    assert await resolve(top.cid, "", blocks.load) == top.cid
    with pytest.raises(ExportError, match=r"'nope' not found in .*/b"):
        await resolve(top.cid, "b/nope", blocks.load)
    with pytest.raises(ExportError, match="/x is not a directory"):
        await resolve(top.cid, "x/y", blocks.load)


async def test_walk_yields_every_block_once() -> None:
    blocks = Blocks()
    same = import_bytes(content(500), blocks.put, chunk_size=50, max_links=3)
    other = import_bytes(b"", blocks.put)
    directory = build_directory(
        [("a", same.cid, same.tsize), ("b", same.cid, same.tsize), ("c", other.cid, other.tsize)], blocks.put
    )
    walked = [cid async for cid in walk_cids(directory.cid, blocks.load, window=2)]
    assert walked[0] == directory.cid
    assert len(walked) == len(set(walked)) == len(blocks.blocks)
    assert max(len(batch) for batch in blocks.batches) <= 2
    assert all(cid[1] == DAG_PB for batch in blocks.batches for cid in batch)
    cbor = make_cid(DAG_CBOR, b"\xa0")
    assert [cid async for cid in walk_cids(cbor, blocks.load)] == [cbor]


async def test_at_most_a_window_of_leaves_is_held() -> None:
    blocks = Blocks()
    result = import_bytes(content(16 * 500), blocks.put, chunk_size=16, max_links=5)
    loaded = 0
    yielded = 0
    held: list[int] = []

    async def watching(cids: Sequence[bytes]) -> list[bytes]:
        nonlocal loaded
        loaded += sum(1 for cid in cids if cid[1] == RAW)
        held.append(loaded - yielded)
        return await blocks.load(cids)

    async for piece in read_file(result.cid, watching, window=8):
        assert len(piece) == 16
        yielded += 1
    assert yielded == loaded == 500
    assert max(held) <= 8
    assert max(len(batch) for batch in blocks.batches) <= 8


async def test_a_deep_dag_still_loads_its_leaves_a_window_at_a_time() -> None:
    blocks = Blocks()
    data = content(3**5 + 5)
    result = import_bytes(data, blocks.put, chunk_size=1, max_links=3)  # 6 levels of 3 links
    assert await _read(result.cid, blocks, window=16) == data
    leaf_batches = [sum(1 for cid in batch if cid[1] == RAW) for batch in blocks.batches]
    assert max(leaf_batches) == 16
    assert len(blocks.batches) < len(data) // 4
