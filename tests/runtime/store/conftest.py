"""Store fixtures: every store test runs on LevelDB (a real one, on disk) and on memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from msuite.runtime.repo import Repo
from msuite.runtime.store import Store


class Note(BaseModel):
    """A typical item: pydantic, with an id and both times."""

    store_namespace: ClassVar[str] = "notes"
    id: str | None = None
    title: str
    rank: int = 0
    created: datetime | None = None
    updated: datetime | None = None


class Frozen(BaseModel):
    """A frozen model without times: the store copies it and keeps times itself."""

    model_config = ConfigDict(frozen=True)
    id: str | None = None
    body: str


@dataclass(frozen=True)
class Blob:
    """A non-pydantic item with its own encoding."""

    id: str | None
    data: bytes
    store_namespace: ClassVar[str] = "blobs"

    def to_bytes(self) -> bytes:
        return self.data

    @classmethod
    def from_bytes(cls, data: bytes) -> Blob:
        if data.startswith(b"BAD"):
            raise ValueError("not a blob")
        return cls(None, data)


@pytest.fixture(params=["leveldb", "memory"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    if request.param == "leveldb":
        opened = Repo.open(tmp_path / "repo", kv="leveldb", sync=False)
    else:
        opened = Repo.open(":memory:")
    yield opened
    opened.close()


@pytest.fixture
def store(repo: Repo) -> Store:
    return repo.store
