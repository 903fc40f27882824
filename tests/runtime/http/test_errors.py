"""The shared gRPC code table and the one refusal type of the HTTP side."""

from __future__ import annotations

import grpc
import pytest
from aiohttp import web

from msuite.runtime.codes import GrpcCode
from msuite.runtime.http.errors import Refusal, error_response
from msuite.runtime.http.gateway import HTTP_STATUS
from tests.test_imports import loaded_after


def test_the_code_table_is_grpcs() -> None:
    assert [(code.name, code.value) for code in GrpcCode] == [
        (code.name, code.value[0]) for code in grpc.StatusCode
    ]


def test_each_code_has_grpc_gateways_http_status() -> None:
    assert {code: GrpcCode[code.name].http_status for code in grpc.StatusCode} == dict(HTTP_STATUS)


def test_the_code_table_imports_nothing() -> None:
    loaded = loaded_after("import msuite.runtime.codes")
    assert not [name for name in loaded if name.split(".")[0] in ("grpc", "aiohttp", "google")]


@pytest.mark.parametrize(
    ("refusal", "before"),
    [
        (  # the gateway's: _Refused(text, grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
            Refusal(413, GrpcCode.RESOURCE_EXHAUSTED, "Maximum request body size 1024 exceeded"),
            error_response(
                413, grpc.StatusCode.RESOURCE_EXHAUSTED, "Maximum request body size 1024 exceeded"
            ),
        ),
        (  # profiling's: _Reject(error_response(409, 10, text)) with its own number for ABORTED
            Refusal(409, GrpcCode.ABORTED, "a heap trace is already running"),
            error_response(409, 10, "a heap trace is already running"),
        ),
        (Refusal.invalid("bad"), error_response(400, grpc.StatusCode.INVALID_ARGUMENT, "bad")),
        (Refusal(499, GrpcCode.CANCELLED, "gone"), error_response(499, 1, "gone")),
    ],
)
def test_a_refusal_renders_as_before(refusal: Refusal, before: web.Response) -> None:
    answer = refusal.response()
    assert (answer.status, answer.reason, answer.content_type, answer.body) == (
        before.status,
        before.reason,
        before.content_type,
        before.body,
    )
    assert answer.text == f'{{"code":{int(refusal.code)},"message":"{refusal.message}","details":[]}}'
    assert str(refusal) == refusal.message
