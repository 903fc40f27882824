"""JWT keys: several at once by kid, PEM public and private keys, JWKS files and URLs, rotation.

Tokens are minted and checked by PyJWT, an independent implementation, on the
other side of each test: what msuite signs PyJWT verifies, and the reverse.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from msuite.runtime.auth import Auth, JWTAuth, Unauthenticated
from msuite.runtime.auth.jwks import JwksRefresher
from msuite.runtime.auth.keys import KeyConfigError
from msuite.runtime.node import Node
from msuite.runtime.testing import Harness, prepare
from msuite.spec import JWT, load_manifest
from msuite.spec import Auth as AuthSettings
from tests.helpers import errors_of
from tests.runtime.auth.tokens import NOW, OTHER_SECRET, SECRET, Clock, b64, claims, part

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

MAKERS: dict[str, Callable[[], PrivateKey]] = {
    "RS256": lambda: rsa.generate_private_key(65537, 2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ES512": lambda: ec.generate_private_key(ec.SECP521R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}
_MADE: dict[str, PrivateKey] = {}


def key_for(alg: str) -> PrivateKey:
    """One private key per algorithm for the whole module (RSA keys take a while to make)."""
    if alg not in _MADE:
        _MADE[alg] = MAKERS[alg]()
    return _MADE[alg]


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk_of(key: PrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``key``, as PyJWT writes it."""
    public = key.public_key()
    algorithm: Any
    if isinstance(public, rsa.RSAPublicKey):
        algorithm = RSAAlgorithm
    elif isinstance(public, ec.EllipticCurvePublicKey):
        algorithm = ECAlgorithm
    else:
        algorithm = OKPAlgorithm
    return {**algorithm.to_jwk(public, as_dict=True), "kid": kid, **extra}


def write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return name


def jwt_auth(tmp_path: Path, clock: Clock | None = None, **settings: Any) -> JWTAuth:
    return JWTAuth(JWT.model_validate(settings), clock=clock or Clock(), base_dir=tmp_path)


def header_of(token: str) -> dict[str, Any]:
    return dict(pyjwt.get_unverified_header(token))


# --------------------------------------------------------------------------- rotation by kid


def test_two_secrets_by_kid_rotate_without_refusing_old_tokens(tmp_path: Path) -> None:
    keys = [{"kid": "2026-12", "secret": OTHER_SECRET}, {"kid": "2026-11", "secret": SECRET}]
    before = jwt_auth(tmp_path, keys=keys[1:])
    old_token = before.issue("alice", "admin")
    assert header_of(old_token)["kid"] == "2026-11"
    during = jwt_auth(tmp_path, keys=keys, sign_with="2026-12")
    new_token = during.issue("alice", "admin")
    assert header_of(new_token) == {"alg": "HS256", "typ": "JWT", "kid": "2026-12"}
    assert during.verify(old_token).subject == during.verify(new_token).subject == "alice"
    # PyJWT checks the new token with the new secret, and not with the old one
    decoded = pyjwt.decode(new_token, OTHER_SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert decoded["role"] == "admin"
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(new_token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    after = jwt_auth(tmp_path, keys=keys[:1])
    assert after.verify(new_token).subject == "alice"
    with pytest.raises(Unauthenticated, match="token signed with an unknown key"):
        after.verify(old_token)


def test_a_kid_is_checked_with_its_own_key_only(tmp_path: Path) -> None:
    auth = jwt_auth(tmp_path, keys=[{"kid": "a", "secret": SECRET}, {"kid": "b", "secret": OTHER_SECRET}])
    signed_by_a = pyjwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "a"})
    assert auth.verify(signed_by_a).subject == "alice"
    claims_b_with_key_a = pyjwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "b"})
    with pytest.raises(Unauthenticated, match="invalid token"):
        auth.verify(claims_b_with_key_a)
    # without a kid, each key that verifies the algorithm is tried
    assert auth.verify(pyjwt.encode(claims(), OTHER_SECRET, algorithm="HS256")).subject == "alice"


