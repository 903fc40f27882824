"""The events envelope: docs/events.md's example decodes, every field type survives, the JSON is standard."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from msuite.runtime.events.envelope import MAX_SIZE, Decoded, Decoder, Rejected, encode, new_session
from msuite.runtime.wiring import Event

DOC = Path(__file__).resolve().parents[3] / "docs" / "events.md"


class NoteCreated(Event):
    id: str
    title: str
    tags: list[str] | None = None


class Everything(Event):
    text: str
    number: int
    ratio: float
    flag: bool
    blob: bytes
    at: datetime
    many: list[int]
    maybe: str | None = None


def strict_json(raw: bytes) -> object:
    """``json.loads`` refusing what RFC 8259 does not allow (NaN, Infinity)."""

    def refuse(token: str) -> object:
        raise ValueError(f"not standard JSON: {token}")

    return json.loads(raw, parse_constant=refuse)


def test_the_example_of_the_docs_decodes_to_its_event() -> None:
    example = re.search(r"```json\n(.*?)```", DOC.read_text(), re.S)
    assert example is not None
    raw = example.group(1).replace("\n", "").encode()
    decoded = Decoder(NoteCreated).decode(raw)
    assert isinstance(decoded, Decoded)
    assert decoded.event == NoteCreated(id="n1", title="hello")
    assert decoded.id == "4f0c2b9d8e7a6b5c4d3e2f1a0b9c8d7e"
    assert decoded.time == datetime(2026, 12, 3, 6, 4, 12, 123456, tzinfo=UTC)
    assert (decoded.session, decoded.seq) == ("9a8b7c6d5e4f3a2b", 42)


def test_every_field_type_round_trips_through_standard_json() -> None:
    event = Everything(
        text="héllo ✓",
        number=-(2**62),
        ratio=math.inf,
        flag=True,
        blob=bytes(range(256)),
        at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2))),
        many=[1, 2, 3],
    )
    moment = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    raw = encode(event, event_id="abc", time=moment, session="s" * 16, seq=7)
    wire = strict_json(raw)
    assert isinstance(wire, dict)
    assert wire["data"]["ratio"] == "Infinity" and wire["data"]["maybe"] is None
    assert wire["time"] == "2026-12-03T06:00:00.000000Z"
    decoded = Decoder(Everything).decode(raw)
    assert isinstance(decoded, Decoded)
    assert decoded.event == event and decoded.event.at.utcoffset() == timedelta(hours=2)
    assert (decoded.id, decoded.time, decoded.seq) == ("abc", moment, 7)
    nan = Decoder(Everything).decode(raw.replace(b'"Infinity"', b'"NaN"'))
    assert isinstance(nan, Decoded) and math.isnan(nan.event.ratio)


def test_a_time_without_an_offset_is_taken_as_utc() -> None:
    raw = json.dumps(
        {
            "v": 1,
            "type": "NoteCreated",
            "id": "x",
            "time": "2026-12-03T06:00:00",
            "data": {"id": "1", "title": "t"},
        }
    ).encode()
    decoded = Decoder(NoteCreated).decode(raw)
    assert isinstance(decoded, Decoded) and decoded.time == datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    assert decoded.session is None and decoded.seq is None


def test_what_does_not_fit_is_rejected_by_reason_without_the_peers_input() -> None:
    decoder = Decoder(NoteCreated)

    def envelope(**fields: object) -> bytes:
        body: dict[str, object] = {"v": 1, "type": "NoteCreated", "id": "x", "time": "2026-12-03T06:00:00Z"}
        body["data"] = {"id": "1", "title": "t"}
        return json.dumps({**body, **fields}).encode()

    cases = {
        "too_large": b" " * (MAX_SIZE + 1),
        "undecodable": envelope(id=""),
        "version": envelope(v=2, data="anything"),
        "unknown_type": envelope(type="Other", data=[]),
        "invalid": envelope(data={"id": "1", "title": ["secret-input"]}),
    }
    for reason, raw in cases.items():
        result = decoder.decode(raw)
        assert isinstance(result, Rejected), reason
        assert result.reason == reason, (reason, result)
        assert "secret-input" not in result.detail
    assert decoder.decode(envelope(session="s")) == Rejected(
        "undecodable", "session and seq come together or not at all"
    )
    assert isinstance(decoder.decode(envelope(seq=0, session="s")), Rejected)  # seq counts from 1
    assert isinstance(decoder.decode(envelope(id="i" * 129)), Rejected)


def test_sessions_are_fresh_hex() -> None:
    sessions = {new_session() for _ in range(100)}
    assert len(sessions) == 100 and all(re.fullmatch(r"[0-9a-f]{16}", s) for s in sessions)
