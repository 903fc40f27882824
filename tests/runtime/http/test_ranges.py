"""``Range`` and ``If-None-Match`` parsing (msuite.runtime.http.ranges), shared by /ipfs and samples/cdn."""

from __future__ import annotations

import pytest

from msuite.runtime.http.ranges import BadRange, Unsatisfiable, etag_matches, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 10)),
        ("bytes=-5", 100, (95, 5)),
        ("bytes=-500", 100, (0, 100)),  # a suffix longer than the file: all of it
        ("bytes=95-1000", 100, (95, 5)),  # an end past the file is cut to it
        (" bytes=0-0 ", 100, (0, 1)),
    ],
)
def test_one_range_gives_offset_and_length(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "items=0-1", "bytes=-", "bytes=a-b", "bytes=9-3", ""])
def test_what_is_not_one_range_is_a_bad_range(header: str) -> None:
    with pytest.raises(BadRange):
        parse_range(header, 100)


@pytest.mark.parametrize(("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)])
def test_a_range_outside_the_file_is_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"abc"', True),
        ("*", True),
        ('"x", "abc"', True),
        ('W/"abc"', True),  # weak comparison, as RFC 9110 asks for If-None-Match
        ('"abcd"', False),
        ('"xabcx"', False),
        ("", False),
    ],
)
def test_if_none_match_compares_whole_tags(header: str, matches: bool) -> None:
    assert etag_matches(header, '"abc"') is matches
