"""Log output for ``msuite up``, from the manifest's ``logging:`` section.

``text``: ``2026-11-27T21:00:00.123Z INFO msuite.grpc: message``.
``json``: one JSON object a line with ``time``, ``level``, ``logger``,
``message``, any ``extra`` fields, and ``exc`` (the stack) when there is one.
A library user embedding :class:`~msuite.runtime.node.Node` keeps their own
logging: only the command line calls :func:`configure`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from msuite.spec import Logging

__all__ = ["JSONFormatter", "configure"]

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` lines, UTC."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(settings: Logging, stream: TextIO | None = None) -> None:
    """Route all logging to ``stream`` (stderr) at ``settings.level`` in ``settings.format``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
