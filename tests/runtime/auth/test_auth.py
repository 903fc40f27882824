"""Auth: authorize() for every kind of caller and resource, the component, the current principal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from msuite.runtime.auth import (
    Auth,
    AuthError,
    PermissionDenied,
    Principal,
    Unauthenticated,
    current_principal,
    reset_principal,
    set_principal,
)
from msuite.runtime.errors import NotConfigured
from msuite.runtime.repo import Repo
from msuite.spec import Auth as AuthSettings
from msuite.spec import Role
from tests.runtime.auth.tokens import NOW, OTHER_SECRET, SECRET, Clock, claims, craft, settings

ACL = {
    "/pkg.Notes/Delete": Role.ADMIN,
    "/pkg.Notes/Create": Role.AUTHENTICATED_WRITE,
    "/pkg.Notes/Ping": Role.NONE,
    "/v1/notes/": Role.PUBLIC_READ,
    "/admin/": Role.ADMIN,
}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def auth(clock: Clock) -> Auth:
    node_auth = Auth(AuthSettings(jwt=settings(), acl=ACL), clock=clock)
    await node_auth.start()
    return node_auth


def bearer(auth: Auth, role: Role | str, subject: str = "alice") -> str:
    return f"Bearer {auth.jwt.issue(subject, role)}"


# --------------------------------------------------------------------------- the matrix

OPEN = ["/pkg.Notes/List", "/pkg.Notes/Ping", "/health", "/v1/other"]


@pytest.mark.parametrize("resource", OPEN)
async def test_no_token_is_anonymous_on_open_resources(auth: Auth, resource: str) -> None:
    principal = auth.authorize(resource, None)
    assert principal is Principal.ANONYMOUS
    assert principal.role == Role.NONE and principal.subject is None and not principal.authenticated


@pytest.mark.parametrize("resource", ["/pkg.Notes/Delete", "/pkg.Notes/Create", "/v1/notes/7", "/admin/x"])
async def test_no_token_on_a_protected_resource_needs_authentication(auth: Auth, resource: str) -> None:
    with pytest.raises(Unauthenticated, match=r"^authentication required$"):
        auth.authorize(resource, None)


@pytest.mark.parametrize(
    ("role", "resource", "allowed"),
    [
        (Role.ADMIN, "/pkg.Notes/Delete", True),
        (Role.ADMIN, "/admin/users/7", True),
        (Role.ADMIN, "/pkg.Notes/List", True),
        (
            Role.AUTHENTICATED_WRITE,
            "/pkg.Notes/Delete",
            False,
        ),  # go-msuite: admin-only rejects authenticated_write
        (Role.AUTHENTICATED_WRITE, "/pkg.Notes/Create", True),
        (Role.AUTHENTICATED_READ, "/pkg.Notes/Create", False),
        (Role.PUBLIC_READ, "/v1/notes/7", True),
        (Role.PUBLIC_READ, "/pkg.Notes/Create", False),
        (Role.NONE, "/v1/notes/7", False),
        (Role.NONE, "/pkg.Notes/Ping", True),
        (Role.NONE, "/open", True),
    ],
)
async def test_valid_tokens_by_role(auth: Auth, role: Role, resource: str, allowed: bool) -> None:
    header = bearer(auth, role)
    if allowed:
        principal = auth.authorize(resource, header)
        assert principal.subject == "alice" and principal.role == role and principal.authenticated
        assert principal.expires == NOW + 24 * 3600
    else:
        with pytest.raises(PermissionDenied) as info:
            auth.authorize(resource, header)
        needed = auth.acl.required(resource)
        assert needed is not None
        assert str(info.value) == f"role {role} may not use {resource} (needs {needed})"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "Bearer a.b.c",
        f"Bearer {craft({'alg': 'HS256'}, claims(), secret=OTHER_SECRET)}",
        f"Bearer {craft({'alg': 'none'}, claims(role='admin'), secret=None)}",
        f"Bearer {craft({'alg': 'HS256'}, claims(exp=int(NOW) - 1))}",
        f"Bearer {craft({'alg': 'HS256'}, claims(role='root'))}",
        "Bearer " + "x" * 9000,
        "Basic YWxpY2U6cGFzc3dvcmQ=",
        "Token abc",
        "Bearer",
        "Bearer ",
        "",
        "   ",
        craft({"alg": "HS256"}, claims()),  # a raw token without the scheme (as go-msuite's gRPC wanted)
    ],
)
@pytest.mark.parametrize("resource", ["/pkg.Notes/List", "/pkg.Notes/Ping", "/pkg.Notes/Create"])
async def test_a_present_but_invalid_token_is_refused_even_on_open_resources(
    auth: Auth, header: str, resource: str
) -> None:
    with pytest.raises(Unauthenticated) as info:
        auth.authorize(resource, header)
    message = str(info.value)
    assert message != "authentication required"
    token = header.partition(" ")[2]
    assert len(token) < 8 or token not in message


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_scheme_is_case_insensitive(auth: Auth, scheme: str) -> None:
    token = auth.jwt.issue("alice", Role.ADMIN)
    assert auth.authorize("/admin/x", f"{scheme} {token}").role == Role.ADMIN
    assert auth.authorize("/admin/x", f"  {scheme}   {token}  ").role == Role.ADMIN


async def test_messages_name_the_missing_piece(auth: Auth) -> None:
    for header, message in [
        ("Basic x", "the Authorization header must be 'Bearer <token>'"),
        ("Bearer   ", "the Authorization header must be 'Bearer <token>'"),
        ("Bearer abc", "invalid token"),
        (
            f"Bearer {craft({'alg': 'HS512'}, claims(), sign_with='HS512')}",
            "token signed with an algorithm not allowed",
        ),
        (f"Bearer {craft({'alg': 'HS256'}, claims(exp=int(NOW)))}", "token expired"),
    ]:
        with pytest.raises(Unauthenticated) as info:
            auth.authorize("/open", header)
        assert str(info.value) == message


async def test_an_expired_token_is_refused_after_it_was_accepted(auth: Auth, clock: Clock) -> None:
    header = f"Bearer {auth.jwt.issue('alice', Role.ADMIN, ttl=60)}"
    assert auth.authorize("/admin/x", header).subject == "alice"
    assert auth.authorize("/open", header).subject == "alice"  # cached
    clock.advance(60)
    for resource in ("/admin/x", "/open"):
        with pytest.raises(Unauthenticated, match=r"^token expired$"):
            auth.authorize(resource, header)


async def test_acl_changes_apply_to_the_next_call(auth: Auth) -> None:
    reader = bearer(auth, Role.PUBLIC_READ)
    assert auth.authorize("/reports/1", reader).role == Role.PUBLIC_READ
    assert auth.authorize("/reports/1", None) is Principal.ANONYMOUS
    await auth.acl.allow("/reports/", Role.AUTHENTICATED_READ)
    with pytest.raises(PermissionDenied):
        auth.authorize("/reports/1", reader)
    with pytest.raises(Unauthenticated, match="authentication required"):
        auth.authorize("/reports/1", None)
    await auth.acl.remove("/reports/")
    assert auth.authorize("/reports/1", reader).role == Role.PUBLIC_READ


async def test_the_query_string_does_not_dodge_the_acl(auth: Auth) -> None:
    with pytest.raises(Unauthenticated, match="authentication required"):
        auth.authorize("/admin/x?debug=1", None)
    with pytest.raises(Unauthenticated, match="authentication required"):
        auth.authorize("//admin/x", None)


async def test_a_long_resource_is_shortened_in_messages(auth: Auth) -> None:
    resource = "/admin/" + "x" * 1000 + "\n"
    with pytest.raises(PermissionDenied) as info:
        auth.authorize(resource, bearer(auth, Role.PUBLIC_READ))
    message = str(info.value)
    assert len(message) < 300 and "\n" not in message and message.endswith("... (needs admin)")


# --------------------------------------------------------------------------- without jwt


async def test_a_node_without_jwt_refuses_tokens_and_serves_anonymous_callers() -> None:
    auth = Auth(AuthSettings(acl={"/admin/": Role.ADMIN}))
    await auth.start()
    assert not auth.jwt_enabled
    with pytest.raises(NotConfigured, match=r"node\.auth\.jwt is not configured: add `auth\.jwt`") as caught:
        _ = auth.jwt
    assert isinstance(caught.value, LookupError)  # what it raised before NotConfigured
    assert auth.authorize("/open", None) is Principal.ANONYMOUS
    with pytest.raises(Unauthenticated, match=r"^authentication required$"):
        auth.authorize("/admin/x", None)
    token = craft({"alg": "HS256"}, claims(role="admin"))
    for resource in ("/open", "/admin/x"):
        with pytest.raises(Unauthenticated, match=r"^this node does not accept tokens$"):
            auth.authorize(resource, f"Bearer {token}")
    with pytest.raises(Unauthenticated, match="Bearer <token>"):
        auth.authorize("/open", "Basic x")
    assert auth.status() == {"jwt": None, "acl": {"entries": 1, "manifest": 1, "runtime": 0}}


# --------------------------------------------------------------------------- errors


def test_error_codes() -> None:
    assert Unauthenticated.grpc_code is grpc.StatusCode.UNAUTHENTICATED
    assert Unauthenticated.http_status == 401
    assert PermissionDenied.grpc_code is grpc.StatusCode.PERMISSION_DENIED
    assert PermissionDenied.http_status == 403
    error = PermissionDenied("role x may not use /y (needs admin)")
    assert isinstance(error, AuthError) and isinstance(error, Exception)
    assert error.grpc_code is grpc.StatusCode.PERMISSION_DENIED and error.http_status == 403
    assert Unauthenticated("invalid token").grpc_code is grpc.StatusCode.UNAUTHENTICATED
    assert not issubclass(PermissionDenied, Unauthenticated)


# --------------------------------------------------------------------------- component


async def test_component_status_never_shows_the_secret(auth: Auth) -> None:
    auth.authorize("/open", bearer(auth, Role.ADMIN))
    status = auth.status()
    assert status["jwt"]["keys"] == [
        {"kid": None, "kind": "hmac", "algorithms": ["HS256"], "signs": "HS256", "source": "auth.jwt.secret"}
    ]
    assert status["jwt"]["cached_tokens"] == 1
    assert status["acl"] == {"entries": len(ACL), "manifest": len(ACL), "runtime": 0}
    assert SECRET not in json.dumps(status) and SECRET not in repr(auth)
    assert auth.name == "auth" and auth.requires == ()
    await auth.stop(1.0)
    await auth.stop()


async def test_start_stores_the_manifest_acl_and_runtime_entries_persist(tmp_path: Path) -> None:
    manifest = AuthSettings(jwt=settings(), acl={"/admin/": Role.ADMIN})
    with Repo.open(tmp_path / "repo") as repo:
        auth = Auth(manifest, kv=repo.space("acl"))
        assert auth.requires == ("repo",)
        await auth.start()
        await auth.acl.allow("/reports/", Role.AUTHENTICATED_READ)
        await auth.acl.allow("/admin/", Role.PUBLIC_READ)  # overwritten at the next start
        await auth.stop()
    with Repo.open(tmp_path / "repo") as repo:
        auth = Auth(manifest, kv=repo.space("acl"))
        await auth.start()
        assert auth.acl.list() == {"/admin/": Role.ADMIN, "/reports/": Role.AUTHENTICATED_READ}
        with pytest.raises(Unauthenticated, match="authentication required"):
            auth.authorize("/reports/1", None)
        with pytest.raises(PermissionDenied):
            auth.authorize("/admin/x", bearer(auth, Role.PUBLIC_READ))


async def test_a_bad_manifest_acl_fails_start() -> None:
    auth = Auth(AuthSettings(acl={"/a b": Role.ADMIN}))
    with pytest.raises(ValueError, match="no whitespace"):
        await auth.start()


# --------------------------------------------------------------------------- current principal


async def test_current_principal_is_per_context() -> None:
    assert current_principal() is Principal.ANONYMOUS
    alice = Principal("alice", Role.ADMIN, {"k": "v"}, NOW)
    bob = Principal("bob", Role.PUBLIC_READ)

    async def request(principal: Principal) -> Principal:
        token = set_principal(principal)
        try:
            await asyncio.sleep(0)
            return current_principal()
        finally:
            reset_principal(token)

    assert list(await asyncio.gather(request(alice), request(bob))) == [alice, bob]
    assert current_principal() is Principal.ANONYMOUS
    token = set_principal(alice)
    assert current_principal() is alice
    reset_principal(token)
    assert current_principal() is Principal.ANONYMOUS


def test_principals_are_immutable_and_hashable() -> None:
    principal = Principal("alice", Role.ADMIN, {"groups": ["a"]}, NOW)
    with pytest.raises(AttributeError):
        principal.role = Role.NONE  # type: ignore[misc]
    assert principal.meta["groups"] == ("a",)
    assert hash(principal) == hash(Principal("alice", Role.ADMIN, {}, NOW))
    assert Principal(None, Role.NONE) == Principal.ANONYMOUS
    assert Principal.ANONYMOUS.meta == {} and Principal.ANONYMOUS.expires is None


def test_the_grpc_numbers_match_the_grpc_codes() -> None:
    from msuite.runtime.auth import AuthError, PermissionDenied, Unauthenticated

    for error in (AuthError, Unauthenticated, PermissionDenied):
        assert error.grpc_number == error.grpc_code.value[0]
