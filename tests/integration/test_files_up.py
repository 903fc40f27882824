"""File sharing between two ``msuite up`` processes, through their /ipfs HTTP routes, both ways; a
node killed with SIGKILL keeps its pinned files (issue 15)."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

from tests.integration.test_up import Up

MANIFEST = """\
name: share
p2p:
  port: 0
{bootstrap}http:
  port: 0
  max_body_size: 64MiB   # uploads to /ipfs are request bodies (1 MiB by default)
files: true
"""


def start(folder: Path, bootstrap: str | None = None) -> Up:
    folder.mkdir(exist_ok=True)
    extra = f"  bootstrap: [{bootstrap}]\n" if bootstrap else ""
    (folder / "msuite.yaml").write_text(MANIFEST.format(bootstrap=extra))
    up = Up(folder)
    up.wait_ready(2)
    return up


def upload(base: str, data: bytes) -> str:
    request = urllib.request.Request(f"{base}/ipfs", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        answer = json.loads(response.read())
    assert answer["size"] == len(data)
    cid: str = answer["cid"]
    return cid


def download(base: str, cid: str) -> bytes:
    with urllib.request.urlopen(f"{base}/ipfs/{cid}", timeout=60) as response:
        data: bytes = response.read()
    return data


def status(base: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{base}/status", timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


def test_two_up_processes_share_files_both_ways_and_survive_a_kill(tmp_path: Path) -> None:
    big = hashlib.shake_256(b"msuite").digest(5 * 1024 * 1024 + 17)
    small = b"hello from b\n"
    a = start(tmp_path / "a")
    b: Up | None = None
    try:
        b = start(tmp_path / "b", bootstrap=a.listeners["p2p"])
        a_http, b_http = a.listeners["http"], b.listeners["http"]
        big_cid = upload(a_http, big)
        small_cid = upload(b_http, small)
        assert download(b_http, big_cid) == big
        assert download(a_http, small_cid) == small
        peers = status(a_http)["files"]["bitswap"]["peers"]  # type: ignore[index]
        assert sum(p["blocks_sent"] for p in peers.values()) == 22  # 21 leaves and the root
        a.process.kill()  # SIGKILL: no shutdown at all
        a.process.wait(10)
        a.kill()
        a = Up(tmp_path / "a")
        a.wait_ready(2)
        assert download(a.listeners["http"], big_cid) == big  # from its own blockstore
        files = status(a.listeners["http"])["files"]
        assert files["pins"] == 1 and files["corrupt_blocks"] == 0  # type: ignore[index]
    finally:
        for up in (b, a):
            if up is not None:
                up.kill()