def test_the_first_key_that_can_sign_signs_by_default(tmp_path: Path) -> None:
    pem = write(tmp_path, "idp.pem", public_pem(key_for("ES256")))
    auth = jwt_auth(tmp_path, keys=[{"kid": "idp", "public_key": pem}, {"kid": "own", "secret": SECRET}])
    assert header_of(auth.issue("alice", "admin"))["kid"] == "own"
    verify_only = jwt_auth(tmp_path, keys=[{"kid": "idp", "public_key": pem}])
    assert verify_only.signer is None
    with pytest.raises(LookupError, match=r"auth\.jwt\.secret"):
        verify_only.issue("alice", "admin")


# --------------------------------------------------------------------------- public keys, both ways


@pytest.mark.parametrize("alg", sorted(MAKERS))
def test_tokens_signed_by_pyjwt_verify_with_a_public_key_file(tmp_path: Path, alg: str) -> None:
    key = key_for(alg)
    auth = jwt_auth(tmp_path, keys=[{"kid": "k", "public_key": write(tmp_path, "k.pem", public_pem(key))}])
    token = pyjwt.encode(claims(), private_pem(key), algorithm=alg, headers={"kid": "k"})
    assert auth.verify(token).role == "authenticated_write"
    no_kid = pyjwt.encode(claims(sub="bob"), private_pem(key), algorithm=alg)
    assert auth.verify(no_kid).subject == "bob"
    other = MAKERS[alg]()
    forged = pyjwt.encode(claims(), private_pem(other), algorithm=alg, headers={"kid": "k"})
    with pytest.raises(Unauthenticated, match="invalid token"):
        auth.verify(forged)


@pytest.mark.parametrize("alg", sorted(MAKERS))
def test_tokens_msuite_signs_with_a_private_key_verify_in_pyjwt(tmp_path: Path, alg: str) -> None:
    key = key_for(alg)
    auth = jwt_auth(
        tmp_path, keys=[{"kid": "own", "private_key": write(tmp_path, "own.pem", private_pem(key))}]
    )
    token = auth.issue("alice", "admin", meta={"team": "x"})
    assert header_of(token) == {"alg": alg, "typ": "JWT", "kid": "own"}
    decoded = pyjwt.decode(token, public_pem(key), algorithms=[alg], options={"verify_exp": False})
    assert (decoded["sub"], decoded["role"], decoded["meta"]) == ("alice", "admin", {"team": "x"})
    assert auth.verify(token).meta == {"team": "x"}


def test_a_public_key_is_never_used_as_an_hmac_secret(tmp_path: Path) -> None:
    """Algorithm confusion: an HS256 token keyed with the bytes of the RSA public key."""
    pem = public_pem(key_for("RS256"))
    auth = jwt_auth(tmp_path, keys=[{"kid": "rsa", "public_key": write(tmp_path, "rsa.pem", pem)}])
    for header in ({"alg": "HS256", "kid": "rsa"}, {"alg": "HS256"}):
        signing_input = f"{part(header)}.{part(claims())}"
        mac = hmac.new(pem, signing_input.encode(), "sha256").digest()
        with pytest.raises(Unauthenticated, match="algorithm not allowed"):
            auth.verify(f"{signing_input}.{b64(mac)}")


def test_an_ec_key_verifies_its_curves_algorithm_only(tmp_path: Path) -> None:
    p256 = key_for("ES256")
    auth = jwt_auth(tmp_path, keys=[{"kid": "ec", "public_key": write(tmp_path, "ec.pem", public_pem(p256))}])
    assert auth.keys.named("ec") is not None and auth.keys.named("ec").algorithms == ("ES256",)  # type: ignore[union-attr]
    # a token claiming ES384 over a P-256 key is refused before any signature check
    token = pyjwt.encode(claims(), private_pem(p256), algorithm="ES256", headers={"kid": "ec"})
    _, payload, signature = token.split(".")
    relabelled = f"{part({'alg': 'ES384', 'kid': 'ec'})}.{payload}.{signature}"
    with pytest.raises(Unauthenticated, match="algorithm not allowed"):
        auth.verify(relabelled)


