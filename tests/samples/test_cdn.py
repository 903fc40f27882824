"""samples/cdn end to end: two real ``msuite up`` processes of the sample, on one mesh.

Each node runs a copy of ``samples/cdn`` (its committed ``gen/`` included) with free ports, its
own repository and the sample's environment variables; the second dials the first
(``SAMPLES_SEED``) and runs with ``http.max_body_size`` lowered to 4 MiB. Files go up to one node
and come down from the other: the name -> CID index through the shared store, the bytes over
Bitswap. Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from msuite.runtime.auth import JWTAuth
from msuite.runtime.node import Node
from msuite.spec import JWT, P2P, Manifest, Roles
from tests.integration.test_up import Up

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "cdn"
SECRET = "cdn-test-secret-0123456789abcdef-0123456789"
BIG = hashlib.shake_256(b"cdn sample").digest(3 * 1024 * 1024 + 11)  # 13 chunks of 256 KiB
EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # Kubo's CID of no bytes


def token(role: str = "user") -> str:
    """A token the cdn accepts, minted as the sample's README shows."""
    return JWTAuth(JWT(secret=SECRET), roles=Roles(["user", "service", "admin"])).issue("tester", role)


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class CdnNode:
    """A running cdn node and its HTTP base URL."""

    def __init__(self, up: Up) -> None:
        self.up = up
        self.base = up.listeners["http"]
        parsed = urllib.parse.urlsplit(self.base)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80

    def call(
        self,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            chunked = body is not None and not isinstance(body, bytes)
            connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()

    def put(self, name: str, data: bytes, content_type: str | None = None, auth: bool = True) -> Answer:
        headers = {"Authorization": f"Bearer {token()}"} if auth else {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self.call("PUT", f"/cdn/files/{name}", data, headers)

    def delete(self, name: str, auth: bool = True) -> Answer:
        headers = {"Authorization": f"Bearer {token()}"} if auth else {}
        return self.call("DELETE", f"/cdn/files/{name}", None, headers)

    def names(self, prefix: str | None = None) -> list[str]:
        query = "" if prefix is None else "?" + urllib.parse.urlencode({"prefix": prefix})
        answer = self.call("GET", f"/cdn/files{query}")
        assert answer.status == 200, answer.body
        return [entry["name"] for entry in answer.json()["files"]]


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) until ``check()`` holds: the index reaches the other node a moment later."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.05)


def start(root: Path, name: str, env: dict[str, str], *args: str) -> Up:
    folder = root / name
    shutil.copytree(SAMPLE, folder, ignore=shutil.ignore_patterns(".msuite", "__pycache__"))
    with pytest.MonkeyPatch.context() as patch:  # Up passes this process's environment on
        for key, value in env.items():
            patch.setenv(key, value)
        up = Up(folder, *args)
    up.wait_ready(2)  # p2p, http (gRPC over libp2p prints no line of its own)
    return up


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CdnNode, CdnNode]]:
    root = tmp_path_factory.mktemp("cdn")
    env = {
        "SAMPLES_JWT_SECRET": SECRET,
        "CDN_HTTP_PORT": "0",
        "CDN_P2P_PORT": "0",
        "SAMPLES_SEED": "",
        "CDN_REPO": ".msuite",
    }
    ups: list[Up] = []
    try:
        ups.append(start(root, "cdn1", env))
        seed = {**env, "SAMPLES_SEED": ups[0].listeners["p2p"]}
        ups.append(start(root, "cdn2", seed, "--set", "http.max_body_size=4MiB"))
        yield CdnNode(ups[0]), CdnNode(ups[1])
        for up in reversed(ups):
            assert up.stop() == 0, up.stderr()
    finally:
        for up in reversed(ups):
            up.kill()


