"""The exported JSON Schema: in sync with the models, and usable by other validators."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from msuite.spec import load_manifest, manifest_schema, manifest_schema_text
from msuite.spec.interpolate import interpolate
from tests.helpers import REPO

SCHEMA_FILE = REPO / "schemas" / "msuite.schema.json"
SAMPLES = sorted(REPO.glob("samples/*/msuite.yaml"))


def plain_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def test_committed_schema_matches_the_models() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == manifest_schema_text(), (
        "schemas/msuite.schema.json is stale: run `msuite schema -o schemas/msuite.schema.json`"
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = manifest_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["name"]
    assert schema["additionalProperties"] is False


def test_schema_documents_every_property() -> None:
    schema = manifest_schema()
    undocumented = []
    for name, definition in [("Manifest", schema), *schema["$defs"].items()]:
        for prop, body in definition.get("properties", {}).items():
            if "description" not in body:
                undocumented.append(f"{name}.{prop}")
    assert undocumented == []


def test_there_are_samples() -> None:
    assert SAMPLES, "samples/ has no manifests"


SAMPLE_ENV = {"SAMPLES_JWT_SECRET": "the-samples-secret-of-at-least-32-bytes"}
"""What the samples read from the environment and have no default for (their READMEs say so)."""


@pytest.mark.parametrize("manifest", SAMPLES, ids=lambda p: p.parent.name)
def test_samples_pass_the_third_party_validator(manifest: Path) -> None:
    # ${VAR:-default} placeholders filled in as msuite does, with the samples' documented env
    text = interpolate(manifest.read_text(encoding="utf-8"), SAMPLE_ENV)
    jsonschema.Draft202012Validator(manifest_schema()).validate(YAML(typ="safe", pure=True).load(text))


@pytest.mark.parametrize("manifest", SAMPLES, ids=lambda p: p.parent.name)
def test_samples_pass_msuite_validate(manifest: Path) -> None:
    load_manifest(manifest, env=SAMPLE_ENV)


def readme_manifest() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
    return next(b for b in blocks if "apiVersion: msuite/v1" in b)


def test_readme_example_is_a_valid_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_text(readme_manifest(), encoding="utf-8")
    (tmp_path / "protos").mkdir()
    (tmp_path / "protos" / "notes.proto").write_text('syntax = "proto3";\n')
    env = {**os.environ, "NOTES_JWT_SECRET": "x" * 40}
    m = load_manifest(path, env=env)
    assert m.name == "notes"
    monkeypatch.setenv("NOTES_JWT_SECRET", "x" * 40)
    data = plain_yaml(path)
    data["auth"]["jwt"]["secret"] = "x" * 40  # the schema sees the interpolated value
    jsonschema.Draft202012Validator(manifest_schema()).validate(data)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"name": "x", "grcp": {}},
        {"name": "x", "http": {"port": 70000}},
        {"name": "x", "shutdown": {"grace": "10 seconds"}},
        {"name": "x", "auth": {"acl": {"/a": 3}}},  # a role's name: the ladder is the manifest's own
        {"name": "x", "auth": {"roles": ["Editor"]}},
    ],
)
def test_schema_rejects_what_the_models_reject(bad: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(manifest_schema()).validate(bad)


def test_schema_text_is_stable() -> None:
    assert manifest_schema_text() == manifest_schema_text()
    assert json.loads(manifest_schema_text()) == manifest_schema()


@pytest.mark.parametrize(
    "section",
    [
        {"p2p": True, "files": True},
        {"p2p": False, "files": False},
        {"diagnostics": {"metrics": True, "tracing": True}},
        {"locker": {"backend": "redis", "url": "redis://127.0.0.1:6379", "tls": True}},
        {"discovery": {"tls": True}},
    ],
)
def test_sections_turned_on_by_true_validate_against_the_schema(section: dict[str, Any]) -> None:
    """`key: true` (defaults) and `key: false` (off) pass the models, so they pass the schema too
    (they were refused by the schema alone)."""
    from msuite.spec import Manifest
    from msuite.spec.models import DEFER_CHECKS

    data = {"name": "n", **section}
    Manifest.model_validate(data, context={DEFER_CHECKS: True})
    jsonschema.Draft202012Validator(manifest_schema()).validate(data)