# --------------------------------------------------------------------------- bad keys, clear errors


@pytest.mark.parametrize(
    ("material", "message"),
    [
        (b"not a key", "is not a PEM public key"),
        (public_pem(rsa.generate_private_key(65537, 1024)), "an RSA key of 1024 bits; 2048 or more"),
        (
            ec.generate_private_key(ec.SECP256K1())
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            "EC curve secp256k1 is not supported",
        ),
    ],
)
def test_a_key_file_that_cannot_be_used_is_named(tmp_path: Path, material: bytes, message: str) -> None:
    name = write(tmp_path, "bad.pem", material)
    with pytest.raises(KeyConfigError, match=message) as info:
        jwt_auth(tmp_path, keys=[{"kid": "k", "public_key": name}])
    assert "auth.jwt.keys[0].public_key" in str(info.value)


def test_an_encrypted_private_key_is_refused_without_showing_it(tmp_path: Path) -> None:
    encrypted = key_for("EdDSA").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    name = write(tmp_path, "enc.pem", encrypted)
    with pytest.raises(KeyConfigError, match="is encrypted") as info:
        jwt_auth(tmp_path, keys=[{"kid": "k", "private_key": name}])
    assert "BEGIN" not in str(info.value)


def test_a_key_whose_algorithms_are_not_accepted_is_refused(tmp_path: Path) -> None:
    name = write(tmp_path, "ed.pem", public_pem(key_for("EdDSA")))
    with pytest.raises(KeyConfigError, match=r"an ed25519 key needs EdDSA in auth\.jwt\.algorithms"):
        jwt_auth(tmp_path, keys=[{"kid": "k", "public_key": name}], algorithms=["HS256", "RS256"])


# --------------------------------------------------------------------------- JWKS


def jwks(*keys: dict[str, Any]) -> str:
    return json.dumps({"keys": list(keys)})


def test_a_jwks_file_verifies_by_kid_and_skips_encryption_keys(tmp_path: Path) -> None:
    rs, es, ed = key_for("RS256"), key_for("ES256"), key_for("EdDSA")
    enc = jwk_of(MAKERS["RS256"](), "enc-key", use="enc")
    name = write(tmp_path, "jwks.json", jwks(jwk_of(rs, "r"), jwk_of(es, "e"), jwk_of(ed, "d"), enc))
    auth = jwt_auth(tmp_path, jwks=name)
    assert [k.kid for k in auth.keys.keys] == ["r", "e", "d"]
    for alg, key, kid in (("RS256", rs, "r"), ("ES256", es, "e"), ("EdDSA", ed, "d")):
        token = pyjwt.encode(claims(sub=kid), private_pem(key), algorithm=alg, headers={"kid": kid})
        assert auth.verify(token).subject == kid
    stranger = pyjwt.encode(claims(), private_pem(rs), algorithm="RS256", headers={"kid": "nobody"})
    with pytest.raises(Unauthenticated, match="unknown key"):
        auth.verify(stranger)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"keys": 3}', "a JWKS is an object with a 'keys' list"),
        (jwks({"kty": "oct", "k": "c2VjcmV0", "kid": "s"}), "does not belong in a JWKS"),
        (jwks({"kty": "RSA", "kid": "r", "e": "AQAB"}), "keys\\[0\\]: 'n' is missing"),
        (
            jwks({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "e"}),
            "not a valid EC public key",
        ),
    ],
)
def test_a_jwks_file_that_cannot_be_used_is_named(tmp_path: Path, content: str, message: str) -> None:
    name = write(tmp_path, "jwks.json", content)
    with pytest.raises(KeyConfigError, match=message) as info:
        jwt_auth(tmp_path, jwks=name)
    assert "jwks.json" in str(info.value)


