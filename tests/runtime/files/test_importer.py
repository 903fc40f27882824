"""The importer: Kubo's ``--cid-version=1 --raw-leaves`` layout, streamed.

The layout is checked against a plain recursive reading of js
ipfs-unixfs-importer's balanced builder (``reduceToParents``: batch by
``max_links``, reduce each batch, repeat while more than one node is left)
written here, and the CIDs against ``tests/runtime/files/js/vectors.json``,
which js ipfs-unixfs-importer produced: the vectors, never this module, are
the expected values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msuite.runtime.files import dagpb
from msuite.runtime.files.cids import DAG_PB, RAW, cid_from_str, cid_to_str, make_cid, parse_cid, verify
from msuite.runtime.files.importer import (
    MAX_DIRECTORY_BLOCK,
    Importer,
    ImporterError,
    ImportResult,
    build_directory,
    import_bytes,
)
from msuite.runtime.files.unixfs import DataType, decode_data
from tests.runtime.files.content import chunks, content

VECTORS = Path(__file__).parent / "js" / "vectors.json"
EMPTY = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


class Store:
    """The blocks ``put`` received, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []
        self.blocks: dict[bytes, bytes] = {}

    def put(self, cid: bytes, block: bytes) -> None:
        assert verify(cid, block)
        self.calls.append((cid, block))
        self.blocks[cid] = block


def _reference(data: bytes, chunk_size: int, max_links: int) -> bytes:
    """The root CID as the JS balanced builder computes it, recursively, from scratch."""
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    leaves = [(make_cid(RAW, p), len(p), len(p)) for p in pieces]
    if len(leaves) == 1:
        return leaves[0][0]
    level = leaves
    while True:
        parents = []
        for start in range(0, len(level), max_links):
            group = level[start : start + max_links]
            sizes = b"".join(b"\x20" + _uvarint(size) for _, _, size in group)
            total = sum(size for _, _, size in group)
            data_field = b"\x08\x02\x18" + _uvarint(total) + sizes
            links = tuple(dagpb.PBLink(cid, "", tsize) for cid, tsize, _ in group)
            block = dagpb.encode(dagpb.PBNode(links, data_field))
            parents.append((make_cid(DAG_PB, block), len(block) + sum(t for _, t, _ in group), total))
        if len(parents) == 1:
            return parents[0][0]
        level = parents


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_the_empty_file_is_kubos_empty_raw_leaf() -> None:
    store = Store()
    result = import_bytes(b"", store.put)
    assert cid_to_str(result.cid) == EMPTY
    assert result == ImportResult(cid_from_str(EMPTY), 0, 1, 0)
    assert store.calls == [(result.cid, b"")]


def test_one_chunk_is_its_own_root() -> None:
    for size in (1, 1000, 262144):
        store = Store()
        result = import_bytes(content(size), store.put)
        assert result.cid == make_cid(RAW, content(size))
        assert (result.size, result.blocks, result.tsize) == (size, 1, size)


def test_a_parent_links_its_chunks_with_empty_names_and_sizes() -> None:
    store = Store()
    data = content(262144 + 10)
    result = import_bytes(data, store.put)
    assert parse_cid(result.cid).codec == DAG_PB
    node = dagpb.decode(store.blocks[result.cid])
    assert [(link.name, link.tsize) for link in node.links] == [("", 262144), ("", 10)]
    assert node.links[0].hash == make_cid(RAW, data[:262144])
    assert node.data is not None
    unixfs = decode_data(node.data)
    assert (unixfs.type, unixfs.filesize, unixfs.blocksizes, unixfs.data) == (
        DataType.FILE,
        262154,
        (262144, 10),
        None,
    )
    assert result.blocks == 3
    assert result.tsize == sum(len(block) for block in store.blocks.values())


def test_175_chunks_make_a_root_over_174_and_1() -> None:
    store = Store()
    result = import_bytes(content(175 * 4), store.put, chunk_size=4)
    root = dagpb.decode(store.blocks[result.cid])
    counts = [len(dagpb.decode(store.blocks[link.hash]).links) for link in root.links]
    assert counts == [174, 1]
    assert result.blocks == 175 + 3


@pytest.mark.parametrize("max_links", [2, 3, 174])
def test_the_layout_is_the_js_balanced_builders(max_links: int) -> None:
    for n in [*range(0, 30), 174, 175, 348, 349, 174 * 174 // 50]:
        data = content(n * 3 + 1)
        assert import_bytes(data, Store().put, chunk_size=3, max_links=max_links).cid == _reference(
            data, 3, max_links
        ), n


def test_a_third_level_appears_after_max_links_squared() -> None:
    for n in (9, 10, 27, 28, 31):
        data = content(n)
        store = Store()
        result = import_bytes(data, store.put, chunk_size=1, max_links=3)
        assert result.cid == _reference(data, 1, 3), n
        assert result.tsize == sum(len(b) for _, b in store.calls)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5000), st.lists(st.integers(1, 700), min_size=1, max_size=30))
def test_any_feeding_gives_the_same_dag(size: int, pieces: list[int]) -> None:
    data = content(size)
    whole = Store()
    expected = import_bytes(data, whole.put, chunk_size=256, max_links=4)
    store = Store()
    importer = Importer(store.put, chunk_size=256, max_links=4)
    position = 0
    index = 0
    while position < size:
        step = pieces[index % len(pieces)]
        importer.feed(memoryview(data)[position : position + step])
        position += step
        index += 1
    assert importer.finish() == expected
    assert store.calls == whole.calls