def test_a_file_uploaded_to_one_node_downloads_from_the_other(nodes: tuple[CdnNode, CdnNode]) -> None:
    one, two = nodes
    answer = one.put("big.bin", BIG, "image/png")
    assert answer.status == 201, answer.body
    uploaded = answer.json()
    cid = uploaded["cid"]
    assert uploaded == {
        "name": "big.bin",
        "cid": cid,
        "size": len(BIG),
        "content_type": "image/png",
        "created": uploaded["created"],
    }
    assert cid.startswith("bafybei")
    empty = one.put("empty", b"", "text/plain; charset=utf-8")
    assert empty.status == 201, empty.body
    assert empty.json()["cid"] == EMPTY_CID and empty.json()["size"] == 0

    until(lambda: two.call("HEAD", "/cdn/files/big.bin").status == 200)
    for path in ("/cdn/files/big.bin", f"/cdn/cid/{cid}"):
        got = two.call("GET", path)
        assert got.status == 200, (path, got.body)
        assert got.body == BIG
        assert got.headers["Content-Type"] == "image/png"
        assert got.headers["ETag"] == f'"{cid}"'
        assert got.headers["Accept-Ranges"] == "bytes"
        assert got.headers["Content-Length"] == str(len(BIG))
        head = one.call("HEAD", path)
        assert (head.status, head.body, head.headers["ETag"]) == (200, b"", f'"{cid}"')
        assert head.headers["Content-Length"] == str(len(BIG))

    until(lambda: two.call("HEAD", "/cdn/files/empty").status == 200)
    got = two.call("GET", "/cdn/files/empty")
    assert (got.status, got.body, got.headers["ETag"]) == (200, b"", f'"{EMPTY_CID}"')
    assert got.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert two.call("GET", f"/cdn/cid/{EMPTY_CID}").headers["Content-Type"] == "text/plain; charset=utf-8"
    assert two.call("GET", "/cdn/files/nothing-here").status == 404


def test_ranges_and_if_none_match(nodes: tuple[CdnNode, CdnNode]) -> None:
    one, two = nodes
    cid = one.put("ranged.bin", BIG).json()["cid"]
    until(lambda: two.call("HEAD", "/cdn/files/ranged.bin").status == 200)
    size = len(BIG)

    part = two.call("GET", "/cdn/files/ranged.bin", headers={"Range": "bytes=262140-262150"})
    assert part.status == 206 and part.body == BIG[262140:262151]  # across two chunks
    assert part.headers["Content-Range"] == f"bytes 262140-262150/{size}"
    tail = two.call("GET", f"/cdn/cid/{cid}", headers={"Range": "bytes=-5"})
    assert (tail.status, tail.body) == (206, BIG[-5:])
    assert tail.headers["Content-Range"] == f"bytes {size - 5}-{size - 1}/{size}"
    over = two.call("GET", "/cdn/files/ranged.bin", headers={"Range": f"bytes={size}-"})
    assert over.status == 416 and over.headers["Content-Range"] == f"bytes */{size}"
    assert over.json()["code"] == 11  # OUT_OF_RANGE
    several = two.call("GET", "/cdn/files/ranged.bin", headers={"Range": "bytes=0-1,5-6"})
    assert several.status == 400 and several.json()["code"] == 3

    for path in ("/cdn/files/ranged.bin", f"/cdn/cid/{cid}"):
        for tag in (f'"{cid}"', f'W/"{cid}"', f'"other", "{cid}"', "*"):
            cached = two.call("GET", path, headers={"If-None-Match": tag})
            assert (cached.status, cached.body) == (304, b""), (path, tag)
            assert cached.headers["ETag"] == f'"{cid}"'
        assert two.call("GET", path, headers={"If-None-Match": '"other"'}).status == 200


def test_the_list_is_the_same_on_both_nodes(nodes: tuple[CdnNode, CdnNode]) -> None:
    one, two = nodes
    for name in ("list-b", "list-a", "list-c", "other-list"):
        assert one.put(name, name.encode(), "text/plain").status == 201
    until(lambda: "other-list" in two.names())
    assert one.names() == two.names() == sorted(one.names())
    assert one.names("list-") == two.names("list-") == ["list-a", "list-b", "list-c"]
    entry = next(e for e in two.call("GET", "/cdn/files?prefix=list-a").json()["files"])
    assert set(entry) == {"name", "cid", "size", "content_type", "created"}
    assert (entry["size"], entry["content_type"]) == (6, "text/plain")


def test_writes_need_a_user_token_and_reads_none(nodes: tuple[CdnNode, CdnNode]) -> None:
    one, _ = nodes
    refused = one.put("anonymous", b"x", auth=False)
    assert refused.status == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert refused.json()["code"] == 16 and refused.json()["details"] == []
    forged = one.call("PUT", "/cdn/files/forged", b"x", {"Authorization": "Bearer not-a-token"})
    assert forged.status == 401
    assert one.call("POST", "/ipfs", b"x").status == 401  # the node's own upload route too
    assert "anonymous" not in one.names() and "forged" not in one.names()
    assert one.put("mine", b"x").status == 201
    assert one.delete("mine", auth=False).status == 401
    assert one.call("GET", "/cdn/files/mine").status == 200  # downloads are open