async def test_an_edited_jwks_file_is_reloaded_and_a_broken_one_keeps_the_keys(tmp_path: Path) -> None:
    old, new = key_for("ES256"), key_for("EdDSA")
    name = write(tmp_path, "jwks.json", jwks(jwk_of(old, "old")))
    settings = JWT.model_validate({"jwks": name, "jwks_refresh": "1h"})
    auth = JWTAuth(settings, clock=Clock(), base_dir=tmp_path)
    refresher = JwksRefresher(auth, settings, tmp_path, min_early=0)
    await refresher.start()
    try:
        old_token = pyjwt.encode(claims(), private_pem(old), algorithm="ES256", headers={"kid": "old"})
        new_token = pyjwt.encode(claims(), private_pem(new), algorithm="EdDSA", headers={"kid": "new"})
        assert auth.verify(old_token).subject == "alice"
        write(tmp_path, "jwks.json", jwks(jwk_of(old, "old"), jwk_of(new, "new")) + " ")
        with pytest.raises(Unauthenticated, match="unknown key"):
            auth.verify(new_token)  # wakes the refresher; this token itself is refused
        await eventually(lambda: auth.keys.named("new") is not None)
        assert auth.verify(new_token).subject == "alice"
        write(tmp_path, "jwks.json", "{broken")
        await refresher.refresh()
        assert "is not JSON" in refresher.status()["file"]["error"]
        assert auth.verify(new_token).subject == "alice"  # the keys in use stay
    finally:
        await refresher.stop()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 whose keys the test changes."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.status = 200
        self.fetches = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response({"keys": self.keys}, status=self.status)


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[JwksServer, str]]:
    server = JwksServer()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server, f"http://127.0.0.1:{port}/.well-known/jwks.json"
    finally:
        await runner.cleanup()


async def test_a_jwks_url_is_fetched_at_start_and_again_for_an_unknown_kid(
    tmp_path: Path, jwks_server: tuple[JwksServer, str]
) -> None:
    server, url = jwks_server
    first, second = key_for("RS256"), key_for("ES384")
    server.keys = [jwk_of(first, "k1")]
    settings = JWT.model_validate({"jwks_url": url})
    auth = JWTAuth(settings, clock=Clock(), base_dir=tmp_path)
    refresher = JwksRefresher(auth, settings, tmp_path, min_early=0)
    await refresher.start()
    try:
        assert server.fetches == 1
        token = pyjwt.encode(claims(), private_pem(first), algorithm="RS256", headers={"kid": "k1"})
        assert auth.verify(token).subject == "alice"
        server.keys = [jwk_of(second, "k2")]  # the provider rotated
        rotated = pyjwt.encode(claims(), private_pem(second), algorithm="ES384", headers={"kid": "k2"})
        with pytest.raises(Unauthenticated, match="unknown key"):
            auth.verify(rotated)
        await eventually(lambda: auth.keys.named("k2") is not None)
        assert auth.verify(rotated).subject == "alice"
        with pytest.raises(Unauthenticated, match="unknown key"):
            auth.verify(token)  # k1 left the set: its cached principal went with it
        server.status = 500
        await refresher.refresh()
        assert refresher.status()["url"]["error"] == "HTTP 500"
        assert auth.verify(rotated).subject == "alice"
    finally:
        await refresher.stop()


async def test_an_unreachable_jwks_url_does_not_stop_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    settings = AuthSettings.model_validate({"jwt": {"secret": SECRET, "jwks_url": url, "jwks_timeout": "2s"}})
    auth = Auth(settings, clock=Clock(), base_dir=tmp_path)
    await auth.start()
    try:
        assert auth.status()["jwks"]["url"]["error"]
        assert f"JWKS {url} not fetched" in caplog.text
        assert auth.jwt.verify(auth.jwt.issue("alice", "admin")).subject == "alice"  # the secret still works
    finally:
        await auth.stop()


# --------------------------------------------------------------------------- through the manifest and a node


def manifest_with(tmp_path: Path, jwt: str) -> Path:
    path = tmp_path / "msuite.yaml"
    path.write_text(f"name: keys\nhttp: {{port: 0}}\nauth:\n  jwt:\n{jwt}  acl: {{/private/: admin}}\n")
    return path