def test_blocks_are_put_as_soon_as_they_are_complete() -> None:
    store = Store()
    importer = Importer(store.put, chunk_size=4, max_links=2)
    importer.feed(b"abc")
    assert store.calls == []
    importer.feed(b"d")
    assert store.calls == [(make_cid(RAW, b"abcd"), b"abcd")]
    importer.feed(b"efgh")
    assert len(store.calls) == 3  # the second leaf, then their parent
    assert parse_cid(store.calls[-1][0]).codec == DAG_PB
    importer.finish()
    with pytest.raises(ImporterError, match="after finish"):
        importer.feed(b"x")


def test_directories_sort_by_name_bytes_and_link_cumulative_sizes() -> None:
    store = Store()
    files = {
        name: import_bytes(content(n), store.put)
        for name, n in [("b", 10), ("a", 300000), ("é", 1), ("Z", 0)]
    }
    result = build_directory([(name, r.cid, r.tsize) for name, r in files.items()], store.put)
    node = dagpb.decode(store.blocks[result.cid])
    assert [link.name for link in node.links] == ["Z", "a", "b", "é"]
    assert [link.tsize for link in node.links] == [files[n].tsize for n in ["Z", "a", "b", "é"]]
    assert node.data == b"\x08\x01"
    assert result.tsize == len(store.blocks[result.cid]) + sum(r.tsize for r in files.values())


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "needs a name"), ("a/b", "'/'"), (".", "'.'"), ("..", "'..'"), ("a\0", "NUL")],
)
def test_bad_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(ImporterError, match=message):
        build_directory([(name, make_cid(RAW, b""), 0)], Store().put)


def test_a_name_twice_is_refused() -> None:
    cid = make_cid(RAW, b"")
    with pytest.raises(ImporterError, match="two directory entries are named 'x'"):
        build_directory([("x", cid, 0), ("x", cid, 0)], Store().put)


def test_a_directory_over_one_mebibyte_is_refused() -> None:
    cid = make_cid(RAW, b"")
    entries = [(f"{i:020d}", cid, 0) for i in range(MAX_DIRECTORY_BLOCK // 60 + 1)]
    store = Store()
    with pytest.raises(ImporterError, match="HAMT sharding is not supported"):
        build_directory(entries, store.put)
    assert store.calls == []


def _vectors() -> dict[str, Any]:
    if not VECTORS.exists():
        pytest.fail(
            f"{VECTORS} is missing: it is the expected CIDs, written by js ipfs-unixfs-importer "
            "(tests/runtime/files/js); generate it there first"
        )
    loaded: dict[str, Any] = json.loads(VECTORS.read_text())
    return loaded


def _pre_order(root: bytes, blocks: dict[bytes, bytes]) -> list[tuple[str, int]]:
    """Every distinct block under ``root`` as (CID, length), DAG pre-order, root first."""
    seen: set[bytes] = set()
    order: list[tuple[str, int]] = []

    def visit(cid: bytes) -> None:
        if cid in seen:
            return
        seen.add(cid)
        order.append((cid_to_str(cid), len(blocks[cid])))
        if parse_cid(cid).codec == DAG_PB:
            for link in dagpb.decode(blocks[cid]).links:
                visit(link.hash)

    visit(root)
    return order


def test_vectors() -> None:
    """Every file of vectors.json: root CID, puts, distinct blocks and leaves; every block of the small ones."""
    vectors = _vectors()
    assert vectors["files"], "vectors.json lists no files"
    for vector in vectors["files"]:
        size = vector["size"]
        store = Store()
        importer = Importer(store.put)
        for piece in chunks(size, 4 << 20):
            importer.feed(piece)
        result = importer.finish()
        assert cid_to_str(result.cid) == vector["cid"], f"{size} bytes"
        assert (result.size, result.blocks) == (size, vector["puts"]), f"{size} bytes"
        assert len(store.blocks) == vector["blocks"], f"{size} bytes"
        assert sum(1 for cid in store.blocks if parse_cid(cid).codec == RAW) == vector["leaves"], (
            f"{size} bytes"
        )
        if "block_list" in vector:
            expected = [(block["cid"], block["length"]) for block in vector["block_list"]]
            assert _pre_order(result.cid, store.blocks) == expected, f"{size} bytes"


def test_the_directory_vector() -> None:
    vector = _vectors()["directory"]
    store = Store()
    a = import_bytes(content(5), store.put)
    b = import_bytes(content(262145), store.put)
    c = import_bytes(content(1000), store.put)
    sub = build_directory([("c.txt", c.cid, c.tsize)], store.put)
    top = build_directory(
        [("b.bin", b.cid, b.tsize), ("sub", sub.cid, sub.tsize), ("a.txt", a.cid, a.tsize)], store.put
    )
    paths = vector["paths"]
    assert [cid_to_str(r.cid) for r in (a, b, c, sub, top)] == [
        paths["dir/a.txt"],
        paths["dir/b.bin"],
        paths["dir/sub/c.txt"],
        paths["dir/sub"],
        paths["dir"],
    ]
    assert cid_to_str(top.cid) == vector["cid"] and cid_to_str(sub.cid) == vector["sub_cid"]
    assert len(store.blocks) == vector["blocks"]