@pytest.mark.parametrize(
    "path",
    [
        "/cdn/files/",  # empty
        "/cdn/files/a/b",
        "/cdn/files/a%2Fb",
        "/cdn/files/a%01b",
        "/cdn/files/%2E%2E",
        "/cdn/files/" + "n" * 256,
    ],
    ids=["empty", "slash", "encoded-slash", "control-character", "dot-dot", "256-characters"],
)
def test_bad_names_are_400(nodes: tuple[CdnNode, CdnNode], path: str) -> None:
    one, _ = nodes
    for method, body in (("PUT", b"x"), ("GET", None), ("DELETE", None)):
        answer = one.call(method, path, body, {"Authorization": f"Bearer {token()}"})
        assert answer.status == 400, (method, path, answer.body)
        assert answer.json()["code"] == 3 and answer.json()["message"]


def test_the_longest_name_is_255_characters(nodes: tuple[CdnNode, CdnNode]) -> None:
    one, _ = nodes
    name = "n" * 255
    assert one.put(name, b"long").status == 201
    assert one.call("GET", f"/cdn/files/{name}").body == b"long"


def test_delete_removes_the_name_on_every_node(nodes: tuple[CdnNode, CdnNode]) -> None:
    one, two = nodes
    first = one.put("gone.txt", b"first", "text/plain").json()["cid"]
    second = one.put("gone.txt", b"second", "text/csv").json()["cid"]  # the name now points elsewhere
    assert first != second
    until(lambda: two.call("HEAD", "/cdn/files/gone.txt").headers.get("ETag") == f'"{second}"')
    assert two.call("GET", "/cdn/files/gone.txt").headers["Content-Type"] == "text/csv"

    deleted = two.delete("gone.txt")
    assert deleted.status == 200 and deleted.json()["cid"] == second
    assert two.call("GET", "/cdn/files/gone.txt").status == 404
    until(lambda: one.call("GET", "/cdn/files/gone.txt").status == 404)
    assert one.call("HEAD", "/cdn/files/gone.txt").status == 404
    assert "gone.txt" not in one.names() and "gone.txt" not in two.names()
    again = one.delete("gone.txt")
    assert again.status == 404 and again.json()["code"] == 5


def test_an_upload_over_max_body_size_is_413(nodes: tuple[CdnNode, CdnNode]) -> None:
    _, two = nodes  # its http.max_body_size is 4 MiB
    answer = two.put("huge", BIG + BIG)  # refused by its Content-Length, before a byte is read
    assert answer.status == 413 and answer.json()["code"] == 8
    data = BIG + BIG
    pieces = (data[i : i + 65536] for i in range(0, len(data), 65536))  # no length: counted as read
    headers = {"Authorization": f"Bearer {token()}", "Transfer-Encoding": "chunked"}
    streamed = two.call("PUT", "/cdn/files/huge", pieces, headers)
    assert streamed.status == 413 and streamed.json()["code"] == 8
    assert two.call("GET", "/cdn/files/huge").status == 404


def load_messages() -> Any:
    """The sample's generated messages (``gen/cdn_pb2.py``), without putting its ``gen`` on sys.path."""
    spec = importlib.util.spec_from_file_location("cdn_sample_pb2", SAMPLE / "gen" / "cdn_pb2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_stat_answers_over_libp2p_by_service_name(nodes: tuple[CdnNode, CdnNode]) -> None:
    one, _ = nodes
    cid = one.put("stat.txt", b"stat me", "text/plain").json()["cid"]
    messages = load_messages()
    seed = one.up.listeners["p2p"]
    manifest = Manifest(name="probe", repo=":memory:", p2p=P2P(port=0, bootstrap=(seed,), channel="samples"))
    async with Node(manifest) as probe:
        await probe.p2p.find_service("cdn.v1.Cdn", timeout=10)
        stat = probe.grpc.client("cdn.v1.Cdn").unary_unary(
            "/cdn.v1.Cdn/Stat",
            request_serializer=messages.StatRequest.SerializeToString,
            response_deserializer=messages.FileInfo.FromString,
        )
        info = await stat(messages.StatRequest(name="stat.txt"), timeout=10)
        assert (info.name, info.cid, info.size, info.content_type) == ("stat.txt", cid, 7, "text/plain")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stat(messages.StatRequest(name="no-such-file"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
