"""``Range`` and ``If-None-Match`` for downloads (RFC 9110), as pure functions: used by the
node's ``/ipfs`` routes and by applications serving files (samples/cdn).

- One range per request, ``bytes=START-END``, ``bytes=START-`` or ``bytes=-SUFFIX``: an end past
  the file is cut to the file; a start at or past the end (or an empty suffix) is unsatisfiable
  (416). Several ranges, an end before its start, or anything else, are a 400: multipart
  answers are not served.
- ``If-None-Match``: ``*`` or a list of entity tags, weak ones (``W/"..."``) compared weakly.
"""

from __future__ import annotations

import re

from msuite import MsuiteError

__all__ = ["BadRange", "Unsatisfiable", "etag_matches", "parse_range"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class BadRange(MsuiteError, ValueError):
    """A ``Range`` header that is not served (400)."""


class Unsatisfiable(MsuiteError, LookupError):
    """A range outside the file (416)."""


def parse_range(header: str, size: int) -> tuple[int, int]:
    """(offset, length) of the one range in ``header`` for a file of ``size`` bytes."""
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise BadRange(f"only one range of the form bytes=START-END is served, not {header!r}")
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        length = min(int(last), size)
        if length == 0:
            raise Unsatisfiable(f"range {header!r}: an empty suffix of a {size}-byte file")
        return size - length, length
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        raise BadRange(f"range {header!r} ends before it starts")
    if start >= size:
        raise Unsatisfiable(f"range {header!r} starts past the {size} bytes of the file")
    return start, end - start + 1


def etag_matches(header: str, etag: str) -> bool:
    """Whether ``If-None-Match: header`` matches the (strong, quoted) ``etag``."""
    for listed in header.split(","):
        tag = listed.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