@pytest.mark.parametrize(
    ("jwt", "where", "message"),
    [
        (
            "    keys: [{kid: a, public_key: missing.pem}]\n",
            (5, 33, "auth.jwt.keys[0].public_key"),
            "key file not found",
        ),
        ("    jwks: nowhere.json\n", (5, 11, "auth.jwt.jwks"), "key file not found"),
        ("    ttl: 1h\n", (5, 5, "auth.jwt"), "auth.jwt needs a key"),
        (
            f"    keys: [{{kid: a, secret: {SECRET}, public_key: k.pem}}]\n",
            (5, 12, "auth.jwt.keys[0]"),
            "exactly one of secret, public_key, private_key (this one: secret and public_key)",
        ),
        (
            f"    keys: [{{kid: a, secret: {SECRET}}}, {{kid: a, secret: {OTHER_SECRET}}}]\n",
            (5, 114, "auth.jwt.keys[1].kid"),
            "kid 'a' is also the kid of keys[0]",
        ),
        (f"    secret: {SECRET}\n    sign_with: b\n", (6, 16, "auth.jwt.sign_with"), "no key with kid 'b'"),
    ],
)
def test_validate_locates_key_problems(
    tmp_path: Path, jwt: str, where: tuple[int, int, str], message: str
) -> None:
    (tmp_path / "k.pem").write_bytes(public_pem(key_for("ES256")))
    found = errors_of(manifest_with(tmp_path, jwt))
    assert [(d.line, d.column, d.path) for d in found] == [where]
    assert message in found[0].message


async def test_a_key_file_that_does_not_parse_stops_the_build_at_its_position(tmp_path: Path) -> None:
    (tmp_path / "idp.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    path = manifest_with(tmp_path, "    keys: [{kid: idp, public_key: idp.pem}]\n")
    node = Node(prepare(load_manifest(path), tmp_path))
    with pytest.raises(KeyConfigError) as info:
        node.build()
    assert str(info.value) == (
        f"{path}:5:35: auth.jwt.keys[0].public_key: {tmp_path / 'idp.pem'} is not a PEM public key"
    )


async def test_a_node_signs_with_its_private_key_and_serves_tokens_of_a_jwks(tmp_path: Path) -> None:
    own, idp = key_for("EdDSA"), key_for("RS256")
    (tmp_path / "own.pem").write_bytes(private_pem(own))
    (tmp_path / "idp.json").write_text(jwks(jwk_of(idp, "idp-1")))
    path = manifest_with(tmp_path, "    keys: [{kid: own, private_key: own.pem}]\n    jwks: idp.json\n")
    node = Node(prepare(load_manifest(path), tmp_path))

    async def private(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    node.http.router.add_get("/private/x", private)
    async with node:
        harness = Harness(node, None)
        try:
            async with harness.http.get("/private/x", headers=harness.bearer()) as response:
                assert response.status == 200  # the node's own EdDSA token
            from_idp = pyjwt.encode(
                claims(role="admin", exp=int(time.time()) + 60, iat=int(time.time())),
                private_pem(idp),
                algorithm="RS256",
                headers={"kid": "idp-1"},
            )
            headers = {"Authorization": f"Bearer {from_idp}"}
            async with harness.http.get("/private/x", headers=headers) as response:
                assert response.status == 200
            headers = {"Authorization": f"Bearer {from_idp[:-4]}AAAA"}
            async with harness.http.get("/private/x", headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["message"] == "invalid token"
        finally:
            await harness.close()


def test_status_lists_keys_without_their_material(tmp_path: Path) -> None:
    pem = write(tmp_path, "own.pem", private_pem(key_for("EdDSA")))
    auth = jwt_auth(tmp_path, secret=SECRET, keys=[{"kid": "own", "private_key": pem}], sign_with="own")
    status = auth.status()
    assert status["signer"] == "own"
    assert [(k["kid"], k["kind"], k["signs"]) for k in status["keys"]] == [
        (None, "hmac", "HS256"),
        ("own", "ed25519", "EdDSA"),
    ]
    text = json.dumps(status) + repr(auth)
    assert SECRET not in text and "PRIVATE" not in text
    assert NOW  # the module's clock is the suite's
