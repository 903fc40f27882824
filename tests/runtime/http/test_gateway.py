"""The JSON-to-gRPC gateway, by behaviour: real gRPC server, real aiohttp app, real HTTP requests."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web

from msuite.runtime.errors import MsuiteError
from msuite.runtime.http.gateway import HTTP_STATUS, Gateway, GatewayRouteError
from msuite.runtime.wiring import Route
from tests.runtime.http.conftest import Generated, Node, serving

GET_ROOM = "/acme.chat.v1.Rooms/GetRoom"
ECHO = "/probe.v1.Probes/Echo"


def error(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    return {"code": code.value[0], "message": message, "details": []}


async def echo(node: Node, path: str, **kwargs: Any) -> dict[str, Any]:
    """GET a Probes/Echo route and return the probe it echoed."""
    response = await node.client.get(path, **kwargs)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    reply: dict[str, Any] = await response.json()
    return reply["probe"]


async def refused(node: Node, method: str, path: str, **kwargs: Any) -> str:
    """The message of a 400 the gateway answered itself (the servicer never ran)."""
    calls = len(node.seen.calls)
    response = await node.client.request(method, path, **kwargs)
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["code"] == 3 and body["details"] == [], body
    assert len(node.seen.calls) == calls, "the call must not start"
    message: str = body["message"]
    return message


def ndjson(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n") or not text
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------- routes and paths


async def test_get_with_a_path_parameter(node: Node) -> None:
    response = await node.client.get("/v1/rooms/abc")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert await response.json() == {"id": "abc", "title": "lobby"}
    assert node.resources == [GET_ROOM]


async def test_path_values_are_url_decoded(node: Node) -> None:
    response = await node.client.get("/v1/rooms/a%2Fb%20c%25+")
    assert (await response.json())["id"] == "a/b c%+"
    response = await node.client.get("/v1/rooms/caf%C3%A9")
    assert (await response.json())["id"] == "caf\u00e9"


async def test_additional_bindings_reach_the_same_method(node: Node) -> None:
    response = await node.client.get("/v1/room-by-id/xyz")
    assert await response.json() == {"id": "xyz", "title": "lobby"}
    assert node.resources == [GET_ROOM]


async def test_post_body_star_with_a_path_parameter(node: Node) -> None:
    response = await node.client.post("/v1/rooms/r1/messages", json={"text": "hello"})
    assert response.status == 200
    assert await response.json() == {"count": 5}
    assert node.resources == ["/acme.chat.v1.Chat/Send"]


async def test_path_values_override_the_body(node: Node) -> None:
    response = await node.client.post("/v1/probes/from-path", json={"name": "from-body", "i32": 7})
    probe = (await response.json())["probe"]
    assert (probe["name"], probe["i32"]) == ("from-path", 7)


async def test_empty_body_star_is_an_empty_request(node: Node) -> None:
    for body in (b"", b"  \n"):
        response = await node.client.post("/v1/rooms/r1/messages", data=body)
        assert response.status == 200
        assert await response.json() == {"count": 0}  # default-valued fields are written


async def test_patch_with_body_field(node: Node) -> None:
    response = await node.client.patch("/v1/rooms/r7", json={"id": "inner", "title": "renamed"})
    assert response.status == 200
    assert await response.json() == {"id": "r7", "title": "inner|renamed"}
    assert node.resources == ["/acme.chat.v1.Rooms/UpdateRoom"]
    # the body is the field itself, not the request: request fields are unknown there
    message = await refused(node, "PATCH", "/v1/rooms/r7", json={"room": {"title": "x"}})
    assert 'no field named "room"' in message
    # an empty body leaves the field unset
    response = await node.client.patch("/v1/rooms/r7")
    assert await response.json() == {"id": "r7", "title": "|"}


async def test_repeated_body_field_with_a_verb(node: Node) -> None:
    # POST /v1/probes/{name} (body "*") comes first in the table, but the verb wins, as in grpc-gateway
    response = await node.client.post("/v1/probes/p1:tag", json=["a", "b"])
    probe = (await response.json())["probe"]
    assert (probe["name"], probe["tags"]) == ("p1", ["a", "b"])
    response = await node.client.post("/v1/probes/p1:other", json={"tags": ["a"]})  # not a verb
    probe = (await response.json())["probe"]
    assert (probe["name"], probe["tags"]) == ("p1:other", ["a"])
    assert "tags" in await refused(node, "POST", "/v1/probes/p1:tag", json={"tags": ["a"]})


async def test_query_beside_a_body_field(node: Node) -> None:
    response = await node.client.post("/v1/probes/p1:tag?i32=5&inner.c=x", json=["a"])
    probe = (await response.json())["probe"]
    assert (probe["name"], probe["tags"], probe["i32"], probe["inner"]["c"]) == ("p1", ["a"], 5, "x")
    message = await refused(node, "POST", "/v1/probes/p1:tag?tags=b", json=["a"])
    assert message == "query parameter tags: the request body sets tags"


async def test_delete_returning_empty(node: Node) -> None:
    response = await node.client.delete("/v1/rooms/gone")
    assert response.status == 200
    assert await response.json() == {}
    assert node.seen.calls == ["DeleteRoom gone"]
    assert node.resources == ["/acme.chat.v1.Rooms/DeleteRoom"]


async def test_default_route_of_an_unannotated_method(node: Node) -> None:
    response = await node.client.post("/probe.v1.Probes/Plain", json={"name": "n", "i64": "12"})
    assert response.status == 200
    probe = (await response.json())["probe"]
    assert (probe["name"], probe["i64"]) == ("n", "12")
    assert node.resources == ["/probe.v1.Probes/Plain"]
    assert (await node.client.get("/probe.v1.Probes/Plain")).status == 405


async def test_path_values_take_the_field_type(node: Node) -> None:
    probe = await echo(node, "/v1/probes/-42/true/GREEN")
    assert (probe["i32"], probe["flag"], probe["color"]) == (-42, True, "GREEN")
    probe = await echo(node, "/v1/probes/0/0/1")  # enum by number, bool as 0
    assert (probe["flag"], probe["color"]) == (False, "RED")
    probe = await echo(node, "/v1/probes/0/f/7")  # proto3 enums are open: unknown numbers pass
    assert probe["color"] == 7
    at = "2024-05-06T07:08:09Z"
    probe = await echo(node, f"/v1/typed/9007199254740993/4294967295/-1.5e3/NaN/aGk_/{at}/-7")
    assert probe["i64"] == "9007199254740993"  # 64-bit integers are JSON strings
    assert (probe["u32"], probe["ratio"], probe["f"]) == (4294967295, -1500.0, "NaN")
    assert (probe["blob"], probe["at"], probe["wrapped"]) == ("aGk/", at, "-7")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/probes/x/true/RED", 'path parameter i32: "x" is not an integer'),
        ("/v1/probes/1.5/true/RED", 'path parameter i32: "1.5" is not an integer'),
        ("/v1/probes/2147483648/true/RED", "path parameter i32: 2147483648 is out of range"),
        ("/v1/probes/1/yes/RED", 'path parameter flag: "yes" is not a bool'),
        ("/v1/probes/1/true/PURPLE", 'path parameter color: "PURPLE" is not a value of probe.v1.Color'),
        ("/v1/typed/1/-1/0/0/AA/2024-01-01T00:00:00Z/1", "path parameter u32: -1 is out of range"),
        ("/v1/typed/1/1/1e999/0/AA/2024-01-01T00:00:00Z/1", "path parameter ratio: 1e999 is out of range"),
        ("/v1/typed/1/1/0/1e39/AA/2024-01-01T00:00:00Z/1", "path parameter f: 1e39 is out of range"),
        ("/v1/typed/1/1/0/0/%21%21/2024-01-01T00:00:00Z/1", 'path parameter blob: "!!" is not base64'),
        ("/v1/typed/1/1/0/0/AA/yesterday/1", 'path parameter at: "yesterday"'),
        ("/v1/typed/1/1/0/0/AA/2024-01-01T00:00:00Z/one", 'path parameter wrapped: "one" is not an integer'),
    ],
)
async def test_path_values_that_do_not_convert_are_refused(node: Node, path: str, expected: str) -> None:
    assert expected in await refused(node, "GET", path)


async def test_multi_segment_patterns_and_wildcards(node: Node) -> None:
    assert (await echo(node, "/v1/shelves/s1/books/b%2F2"))["name"] == "shelves/s1/books/b/2"
    assert (await node.client.get("/v1/shelves/s1/books")).status == 404
    assert (await node.client.get("/v1/shelves/s1/books/b2/extra")).status == 404
    assert (await echo(node, "/v1/files/a/b/c.txt"))["name"] == "a/b/c.txt"
    assert (await echo(node, "/v1/any/ignored/kept"))["name"] == "kept"
    assert (await node.client.get("/v1/any/kept")).status == 404


async def test_nested_path_fields(node: Node) -> None:
    probe = await echo(node, "/v1/inner/x%20y/7/GREEN")
    assert probe["inner"] == {"c": "x y", "n": 7, "color": "GREEN"}


async def test_response_body_selects_a_field(node: Node) -> None:
    response = await node.client.get("/v1/only/solo")
    assert response.status == 200
    body = await response.json()
    assert body["name"] == "solo" and "probe" not in body and "metadata" not in body
    assert node.resources == ["/probe.v1.Probes/Only"]


async def test_unrouted_requests(node: Node) -> None:
    assert (await node.client.get("/v1/nowhere")).status == 404
    assert (await node.client.put("/v1/rooms/abc")).status == 405
    assert (await node.client.get("/v1/rooms/abc/")).status == 404
    assert node.resources == [None, None, None]
    assert node.seen.calls == []


# --------------------------------------------------------------------------- query strings


async def test_query_fills_fields_nested_repeated_and_by_json_name(node: Node) -> None:
    query = (
        "name=n&inner.c=deep&inner.color=RED&tags=a&tags=b&nums=1&nums=-2&displayName=D"
        "&maybe=&at=2024-01-01T00:00:00Z&wrapped=5&left=L&blob=aGk&ratio=Infinity&u32=%2B3"
    )
    probe = await echo(node, f"/v1/query?{query}")
    assert probe["name"] == "n"
    assert probe["inner"] == {"c": "deep", "n": 0, "color": "RED"}
    assert (probe["tags"], probe["nums"]) == (["a", "b"], [1, -2])
    assert (probe["displayName"], probe["maybe"], probe["left"]) == ("D", "", "L")
    assert (probe["at"], probe["wrapped"], probe["blob"]) == ("2024-01-01T00:00:00Z", "5", "aGk=")
    assert (probe["ratio"], probe["u32"]) == ("Infinity", 3)
    assert (await echo(node, "/v1/query?display_name=snake"))["displayName"] == "snake"
    assert (await echo(node, "/v1/query?name=a+b%20c%26"))["name"] == "a b c&"
    # beside path parameters
    probe = await echo(node, "/v1/probes/1/true/RED?name=q&i64=-5")
    assert (probe["i32"], probe["name"], probe["i64"]) == (1, "q", "-5")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("bogus=1", 'query parameter bogus: probe.v1.Probe has no field "bogus"'),
        ("inner.bogus=1", 'query parameter inner.bogus: probe.v1.Inner has no field "bogus"'),
        ("name.x=1", "query parameter name.x: name is not a message"),
        ("inner=x", "query parameter inner: inner is a message (probe.v1.Inner): set its fields instead"),
        ("labels=x", "query parameter labels: labels is a map"),
        ("inners.c=x", "query parameter inners.c: inners is repeated"),
        ("inners=x", "query parameter inners: inners is a message"),
        ("name=a&name=b", "query parameter name: one value expected, got 2"),
        ("displayName=a&display_name=b", "one value expected, got 2"),
        ("left=a&right=1", "query parameters left and right both set the oneof pick"),
        ("i32=x", 'query parameter i32: "x" is not an integer'),
        ("nums=1&nums=x", 'query parameter nums: "x" is not an integer'),
        ("flag=maybe", 'query parameter flag: "maybe" is not a bool'),
        ("color=BLUE", 'query parameter color: "BLUE" is not a value of probe.v1.Color'),
        ("at=now", 'query parameter at: "now"'),
        ("=x", 'query parameter : probe.v1.Probe has no field ""'),
    ],
)
async def test_query_parameters_refused(node: Node, query: str, expected: str) -> None:
    assert expected in await refused(node, "GET", f"/v1/query?{query}")


async def test_a_refusal_is_the_same_json_as_before(node: Node) -> None:
    response = await node.client.get("/v1/query?i32=x")
    assert response.status == 400
    assert response.headers["Content-Type"] == "application/json"
    expected = b'{"code":3,"message":"query parameter i32: \\"x\\" is not an integer","details":[]}'
    assert await response.read() == expected


async def test_query_cannot_set_what_the_path_or_the_body_sets(node: Node) -> None:
    assert "query parameter i32: the path sets it" in await refused(
        node, "GET", "/v1/probes/1/true/RED?i32=2"
    )
    message = await refused(node, "PATCH", "/v1/rooms/r1?room.title=x", json={"title": "t"})
    assert message == "query parameter room.title: the request body sets room"
    message = await refused(node, "POST", "/v1/rooms/r1/messages?text=x", json={"text": "t"})
    assert "query parameters are refused" in message


# --------------------------------------------------------------------------- bodies


async def test_invalid_json_is_refused_with_the_parse_error(node: Node) -> None:
    message = await refused(node, "POST", "/v1/rooms/r1/messages", data=b'{"text": "hi",}')
    assert message.startswith(
        "invalid JSON in the request body: Expecting property name enclosed in double quotes"
    )
    assert "line 1 column 15" in message
    message = await refused(node, "POST", "/v1/rooms/r1/messages", data=b"\xff\xfe\xfa")
    assert message.startswith("invalid JSON in the request body")
    message = await refused(node, "POST", "/v1/rooms/r1/messages", data=b"[" * 100_000)
    assert message.startswith("invalid JSON in the request body")


async def test_json_that_does_not_fit_the_message_is_refused(node: Node) -> None:
    path = "/v1/rooms/r1/messages"
    assert 'has no field named "bogus"' in await refused(node, "POST", path, json={"text": "a", "bogus": 1})
    assert "text" in await refused(node, "POST", path, json={"text": 5})
    message = await refused(node, "POST", path, json=["text"])
    assert message == "the request body: expected a JSON object (acme.chat.v1.Message), got an array"
    assert "got a string" in await refused(node, "POST", path, json="text")
    assert "i32" in await refused(node, "POST", "/v1/probes/p", json={"i32": 2**40})
    assert "color" in await refused(node, "POST", "/v1/probes/p", json={"color": "PURPLE"})


async def test_body_accepts_proto_and_json_names(node: Node) -> None:
    for key in ("displayName", "display_name"):
        response = await node.client.post("/v1/probes/p", json={key: "D", "i64": 3})
        assert (await response.json())["probe"]["displayName"] == "D"


async def test_a_body_over_the_apps_limit_is_413(node: Node) -> None:
    async with serving(node.gateway, client_max_size=1024) as (client, _):
        response = await client.post("/v1/rooms/r1/messages", json={"text": "x" * 2048})
        assert response.status == 413
        body = await response.json()
        assert body["code"] == 8 and "1024" in body["message"]


async def test_default_valued_fields_are_written_presence_fields_are_not(node: Node) -> None:
    reply = await (await node.client.get("/v1/query")).json()
    probe = reply["probe"]
    assert probe == {
        "name": "",
        "i32": 0,
        "i64": "0",
        "u32": 0,
        "flag": False,
        "color": "COLOR_UNSPECIFIED",
        "ratio": 0.0,
        "f": 0.0,
        "blob": "",
        "tags": [],
        "nums": [],
        "labels": {},
        "inners": [],
        "displayName": "",
    }  # no inner, maybe, at, wrapped, left/right: they have presence and are unset


# --------------------------------------------------------------------------- metadata


async def test_authorization_reaches_the_grpc_server(node: Node) -> None:
    response = await node.client.get("/v1/rooms/whoami", headers={"Authorization": "Bearer t0k3n"})
    assert (await response.json())["title"] == "Bearer t0k3n"
    response = await node.client.get("/v1/rooms/whoami")
    assert (await response.json())["title"] == "-"


async def test_request_id_and_grpc_metadata_headers_are_forwarded(node: Node) -> None:
    headers = {
        "Authorization": "raw-token",
        "X-Request-Id": "req-1",
        "Grpc-Metadata-Tenant": "acme",
        "grpc-metadata-trace-bin": base64.b64encode(b"\x00\xff").decode(),
        "X-Other": "not forwarded",
    }
    response = await node.client.get("/v1/query", headers=headers)
    metadata = (await response.json())["metadata"]
    assert metadata["authorization"] == "raw-token"
    assert metadata["x-request-id"] == "req-1"
    assert metadata["tenant"] == "acme"
    assert base64.b64decode(metadata["trace-bin"]) == b"\x00\xff"
    assert "x-other" not in metadata and "other" not in metadata


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Grpc-Metadata-Authorization": "Bearer x"}, 'the metadata key "authorization" is reserved'),
        ({"Grpc-Metadata-Grpc-Timeout": "1S"}, 'the metadata key "grpc-timeout" is reserved'),
        ({"Grpc-Metadata-Content-Type": "text/plain"}, 'the metadata key "content-type" is reserved'),
        ({"Grpc-Metadata-A+B": "x"}, '"a+b" is not a valid gRPC metadata key'),
        ({"Grpc-Metadata-Trace-Bin": "!!"}, '"!!" is not base64'),
        ({"Grpc-Metadata-Tenant": "caf\u00e9"}, "must be printable ASCII"),
        (
            {"Authorization": "Bearer caf\u00e9"},
            "header Authorization: gRPC metadata must be printable ASCII",
        ),
    ],
)
async def test_metadata_headers_refused(node: Node, headers: dict[str, str], expected: str) -> None:
    assert expected in await refused(node, "GET", "/v1/query", headers=headers)


# --------------------------------------------------------------------------- errors


CODES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]


def test_http_status_covers_every_code() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert HTTP_STATUS[grpc.StatusCode.OK] == 200
    with pytest.raises(TypeError):
        HTTP_STATUS[grpc.StatusCode.OK] = 201  # type: ignore[index]


@pytest.mark.parametrize("code", CODES, ids=[code.name for code in CODES])
async def test_grpc_status_becomes_its_http_status(node: Node, code: grpc.StatusCode) -> None:
    response = await node.client.get(f"/v1/rooms/status:{code.name}")
    assert response.status == HTTP_STATUS[code]
    assert response.content_type == "application/json"
    assert await response.json() == error(code, f"boom status:{code.name}")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("CANCELLED", 499),
        ("UNKNOWN", 500),
        ("INVALID_ARGUMENT", 400),
        ("DEADLINE_EXCEEDED", 504),
        ("NOT_FOUND", 404),
        ("ALREADY_EXISTS", 409),
        ("PERMISSION_DENIED", 403),
        ("UNAUTHENTICATED", 401),
        ("RESOURCE_EXHAUSTED", 429),
        ("FAILED_PRECONDITION", 400),
        ("ABORTED", 409),
        ("OUT_OF_RANGE", 400),
        ("UNIMPLEMENTED", 501),
        ("INTERNAL", 500),
        ("UNAVAILABLE", 503),
        ("DATA_LOSS", 500),
    ],
)
def test_http_status_is_grpc_gateways_table(code: str, status: int) -> None:
    assert HTTP_STATUS[grpc.StatusCode[code]] == status


async def test_the_gateway_deadline_is_504(node: Node) -> None:
    gateway = Gateway(node.gen.routes, lambda: node.channel, timeout=0.2)
    async with serving(gateway) as (client, _):
        response = await client.get("/v1/rooms/slow")
        assert response.status == 504
        assert (await response.json())["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_a_closed_channel_is_503(node: Node) -> None:
    await node.channel.close()
    response = await node.client.get("/v1/rooms/abc")
    assert response.status == 503
    body = await response.json()
    assert body["code"] == 14 and "Channel is closed" in body["message"]


async def test_a_channel_closing_during_the_call_is_503(node: Node) -> None:
    request = asyncio.ensure_future(node.client.get("/v1/rooms/slow"))
    while "GetRoom" not in node.seen.calls:
        await asyncio.sleep(0.01)
    await node.channel.close()
    response = await request
    assert response.status == 503
    assert (await response.json())["code"] == 14


async def test_a_new_channel_is_used_when_channel_returns_one(node: Node) -> None:
    channels = [node.channel]
    gateway = Gateway(node.gen.routes, lambda: channels[-1])
    async with serving(gateway) as (client, _):
        assert (await client.get("/v1/rooms/a")).status == 200
        await channels[-1].close()
        assert (await client.get("/v1/rooms/a")).status == 503
        channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{node.port}"))
        try:
            assert (await client.get("/v1/rooms/a")).status == 200
        finally:
            await channels[-1].close()


async def test_no_channel_is_503(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    def nowhere() -> grpc.aio.Channel:
        raise LookupError("no route to acme.chat.v1.Rooms")

    async with serving(Gateway(node.gen.routes, nowhere)) as (client, _):
        response = await client.get("/v1/rooms/a")
        assert response.status == 503
        assert await response.json() == error(
            grpc.StatusCode.UNAVAILABLE, "gRPC call failed: no channel: no route to acme.chat.v1.Rooms"
        )


async def test_unexpected_errors_are_500_without_a_traceback(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_channel: Any = object()
    async with serving(Gateway(node.gen.routes, lambda: not_a_channel)) as (client, _):
        with caplog.at_level(logging.ERROR, logger="msuite.http.gateway"):
            response = await client.get("/v1/rooms/a")
        assert response.status == 500
        assert await response.json() == error(grpc.StatusCode.INTERNAL, "internal error")
    [record] = [r for r in caplog.records if r.name == "msuite.http.gateway"]
    assert record.exc_info is not None and "GET /v1/rooms/a -> /acme.chat.v1.Rooms/GetRoom" in record.message


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize(
    ("room", "location"), [("redirect", "https://example.com/next"), ("redirect-initial", "/v1/rooms/moved")]
)
async def test_location_metadata_redirects(node: Node, room: str, location: str) -> None:
    response = await node.client.get(f"/v1/rooms/{room}", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == location
    assert await response.json() == {"id": room, "title": "lobby"}  # the reply is still the body


async def test_location_on_a_failed_call_does_not_redirect(node: Node) -> None:
    response = await node.client.get("/v1/rooms/redirect-and-fail", allow_redirects=False)
    assert response.status == 404
    assert "Location" not in response.headers


async def test_client_streaming_reply_redirects_too(node: Node) -> None:
    response = await node.client.post(
        "/acme.chat.v1.Chat/Upload", data=b'{"text": "redirect"}\n', allow_redirects=False
    )
    assert response.status == 302 and response.headers["Location"] == "https://example.com/next"


# --------------------------------------------------------------------------- streaming


async def test_server_streaming_is_ndjson(node: Node) -> None:
    response = await node.client.post("/acme.chat.v1.Chat/Tail", json={"id": "r"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert ndjson(await response.text()) == [{"room": "r", "text": f"m{i}"} for i in range(3)]
    assert node.resources == ["/acme.chat.v1.Chat/Tail"]


async def test_server_streaming_lines_arrive_as_they_come(node: Node) -> None:
    response = await node.client.post("/acme.chat.v1.Chat/Tail", json={"id": "wait"})
    assert response.status == 200
    first = await asyncio.wait_for(response.content.readline(), 5)
    assert json.loads(first) == {"room": "wait", "text": "first"}
    assert not node.seen.release.is_set()  # the stream is still open
    node.seen.release.set()
    assert ndjson((await response.read()).decode()) == [{"room": "wait", "text": "second"}]


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_a_client_leaving_an_idle_stream_cancels_the_call(
    node: Node, handler_cancellation: bool
) -> None:
    async with serving(node.gateway, handler_cancellation=handler_cancellation) as (client, _):
        response = await client.post("/acme.chat.v1.Chat/Tail", json={"id": "wait"})
        assert json.loads(await asyncio.wait_for(response.content.readline(), 5))["text"] == "first"
        response.close()  # drops the connection while the servicer waits for its next message
        async with asyncio.timeout(5):
            while "Tail cancelled" not in node.seen.calls:
                await asyncio.sleep(0.05)


async def test_server_streaming_error_mid_stream_ends_with_an_error_line(node: Node) -> None:
    response = await node.client.post("/acme.chat.v1.Chat/Tail", json={"id": "fail-after-2"})
    assert response.status == 200
    lines = ndjson(await response.text())
    assert lines == [
        {"room": "fail-after-2", "text": "m0"},
        {"room": "fail-after-2", "text": "m1"},
        {"error": error(grpc.StatusCode.DATA_LOSS, "lost the rest")},
    ]


async def test_server_streaming_failing_at_once_gets_its_http_status(node: Node) -> None:
    response = await node.client.post("/acme.chat.v1.Chat/Tail", json={"id": "status:PERMISSION_DENIED"})
    assert response.status == 403
    assert response.content_type == "application/json"
    assert await response.json() == error(grpc.StatusCode.PERMISSION_DENIED, "boom status:PERMISSION_DENIED")


async def test_server_streaming_forwards_authorization_and_never_redirects(node: Node) -> None:
    response = await node.client.post(
        "/acme.chat.v1.Chat/Tail", json={"id": "whoami"}, headers={"Authorization": "Bearer s"}
    )
    assert ndjson(await response.text()) == [{"room": "whoami", "text": "Bearer s"}]
    response = await node.client.post("/acme.chat.v1.Chat/Tail", json={"id": "redirect-initial"})
    assert response.status == 200 and "Location" not in response.headers
    assert len(ndjson(await response.text())) == 3


async def test_server_streaming_refuses_a_bad_request(node: Node) -> None:
    assert "no field named" in await refused(node, "POST", "/acme.chat.v1.Chat/Tail", json={"room": "r"})


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": "a"}\n{"text": "b"}\n\n{"room": "r", "text": "c"}\n',
        b'{"text": "a"}\r\n{"text": "b"}\r\n{"text": "c"}',  # CRLF, no final newline
        b'[{"text": "a"}, {"text": "b"}, {"room": "r"}]',
        b'  [{"text": "a"},\n {"text": "b"},\n {}]\n',
    ],
)
async def test_client_streaming_takes_ndjson_or_a_json_array(node: Node, body: bytes) -> None:
    response = await node.client.post("/acme.chat.v1.Chat/Upload", data=body)
    assert response.status == 200
    assert await response.json() == {"count": 3}
    assert node.resources == ["/acme.chat.v1.Chat/Upload"]


async def test_client_streaming_of_nothing(node: Node) -> None:
    for body in (b"", b"[]", b"\n\n"):
        response = await node.client.post("/acme.chat.v1.Chat/Upload", data=body)
        assert await response.json() == {"count": 0}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"text": "a"}\n{"text": }\n', "invalid JSON in line 2 of the request body: Expecting value"),
        (
            b'{"text": "a"}\n\n{"bogus": 1}\n',
            'line 3 of the request body: Message type "acme.chat.v1.Message" has',
        ),
        (b'{"text": "a"}\n[{"text": "b"}]\n', "line 2 of the request body: expected a JSON object"),
        (b'[{"text": "a"}, 5]', "item 1 of the request body: expected a JSON object (acme.chat.v1.Message)"),
        (b'[{"text": "a"}', "invalid JSON in the request body"),
        (b'{"text": "a"} {"text": "b"}', "invalid JSON in line 1 of the request body: Extra data"),
        (b'{"text": "\xff"}', "the request body is not UTF-8"),
    ],
)
async def test_client_streaming_refuses_a_bad_message_before_calling(
    node: Node, body: bytes, expected: str
) -> None:
    assert expected in await refused(node, "POST", "/acme.chat.v1.Chat/Upload", data=body)


async def test_client_streaming_refuses_a_query_string(node: Node) -> None:
    assert "query parameters are refused" in await refused(node, "POST", "/acme.chat.v1.Chat/Upload?x=1")


async def test_client_streaming_status(node: Node) -> None:
    response = await node.client.post("/acme.chat.v1.Chat/Upload", data=b'{"text": "status:ABORTED"}')
    assert response.status == 409
    assert (await response.json())["code"] == grpc.StatusCode.ABORTED.value[0]


async def test_bidi_streaming(node: Node) -> None:
    for body in (
        b'{"room": "r", "text": "a"}\n{"text": "b"}\n',
        b'[{"room": "r", "text": "a"}, {"text": "b"}]',
    ):
        response = await node.client.post("/acme.chat.v1.Chat/Talk", data=body)
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        assert ndjson(await response.text()) == [{"room": "r", "text": "A"}, {"room": "", "text": "B"}]
    assert node.resources == ["/acme.chat.v1.Chat/Talk"] * 2
    response = await node.client.post("/acme.chat.v1.Chat/Talk", data=b"")
    assert response.status == 200 and await response.text() == ""


async def test_bidi_streaming_errors(node: Node) -> None:
    response = await node.client.post(
        "/acme.chat.v1.Chat/Talk", data=b'{"text": "a"}\n{"text": "status:NOT_FOUND"}'
    )
    assert response.status == 200
    assert ndjson(await response.text()) == [
        {"room": "", "text": "A"},
        {"error": error(grpc.StatusCode.NOT_FOUND, "boom status:NOT_FOUND")},
    ]
    response = await node.client.post("/acme.chat.v1.Chat/Talk", data=b'{"text": "status:UNAUTHENTICATED"}')
    assert response.status == 401
    assert "item 0" in await refused(node, "POST", "/acme.chat.v1.Chat/Talk", data=b'[{"text": 1}]')


# --------------------------------------------------------------------------- building the gateway


def route(path: str, **changes: Any) -> Route:
    fields: dict[str, Any] = {
        "http_method": "GET",
        "path": path,
        "service": "probe.v1.Probes",
        "method": "Echo",
        "body": "",
        "response_body": "",
        "kind": "unary_unary",
        "annotated": True,
    }
    fields.update(changes)
    return Route(**fields)


def no_channel() -> grpc.aio.Channel:
    raise AssertionError("the channel is made on the first request only")


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (
            route("/v1/x", service="probe.v1.Nope"),
            "/probe.v1.Nope/Echo is not in the protobuf descriptor pool",
        ),
        (route("/v1/x", method="Nope"), "/probe.v1.Probes/Nope is not in the protobuf descriptor pool"),
        (route("/v1/x", kind="unary_stream"), "the route says unary_stream, the proto says unary_unary"),
        (route("/v1/{nope}"), 'probe.v1.Probe has no field "nope"'),
        (route("/v1/{displayName}"), 'probe.v1.Probe has no field "displayName"'),
        (route("/v1/{tags}"), "tags is repeated"),
        (route("/v1/{inner}"), "inner is a message (probe.v1.Inner): set its fields instead"),
        (route("/v1/{labels}"), "labels is a map"),
        (route("/v1/{name.x}"), "name is not a message"),
        (route("/v1/{name}/{name}"), "name is bound twice"),
        (route("/v1/{name=a/{b}}"), "nested braces"),
        (route("/v1/{name"), "unbalanced braces"),
        (route("/v1/{na-me}"), 'bad field path "na-me"'),
        (route("/v1/{name=a/**b}"), 'bad segment "**b"'),
        (route("v1/x"), "the path must start with /"),
        (route("/v1//x"), 'bad segment ""'),
        (route("/v1/x", body="nope"), 'body: probe.v1.Probe has no field "nope"'),
        (route("/v1/x", response_body="nope"), 'response_body: probe.v1.ProbeReply has no field "nope"'),
    ],
)
def test_a_route_that_cannot_work_is_refused_at_construction(
    generated: Generated, bad: Route, expected: str
) -> None:
    with pytest.raises(ValueError, match=r"^gateway route ") as info:
        Gateway([bad], no_channel)
    assert expected in str(info.value)
    assert f"{bad.http_method} {bad.path} ({bad.full_method})" in str(info.value)


@pytest.mark.parametrize(
    ("routes", "service", "full_method"),
    [
        ([route("/v1/{nope}")], "probe.v1.Probes", "/probe.v1.Probes/Echo"),
        ([route("/v1/x", service="probe.v1.Nope")], "probe.v1.Nope", "/probe.v1.Nope/Echo"),
        (  # a clash names the second route, the one that could not be added
            [route("/v1/{name}"), route("/v1/{name}", service="acme.chat.v1.Rooms", method="GetRoom")],
            "acme.chat.v1.Rooms",
            "/acme.chat.v1.Rooms/GetRoom",
        ),
    ],
)
def test_a_route_error_says_which_service_and_method(
    generated: Generated, routes: list[Route], service: str, full_method: str
) -> None:
    with pytest.raises(GatewayRouteError) as info:
        Gateway(routes, no_channel)
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, MsuiteError)
    assert (error.service, error.full_method) == (service, full_method)
    assert error.route is routes[-1]
    assert str(error).startswith(
        f"gateway route {routes[-1].http_method} {routes[-1].path} ({full_method}): "
    )


def test_a_client_streaming_route_needs_body_star(generated: Generated) -> None:
    upload = route("/v1/up", service="acme.chat.v1.Chat", method="Upload", kind="stream_unary", body="")
    with pytest.raises(ValueError, match='a client-streaming method needs body "\\*"'):
        Gateway([upload], no_channel)


def test_two_routes_on_one_path_are_refused(generated: Generated) -> None:
    with pytest.raises(ValueError, match=r"the same path as GET /v1/\{name\}"):
        Gateway([route("/v1/{name}"), route("/v1/{display_name}")], no_channel)
    Gateway([route("/v1/{name}"), route("/v1/{name}", http_method="POST")], no_channel)


async def test_the_channel_is_asked_for_on_the_first_request(generated: Generated) -> None:
    gateway = Gateway(generated.routes, no_channel)
    app = web.Application()
    gateway.add_to(app.router)  # nothing connects yet
    assert len(app.router.routes()) == len(generated.routes)
