"""Deltas and heads messages as DAG-CBOR: round trips, and every way a peer's bytes can be wrong.

Every rejection must be a :class:`DeltaError` (never another exception type), and nothing that
breaks a documented limit may decode.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import dag_cbor
import pytest
from multiformats import CID

from msuite.runtime.files.cids import DAG_CBOR, DAG_PB, RAW, make_cid
from msuite.runtime.shared.delta import (
    MAX_BLOCK,
    MAX_HEADS,
    MAX_HEIGHT,
    MAX_KEY,
    MAX_LINKS,
    MAX_REMOVED,
    Delta,
    DeltaError,
    Op,
    _delta_cbor,
    decode_delta,
    decode_heads,
    encode_delta,
    encode_heads,
)

KEY = b"\x03appr\x05notesx"
RECORD = b"\x01" + bytes(16) + b'{"text":"hello"}'
LINK = make_cid(DAG_CBOR, b"a parent delta")
OTHER_LINK = make_cid(DAG_CBOR, b"another parent delta")
REMOVED = make_cid(DAG_CBOR, b"a superseded delta")


def cbor(obj: Any) -> tuple[bytes, bytes]:
    """``(cid, block)`` of any DAG-CBOR value, under its own (right) CID."""
    block = dag_cbor.encode(obj)
    return make_cid(DAG_CBOR, block), block


def cid_obj(raw: bytes) -> Any:
    return CID.decode(raw)


def base_map() -> dict[str, Any]:
    """A valid delta as the map a peer would send (mutated by the rejection cases)."""
    return {
        "v": 1,
        "height": 2,
        "node": "12D3KooWnode",
        "links": [LINK],
        "ops": [[KEY, RECORD, [REMOVED]], [KEY + b"y", None, []]],
    }


def rejects(obj: Any) -> DeltaError:
    cid, block = cbor(obj)
    with pytest.raises(DeltaError) as info:
        decode_delta(cid, block)
    return info.value


# --------------------------------------------------------------------------- round trips


def sample_deltas() -> list[Delta]:
    return [
        Delta(1, (), (Op(KEY, RECORD, ()),), "n1"),
        Delta(2, (LINK,), (Op(KEY, None, (REMOVED,)),), "n2"),
        Delta(
            7,
            (LINK, OTHER_LINK),
            (
                Op(KEY, RECORD, (REMOVED, make_cid(DAG_CBOR, b"x"))),
                Op(bytes(range(256)), b"", ()),
                Op(b"\x00", None, ()),
            ),
            "ünïcode node ✓",
        ),
        Delta(MAX_HEIGHT, (LINK,), (Op(b"k" * MAX_KEY, RECORD * 100, ()),), ""),
    ]


@pytest.mark.parametrize("delta", sample_deltas(), ids=lambda d: f"height{d.height}")
def test_encode_decode_round_trip(delta: Delta) -> None:
    cid, block = encode_delta(delta)
    assert cid == make_cid(DAG_CBOR, block)
    assert cid[:4] == b"\x01\x71\x12\x20" and len(cid) == 36
    decoded = decode_delta(cid, block)
    assert decoded == delta
    assert isinstance(decoded.links, tuple) and isinstance(decoded.ops, tuple)
    assert all(isinstance(op.removed, tuple) for op in decoded.ops)
    # encoding is deterministic: the same delta always has the same CID
    assert encode_delta(decoded) == (cid, block)


def _as_map(delta: Delta) -> dict[str, Any]:
    return {
        "v": 1,
        "height": delta.height,
        "node": delta.node,
        "links": list(delta.links),
        "ops": [[op.key, op.value, list(op.removed)] for op in delta.ops],
    }


def _generated_deltas() -> list[Delta]:
    """Deltas whose every length and number crosses a CBOR head boundary (24, 256, 65536, 2**32)."""
    rng = random.Random(20)
    sizes = [0, 1, 23, 24, 255, 256, 257, 65535, 65536, 70000]
    heights = [1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, MAX_HEIGHT]
    cids = [make_cid(DAG_CBOR, i.to_bytes(2, "big")) for i in range(300)]
    out = []
    for i, height in enumerate(heights):
        ops = tuple(
            Op(
                rng.randbytes(rng.choice([1, 23, 24, 255, 256, MAX_KEY])),
                None if rng.random() < 0.2 else rng.randbytes(rng.choice(sizes)),
                tuple(rng.sample(cids, rng.choice([0, 1, 23, 24, 255, 256]))),
            )
            for _ in range(rng.choice([1, 23, 24, 255, 256, 300]))
        )
        node = "".join(rng.choice("aé✓Z0") for _ in range(rng.choice([0, 5, 23, 24, 100, 256])))
        out.append(Delta(height, tuple(cids[: [0, 1, 23, 24, 255, 256, 300][i % 7]]), ops, node))
    return out


@pytest.mark.parametrize("delta", sample_deltas() + _generated_deltas(), ids=lambda d: f"height{d.height}")
def test_the_encoder_writes_what_dag_cbor_writes(delta: Delta) -> None:
    """The delta encoder is msuite's own (dag_cbor's took 11.5 ms for 1,000 writes, it 0.7 ms):
    its bytes, and so every CID, must be dag_cbor's for the same map, or old and new nodes
    would name one delta differently."""
    expected = dag_cbor.encode(_as_map(delta))
    assert _delta_cbor(delta) == expected
    if len(expected) <= MAX_BLOCK:
        assert encode_delta(delta) == (make_cid(DAG_CBOR, expected), expected)


def test_the_block_is_the_documented_map() -> None:
    delta = Delta(2, (LINK,), (Op(KEY, None, (REMOVED,)),), "n")
    _cid, block = encode_delta(delta)
    data: Any = dag_cbor.decode(block)
    assert data == {
        "v": 1,
        "height": 2,
        "node": "n",
        "links": [LINK],
        "ops": [[KEY, None, [REMOVED]]],
    }
    # every CID is plain bytes, not an IPLD link (see the module: decoding links was the cost)
    assert isinstance(data["links"][0], bytes) and not isinstance(data["links"][0], CID)
    assert isinstance(data["ops"][0][2][0], bytes)


def test_a_valid_map_built_by_hand_decodes() -> None:
    cid, block = cbor(base_map())
    delta = decode_delta(cid, block)
    assert delta == Delta(2, (LINK,), (Op(KEY, RECORD, (REMOVED,)), Op(KEY + b"y", None, ())), "12D3KooWnode")


def test_limits_are_inclusive() -> None:
    links = [make_cid(DAG_CBOR, i.to_bytes(4, "big")) for i in range(MAX_LINKS)]
    removed = [make_cid(DAG_CBOR, b"r" + i.to_bytes(4, "big")) for i in range(MAX_REMOVED)]
    delta = Delta(MAX_HEIGHT, tuple(links), (Op(b"k" * MAX_KEY, b"v", tuple(removed)),), "n" * 256)
    cid, block = encode_delta(delta)
    assert decode_delta(cid, block) == delta


def test_encode_refuses_a_delta_over_the_block_limit() -> None:
    delta = Delta(1, (), (Op(KEY, b"\x01" * (MAX_BLOCK + 1), ()),), "n")
    with pytest.raises(DeltaError):
        encode_delta(delta)


# --------------------------------------------------------------------------- decode_delta rejects


def test_wrong_cid_for_the_bytes() -> None:
    cid, block = encode_delta(Delta(1, (), (Op(KEY, RECORD, ()),), "n"))
    other_cid, other_block = encode_delta(Delta(1, (), (Op(KEY, RECORD + b"!", ()),), "n"))
    with pytest.raises(DeltaError, match="CID"):
        decode_delta(other_cid, block)
    with pytest.raises(DeltaError, match="CID"):
        decode_delta(cid, other_block)
    with pytest.raises(DeltaError, match="CID"):
        decode_delta(cid, block + b"\x00")
    for garbage in (
        b"",
        b"\x01",
        b"\x01\x71",
        b"\xff" * 36,
        cid[:-1],
        cid + b"\x00",
        b"\x12\x20" + bytes(32),
    ):
        with pytest.raises(DeltaError):
            decode_delta(garbage, block)


@pytest.mark.parametrize(
    "block",
    [b"", b"\xff", b"\xff\x00 not cbor", b"\xa1", b"\x9f\x01\x02\xff", b"\xa1\x61v\x01\x00"],
    ids=["empty", "break", "junk", "truncated-map", "indefinite-array", "trailing-bytes"],
)
def test_non_cbor_bytes(block: bytes) -> None:
    with pytest.raises(DeltaError):
        decode_delta(make_cid(DAG_CBOR, block), block)


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data[field] = value

    return mutate


def _drop(field: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        del data[field]

    return mutate


def _op(index: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["ops"][0][index] = value

    return mutate


def _ops(value: Any) -> Callable[[dict[str, Any]], None]:
    return _set("ops", value)


MANY_LINKS = [make_cid(DAG_CBOR, i.to_bytes(4, "big")) for i in range(MAX_LINKS + 1)]
MANY_REMOVED = [make_cid(DAG_CBOR, b"r" + i.to_bytes(4, "big")) for i in range(MAX_REMOVED + 1)]

MAP_CASES: dict[str, Callable[[dict[str, Any]], None]] = {
    # version
    "v-missing": _drop("v"),
    "v-2": _set("v", 2),
    "v-0": _set("v", 0),
    "v-str": _set("v", "1"),
    "v-null": _set("v", None),
    "v-bytes": _set("v", b"\x01"),
    # height
    "height-missing": _drop("height"),
    "height-0": _set("height", 0),
    "height-negative": _set("height", -2),
    "height-str": _set("height", "2"),
    "height-float": _set("height", 2.0),
    "height-bool": _set("height", True),
    "height-null": _set("height", None),
    "height-over-max": _set("height", MAX_HEIGHT + 1),
    "height-huge": _set("height", 2**64 - 1),
    # node
    "node-missing": _drop("node"),
    "node-int": _set("node", 5),
    "node-bytes": _set("node", b"12D3"),
    "node-null": _set("node", None),
    "node-too-long": _set("node", "n" * 257),
    # links
    "links-missing": _drop("links"),
    "links-null": _set("links", None),
    "links-a-cid-not-a-list": _set("links", cid_obj(LINK)),
    "links-map": _set("links", {"a": cid_obj(LINK)}),
    "link-as-cid-object": _set("links", [cid_obj(LINK)]),
    "link-as-str": _set("links", [str(cid_obj(LINK))]),
    "link-int": _set("links", [1]),
    "link-null": _set("links", [None]),
    "link-cidv0": _set("links", [LINK[2:]]),
    "link-raw-codec": _set("links", [(make_cid(RAW, b"a parent delta"))]),
    "link-dag-pb": _set("links", [(make_cid(DAG_PB, b"a parent delta"))]),
    "too-many-links": _set("links", MANY_LINKS),
    # height and links together
    "height-1-with-links": _set("height", 1),
    "height-2-without-links": _set("links", []),
    # ops
    "ops-missing": _drop("ops"),
    "ops-empty": _ops([]),
    "ops-null": _ops(None),
    "ops-map": _ops({"k": [KEY, RECORD, []]}),
    "ops-bytes": _ops(KEY),
    "op-not-a-list": _ops([KEY]),
    "op-map": _ops([{"key": KEY, "value": RECORD, "removed": []}]),
    "op-two-items": _ops([[KEY, RECORD]]),
    "op-four-items": _ops([[KEY, RECORD, [], None]]),
    "op-empty": _ops([[]]),
    # keys
    "key-str": _op(0, "key"),
    "key-int": _op(0, 7),
    "key-null": _op(0, None),
    "key-empty": _op(0, b""),
    "key-too-long": _op(0, b"k" * (MAX_KEY + 1)),
    "key-twice": _ops([[KEY, RECORD, []], [KEY, None, []]]),
    "key-twice-not-adjacent": _ops([[KEY, RECORD, []], [b"other", None, []], [KEY, RECORD, []]]),
    # values
    "value-str": _op(1, "value"),
    "value-int": _op(1, 0),
    "value-list": _op(1, [RECORD]),
    "value-map": _op(1, {"v": RECORD}),
    "value-bool": _op(1, False),
    "value-cid": _op(1, cid_obj(LINK)),
    # superseded deltas
    "removed-null": _op(2, None),
    "removed-bytes": _op(2, REMOVED),
    "removed-map": _op(2, {"r": REMOVED}),
    "removed-cid-object": _op(2, [cid_obj(REMOVED)]),
    "removed-short": _op(2, [REMOVED[:-1]]),
    "removed-long": _op(2, [REMOVED + b"\x00"]),
    "removed-cidv0": _op(2, [REMOVED[2:]]),
    "removed-raw-codec": _op(2, [make_cid(RAW, b"a superseded delta")]),
    "removed-sha512": _op(2, [b"\x01\x71\x13\x40" + bytes(64)]),
    "removed-str": _op(2, ["bafy"]),
    "too-many-removed": _op(2, MANY_REMOVED),
}


@pytest.mark.parametrize("case", sorted(MAP_CASES))
def test_decode_delta_rejects(case: str) -> None:
    data = base_map()
    MAP_CASES[case](data)
    rejects(data)


@pytest.mark.parametrize(
    "value", [[1, 2], "delta", 5, None, b"bytes", True, 1.5, []], ids=lambda v: type(v).__name__
)
def test_decode_delta_rejects_what_is_not_a_map(value: Any) -> None:
    rejects(value)


def test_version_must_be_the_integer_1() -> None:
    """``{"v": true}`` and ``{"v": 1.0}`` compare equal to 1 in Python, but are not version 1."""
    for version in (True, 1.0):
        data = base_map()
        data["v"] = version
        rejects(data)


def test_heads_version_must_be_the_integer_1() -> None:
    for version in (True, 1.0):
        with pytest.raises(DeltaError):
            decode_heads(dag_cbor.encode({"v": version, "heads": [[LINK, 1]]}))


def test_an_oversized_block_is_refused_before_it_is_hashed_or_decoded() -> None:
    delta_map = base_map()
    delta_map["ops"] = [[KEY, b"\x01" * MAX_BLOCK, []]]
    cid, block = cbor(delta_map)
    assert len(block) > MAX_BLOCK
    with pytest.raises(DeltaError, match="limit"):
        decode_delta(cid, block)


def test_a_block_just_under_the_limit_decodes() -> None:
    delta_map = base_map()
    delta_map["ops"] = [[KEY, b"\x01" * (MAX_BLOCK - 200), []]]
    cid, block = cbor(delta_map)
    assert len(block) <= MAX_BLOCK
    assert decode_delta(cid, block).ops[0].value == b"\x01" * (MAX_BLOCK - 200)


def test_extra_fields_are_ignored() -> None:
    data = base_map()
    data["extra"] = {"anything": [1, 2, 3]}
    cid, block = cbor(data)
    assert decode_delta(cid, block).height == 2


# --------------------------------------------------------------------------- heads


def test_heads_round_trip() -> None:
    heads = [(make_cid(DAG_CBOR, i.to_bytes(2, "big")), i + 1) for i in range(10)]
    assert decode_heads(encode_heads(heads)) == heads
    assert decode_heads(encode_heads([])) == []
    top = [(LINK, MAX_HEIGHT)]
    assert decode_heads(encode_heads(top)) == top


def test_encode_heads_keeps_at_most_max_heads() -> None:
    heads = [(make_cid(DAG_CBOR, i.to_bytes(2, "big")), 1) for i in range(MAX_HEADS + 10)]
    decoded = decode_heads(encode_heads(heads))
    assert decoded == heads[:MAX_HEADS]


def heads_map(entries: Any) -> dict[str, Any]:
    return {"v": 1, "heads": entries}


HEADS_CASES: dict[str, Any] = {
    "not-a-map": [[LINK, 1]],
    "int": 1,
    "str": "heads",
    "v-missing": {"heads": []},
    "v-2": {"v": 2, "heads": []},
    "v-str": {"v": "1", "heads": []},
    "heads-missing": {"v": 1},
    "heads-null": heads_map(None),
    "heads-map": heads_map({"a": 1}),
    "heads-bytes": heads_map(LINK),
    "too-many-heads": heads_map([[LINK, 1]] * (MAX_HEADS + 1)),
    "entry-cid-only": heads_map([LINK]),
    "entry-one-item": heads_map([[LINK]]),
    "entry-three-items": heads_map([[LINK, 1, 2]]),
    "entry-map": heads_map([{"cid": LINK, "height": 1}]),
    "entry-cid-as-object": heads_map([[cid_obj(LINK), 1]]),
    "entry-cid-as-str": heads_map([[str(cid_obj(LINK)), 1]]),
    "entry-cidv0": heads_map([[LINK[2:], 1]]),
    "entry-raw-codec": heads_map([[(make_cid(RAW, b"x")), 1]]),
    "entry-dag-pb": heads_map([[(make_cid(DAG_PB, b"x")), 1]]),
    "height-0": heads_map([[LINK, 0]]),
    "height-negative": heads_map([[LINK, -1]]),
    "height-str": heads_map([[LINK, "1"]]),
    "height-float": heads_map([[LINK, 1.0]]),
    "height-bool": heads_map([[LINK, True]]),
    "height-null": heads_map([[LINK, None]]),
    "height-over-max": heads_map([[LINK, MAX_HEIGHT + 1]]),
    "one-bad-after-good": heads_map([[LINK, 1], [LINK, 0]]),
}


@pytest.mark.parametrize("case", sorted(HEADS_CASES))
def test_decode_heads_rejects(case: str) -> None:
    with pytest.raises(DeltaError):
        decode_heads(dag_cbor.encode(HEADS_CASES[case]))


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff", b"\xff" * 10, b"\xa1\x61v\x02", encode_heads([]) + b"x", b"\x5a\xff\xff\xff\xff"],
    ids=["empty", "break", "junk", "v2", "trailing", "huge-length"],
)
def test_decode_heads_rejects_garbage(data: bytes) -> None:
    with pytest.raises(DeltaError):
        decode_heads(data)


def test_decode_heads_rejects_an_oversized_message() -> None:
    data = dag_cbor.encode({"v": 1, "heads": [], "pad": b"\x00" * (64 * 1024)})
    with pytest.raises(DeltaError):
        decode_heads(data)


# --------------------------------------------------------------------------- fuzz


def _mutate(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        at = rng.randrange(len(raw) + 1)
        if kind == 0 and raw:  # flip one bit
            at = min(at, len(raw) - 1)
            raw[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and raw:  # replace a byte
            at = min(at, len(raw) - 1)
            raw[at] = rng.randrange(256)
        elif kind == 2:  # insert bytes
            raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif kind == 3 and raw:  # delete bytes
            del raw[at : at + rng.randint(1, 8)]
        elif kind == 4:  # truncate
            del raw[at:]
        else:  # duplicate a slice somewhere else
            start = rng.randrange(len(raw) + 1)
            piece = raw[start : start + rng.randint(1, 16)]
            raw[at:at] = piece
    return bytes(raw)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.randint(-(2**64) + 1, 2**64 - 1),
        lambda: rng.choice([0, 1, 2, -1, MAX_HEIGHT, MAX_HEIGHT + 1]),
        rng.random,
        lambda: rng.randbytes(rng.choice([0, 1, 35, 36, 37])),
        lambda: REMOVED,
        lambda: "".join(rng.choice("ab✓") for _ in range(rng.randrange(4))),
        lambda: cid_obj(rng.choice([LINK, LINK[2:], make_cid(RAW, b"x"), make_cid(DAG_PB, b"y")])),
    ]
    if depth < 3:
        choices.append(lambda: [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))])
        choices.append(lambda: {"v": _random_value(rng, depth + 1), "k": _random_value(rng, depth + 1)})
    return rng.choice(choices)()


def _structural_mutation(rng: random.Random) -> Any:
    data: Any = base_map()
    target = rng.randrange(5)
    if target == 0:
        data[rng.choice(["v", "height", "node", "links", "ops"])] = _random_value(rng)
    elif target == 1:
        data["links"] = [_random_value(rng) for _ in range(rng.randrange(3))]
    elif target == 2:
        op = [_random_value(rng) if rng.random() < 0.4 else part for part in data["ops"][0]]
        data["ops"][0] = op
    elif target == 3:
        data["ops"][0][2] = [_random_value(rng) for _ in range(rng.randrange(3))]
    else:
        data = _random_value(rng)
    return data


def test_fuzz_decode_delta_raises_only_delta_error() -> None:
    rng = random.Random(20240611)
    _cid, valid = encode_delta(
        Delta(
            3,
            (LINK, OTHER_LINK),
            (Op(KEY, RECORD, (REMOVED,)), Op(KEY + b"2", None, ()), Op(KEY + b"3", b"", (REMOVED,))),
            "12D3KooWfuzz",
        )
    )
    decoded = 0
    for i in range(2000):
        if i % 4 == 3:
            try:
                cid, block = cbor(_structural_mutation(rng))
            except Exception:  # the encoder refused what was generated: nothing to decode
                continue
        else:
            block = _mutate(rng, valid)
            cid = make_cid(DAG_CBOR, block)
            if i % 50 == 0:
                cid = _mutate(rng, cid)  # sometimes a damaged CID too
        try:
            delta = decode_delta(cid, block)
        except DeltaError:
            continue
        decoded += 1
        # what does decode respects every documented rule
        assert isinstance(delta, Delta)
        assert 1 <= delta.height <= MAX_HEIGHT
        assert (delta.height == 1) == (not delta.links)
        assert len(delta.links) <= MAX_LINKS
        assert 1 <= len({op.key for op in delta.ops}) == len(delta.ops)
        for op in delta.ops:
            assert isinstance(op.key, bytes) and 1 <= len(op.key) <= MAX_KEY
            assert op.value is None or isinstance(op.value, bytes)
            assert len(op.removed) <= MAX_REMOVED
            assert all(len(r) == 36 and r.startswith(b"\x01\x71\x12\x20") for r in op.removed)
    assert decoded > 0  # some mutations keep a valid delta (a changed byte inside a value)


def _decode_with_dag_cbor(cid: bytes, block: bytes) -> Delta | str:
    """What decode_delta gave before its fast path: dag_cbor decides every block (an error as text)."""
    from msuite.runtime.shared.delta import _delta_of

    try:
        if len(block) > MAX_BLOCK or make_cid(DAG_CBOR, block) != cid:
            return "size or CID"
        try:
            data = dag_cbor.decode(block)
        except Exception as exc:
            return f"not DAG-CBOR: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        return _delta_of(data)
    except DeltaError as exc:
        return str(exc)


def test_the_fast_decoder_decides_every_block_as_dag_cbor_does() -> None:
    """decode_delta reads canonical blocks with a parser of its own: for valid deltas, damaged
    ones, and valid DAG-CBOR that is not what encode_delta writes (keys in another order, an
    extra field, a longer head than needed), the outcome must be the one dag_cbor gave."""
    rng = random.Random(515)
    deltas = [*sample_deltas(), *_generated_deltas()]
    blocks = [b for b in map(_delta_cbor, deltas) if len(b) <= MAX_BLOCK]
    odd = [
        dict(reversed(base_map().items())),  # keys out of canonical order: dag_cbor sorts them back
        {**base_map(), "extra": [1, b"x"]},  # an extra field (ignored)
        {**base_map(), "height": 2**64 - 1},  # a height over the limit
        {**base_map(), "ops": [[KEY, RECORD, [REMOVED]], [KEY, None, []]]},  # a key twice
    ]
    blocks += [dag_cbor.encode(m) for m in odd]
    _cid, long_head = encode_delta(Delta(2, (LINK,), (Op(KEY, None, ()),), "n"))
    blocks.append(long_head.replace(b"\x66height\x02", b"\x66height\x18\x02"))  # not the shortest
    blocks.append(long_head + b"\x00")  # bytes after the value
    for block in list(blocks):
        for _ in range(30 if len(block) < 100_000 else 2):
            blocks.append(_mutate(rng, block))
    fast = 0
    for block in blocks:
        cid = make_cid(DAG_CBOR, block)
        expected = _decode_with_dag_cbor(cid, block)
        try:
            got: Delta | str = decode_delta(cid, block)
        except DeltaError as exc:
            got = str(exc)
        assert got == expected, block.hex()[:120]
        fast += isinstance(got, Delta)
    assert fast > len(sample_deltas())


def test_fuzz_decode_heads_raises_only_delta_error() -> None:
    rng = random.Random(7)
    valid = encode_heads([(LINK, 3), (OTHER_LINK, 2), (REMOVED, 1)])
    for i in range(1000):
        if i % 3 == 2:
            try:
                data = dag_cbor.encode(
                    {"v": 1, "heads": [[_random_value(rng), _random_value(rng)] for _ in range(2)]}
                    if i % 2
                    else _random_value(rng)
                )
            except Exception:
                continue
        else:
            data = _mutate(rng, valid)
        try:
            heads = decode_heads(data)
        except DeltaError:
            continue
        for cid, height in heads:
            assert cid[:2] == b"\x01\x71" and 1 <= height <= MAX_HEIGHT
