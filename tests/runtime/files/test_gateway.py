"""The /ipfs HTTP routes of a node with files and http: upload on one node, download on another."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multiformats import CID

from msuite.runtime.node import Node
from msuite.spec import Manifest

from .content import content
from .test_files import VECTORS, nodes


def url(node: Node, path: str) -> str:
    return f"{node.http.address}{path}"


async def test_upload_on_one_node_download_on_the_other(tmp_path: Path) -> None:
    data = content(700_000)
    async with nodes(2, tmp_path) as (a, b), aiohttp.ClientSession() as http:
        async with http.post(url(a, "/ipfs"), data=data) as response:
            assert response.status == 201
            answer = await response.json()
        assert answer["size"] == len(data)
        cid = answer["cid"]
        assert [str(c) for c in await a.files.pins()] == [cid]
        async with http.get(url(b, f"/ipfs/{cid}")) as response:
            assert response.status == 200
            assert await response.read() == data
            assert response.headers["ETag"] == f'"{cid}"'
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert "immutable" in response.headers["Cache-Control"]
        async with http.get(url(b, f"/ipfs/{cid}"), headers={"If-None-Match": f'"{cid}"'}) as response:
            assert response.status == 304
        # RFC 9110: "*" and weak tags match; a tag that merely contains the CID does not
        for header, status in [
            ("*", 304),
            (f'"other", W/"{cid}"', 304),
            (f'"x{cid}x"', 200),
            (f'"{cid}-gz"', 200),
        ]:
            async with http.get(url(b, f"/ipfs/{cid}"), headers={"If-None-Match": header}) as response:
                assert response.status == status, header
        async with http.head(url(b, f"/ipfs/{cid}")) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(len(data))
            assert await response.read() == b""


async def test_ranges(tmp_path: Path) -> None:
    data = content(600_000)
    async with nodes(2, tmp_path) as (a, b), aiohttp.ClientSession() as http:
        cid = str(await a.files.add(data))
        for header, start, end in [
            ("bytes=0-9", 0, 9),
            ("bytes=262140-262150", 262140, 262150),
            ("bytes=599990-", 599990, 599999),
            ("bytes=-5", 599995, 599999),
            ("bytes=599000-700000", 599000, 599999),
        ]:
            async with http.get(url(b, f"/ipfs/{cid}"), headers={"Range": header}) as response:
                assert response.status == 206, header
                assert response.headers["Content-Range"] == f"bytes {start}-{end}/600000"
                assert await response.read() == data[start : end + 1]
        async with http.get(url(b, f"/ipfs/{cid}"), headers={"Range": "bytes=600000-"}) as response:
            assert response.status == 416
            assert response.headers["Content-Range"] == "bytes */600000"
        async with http.get(url(b, f"/ipfs/{cid}"), headers={"Range": "bytes=1-2,5-6"}) as response:
            assert response.status == 400
            assert "one range" in (await response.json())["error"]
        async with http.get(url(b, f"/ipfs/{cid}"), headers={"Range": "bytes=9-3"}) as response:
            assert response.status == 400  # not a range at all (RFC 9110 14.1.1), not "outside the file"
            assert "ends before it starts" in (await response.json())["error"]


async def test_directories_paths_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(content(5))
    (folder / "b.bin").write_bytes(content(262145))
    (folder / "sub" / "c.txt").write_bytes(content(1000))
    async with nodes(2, tmp_path, timeout="1s") as (a, b), aiohttp.ClientSession() as http:
        cid = str(await a.files.add(folder))
        assert cid == VECTORS["directory"]["cid"]
        async with http.get(url(b, f"/ipfs/{cid}/sub/c.txt")) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain"
            assert response.headers["ETag"] != f'"{cid}"'  # the file's own CID
            assert await response.read() == content(1000)
        async with http.get(url(b, f"/ipfs/{cid}")) as response:
            listing = await response.json()
            assert [e["name"] for e in listing["entries"]] == ["a.txt", "b.bin", "sub"]
        async with http.get(url(b, f"/ipfs/{cid}/nope")) as response:
            assert response.status == 404
            assert "'nope' not found" in (await response.json())["error"]
        async with http.get(url(b, "/ipfs/not-a-cid")) as response:
            assert response.status == 400
        missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
        async with http.get(url(b, f"/ipfs/{missing}")) as response:
            assert response.status == 504
            assert missing in (await response.json())["error"]


async def test_an_upload_over_max_body_size_is_413_whether_its_length_is_given_or_not(tmp_path: Path) -> None:
    from .test_files import manifest

    data = manifest("small", tmp_path).model_dump(mode="json", exclude_unset=True)
    data["http"] = {"port": 0, "max_body_size": "1MiB"}
    big = content(3 * 1024 * 1024)

    async def chunks() -> Any:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    async with Node(Manifest.model_validate(data)) as node, aiohttp.ClientSession() as http:
        async with http.post(url(node, "/ipfs"), data=io.BytesIO(big)) as response:  # a Content-Length
            assert response.status == 413
        async with http.post(url(node, "/ipfs"), data=chunks()) as response:  # chunked
            assert response.status == 413
            assert "max_body_size" in (await response.json())["error"]
        assert await node.files.pins() == []
        at_limit = io.BytesIO(big[: 1024 * 1024])
        async with http.post(url(node, "/ipfs"), data=at_limit) as response:
            assert response.status == 201


async def test_a_block_missing_once_the_headers_are_out_cuts_the_body_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The root is there (200 and Content-Length go out), the leaves are not and no peer has
    them: the body ends short, the connection closes and the node logs why."""
    data = content(600_000)
    async with nodes(1, tmp_path, timeout="1s") as (a,), aiohttp.ClientSession() as http:
        cid = await a.files.add(data)
        root = bytes(CID.decode(str(cid)).digest)
        leaves = [key for key in a.files.store.keys() if key != root]  # noqa: SIM118 (a blockstore)
        assert len(leaves) == 3
        for key in leaves:
            assert a.files.store.delete(bytes([1, 0x55]) + key)  # a raw CID of that multihash
        async with http.get(url(a, f"/ipfs/{cid}")) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == "600000"
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    assert any("failed after the headers were sent" in r.getMessage() for r in caplog.records)
