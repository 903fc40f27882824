"""``logging:`` for msuite up: level and text or JSON lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from msuite.runtime.logs import configure
from msuite.spec import Logging


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_extra_fields_and_the_stack() -> None:
    out = io.StringIO()
    configure(Logging(level="info", format="json"), out)
    log = logging.getLogger("msuite.test")
    log.debug("not shown")
    log.info("GET %s", "/x", extra={"status": 200})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    assert [(e["level"], e["logger"], e["message"]) for e in lines] == [
        ("info", "msuite.test", "GET /x"),
        ("error", "msuite.test", "failed"),
    ]
    assert lines[0]["status"] == 200 and lines[0]["time"].endswith("Z")
    assert "ValueError: boom" in lines[1]["exc"]


def test_text_lines_at_the_configured_level() -> None:
    out = io.StringIO()
    configure(Logging(level="warning", format="text"), out)
    logging.getLogger("msuite.test").info("hidden")
    logging.getLogger("msuite.test").warning("shown %d", 1)
    [line] = out.getvalue().splitlines()
    assert line.endswith(" WARNING msuite.test: shown 1")
