"""The manifest's JSON Schema, exported from the models.

``schemas/msuite.schema.json`` in the repository is this output; a test fails
when the two drift apart. Editors that speak the YAML language server
protocol use it for completion and checks
(``# yaml-language-server: $schema=...``).
"""

from __future__ import annotations

import json
from typing import Any

from .models import Manifest

__all__ = ["SCHEMA_ID", "manifest_schema", "manifest_schema_text"]

SCHEMA_ID = "urn:msuite:manifest:v1"


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an ``msuite.yaml`` file."""
    schema = Manifest.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "msuite manifest (msuite.yaml)",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def manifest_schema_text() -> str:
    """:func:`manifest_schema` as stable, pretty-printed JSON with a final newline."""
    return json.dumps(manifest_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
