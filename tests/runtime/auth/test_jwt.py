"""JWTAuth: issuing, verifying (every refusal, both directions), interop with PyJWT, the cache."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest

from msuite.runtime.auth import JWTAuth, Principal, Unauthenticated
from msuite.runtime.auth.keys import TokenKey
from msuite.spec import Role
from tests.runtime.auth.tokens import NOW, OTHER_SECRET, SECRET, Clock, b64, claims, craft, part, settings


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(clock: Clock) -> JWTAuth:
    return JWTAuth(settings(ttl="1h"), clock=clock)


def refused(auth: JWTAuth, token: str, message: str) -> None:
    """``token`` is refused with ``message``, which never echoes the token."""
    with pytest.raises(Unauthenticated) as info:
        auth.verify(token)
    assert str(info.value) == message
    if len(token) > 8:
        assert token not in str(info.value)


def pyjwt_token(payload: dict[str, Any], *, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return pyjwt.encode(payload, secret.encode(), algorithm=algorithm)


# --------------------------------------------------------------------------- issue / verify


def test_round_trip_carries_the_claims(auth: JWTAuth) -> None:
    token = auth.issue("alice", Role.ADMIN, meta={"org": "acme", "groups": ["a", {"b": 1}]})
    principal = auth.verify(token)
    assert principal == Principal("alice", Role.ADMIN, {"org": "acme", "groups": ("a", {"b": 1})}, NOW + 3600)
    assert principal.authenticated
    assert principal.meta["groups"][1]["b"] == 1
    with pytest.raises(TypeError):
        principal.meta["org"] = "other"  # type: ignore[index]  # read-only, nested too
    with pytest.raises(TypeError):
        principal.meta["groups"][1]["b"] = 2
    # the standard claims, as any JWT library reads them
    payload = pyjwt.decode(token, SECRET.encode(), algorithms=["HS256"], options={"verify_exp": False})
    assert payload == {
        "sub": "alice",
        "role": "admin",
        "iat": int(NOW),
        "exp": int(NOW) + 3600,
        "meta": {"org": "acme", "groups": ["a", {"b": 1}]},
    }
    assert pyjwt.get_unverified_header(token)["alg"] == "HS256"


def test_issue_takes_roles_as_text_and_a_ttl(auth: JWTAuth) -> None:
    assert auth.verify(auth.issue("bob", "public_read")).role == Role.PUBLIC_READ
    assert auth.verify(auth.issue("bob", "none")).role == Role.NONE
    assert auth.verify(auth.issue("bob", Role.ADMIN, ttl=60)).expires == NOW + 60
    assert auth.verify(auth.issue("bob", Role.ADMIN, ttl=timedelta(minutes=5))).expires == NOW + 300
    assert auth.verify(auth.issue("bob", Role.ADMIN)).meta == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subject": "x", "role": "superuser"}, "unknown role 'superuser'"),
        ({"subject": "x", "role": "Admin"}, "unknown role 'Admin'"),
        ({"subject": "", "role": "admin"}, "non-empty string"),
        ({"subject": "x", "role": "admin", "ttl": 0}, "ttl must be positive"),
        ({"subject": "x", "role": "admin", "ttl": timedelta(seconds=-1)}, "ttl must be positive"),
        ({"subject": "x", "role": "admin", "meta": {"blob": "x" * 9000}}, "over max_token_size"),
    ],
)
def test_issue_refuses(auth: JWTAuth, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        auth.issue(**kwargs)


def test_issuer_audience_and_signing_algorithm(clock: Clock) -> None:
    auth = JWTAuth(settings(algorithms=["HS512", "HS256"], issuer="notes", audience="web"), clock=clock)
    token = auth.issue("alice", "admin")
    assert pyjwt.get_unverified_header(token)["alg"] == "HS512"  # the first one signs
    payload = pyjwt.decode(token, SECRET.encode(), algorithms=["HS512"], audience="web", issuer="notes",
                           options={"verify_exp": False, "verify_iat": False})  # fmt: skip
    assert payload["iss"] == "notes" and payload["aud"] == "web"
    assert auth.verify(token).subject == "alice"
    # both allowed algorithms verify; an audience list naming ours is accepted
    both = claims(iss="notes", aud=["other", "web"])
    assert auth.verify(craft({"alg": "HS256"}, both)).subject == "alice"
    assert auth.verify(craft({"alg": "HS512"}, both, sign_with="HS512")).subject == "alice"
    refused(
        auth, craft({"alg": "HS384"}, both, sign_with="HS384"), "token signed with an algorithm not allowed"
    )
    refused(auth, craft({"alg": "HS256"}, claims(iss="mail", aud="web")), "token from another issuer")
    refused(auth, craft({"alg": "HS256"}, claims(aud="web")), "token from another issuer")
    refused(auth, craft({"alg": "HS256"}, claims(iss="notes", aud="mobile")), "token for another audience")
    refused(auth, craft({"alg": "HS256"}, claims(iss="notes", aud=["mobile"])), "token for another audience")
    refused(auth, craft({"alg": "HS256"}, claims(iss="notes")), "token for another audience")


def test_a_token_for_some_audience_is_refused_by_a_node_without_one(auth: JWTAuth) -> None:
    # RFC 7519 4.1.3: a token naming an audience is only for that audience
    refused(auth, craft({"alg": "HS256"}, claims(aud="web")), "token for another audience")
    assert auth.verify(craft({"alg": "HS256"}, claims(iss="anyone"))).subject == "alice"  # no issuer set


# --------------------------------------------------------------------------- time


def test_expiry_with_the_injected_clock(auth: JWTAuth, clock: Clock) -> None:
    # go-msuite: JWT round trip, then rejected after expiry
    token = auth.issue("alice", "admin", ttl=5)
    auth.clear_cache()
    clock.advance(4.999)
    assert auth.verify(token).subject == "alice"
    auth.clear_cache()
    clock.advance(0.001)  # now == exp
    refused(auth, token, "token expired")
    clock.advance(1000)
    refused(auth, token, "token expired")


def test_leeway_tolerates_skew_on_expiry(clock: Clock) -> None:
    auth = JWTAuth(settings(leeway="30s"), clock=clock)
    token = auth.issue("alice", "admin", ttl=10)
    clock.advance(39)
    assert auth.verify(token).subject == "alice"
    clock.advance(1)
    refused(auth, token, "token expired")


def test_a_token_issued_in_the_future_is_refused(auth: JWTAuth, clock: Clock) -> None:
    ahead = craft({"alg": "HS256"}, claims(iat=int(NOW) + 60))
    refused(auth, ahead, "token issued in the future")
    clock.advance(60)
    assert auth.verify(ahead).subject == "alice"  # not cached as refused
    tolerant = JWTAuth(settings(leeway="1m"), clock=Clock())
    assert tolerant.verify(ahead).subject == "alice"
    refused(tolerant, craft({"alg": "HS256"}, claims(iat=int(NOW) + 61)), "token issued in the future")


def test_not_before(auth: JWTAuth, clock: Clock) -> None:
    later = craft({"alg": "HS256"}, claims(nbf=int(NOW) + 10))
    refused(auth, later, "token not yet valid")
    clock.advance(10)
    assert auth.verify(later).subject == "alice"


# --------------------------------------------------------------------------- bad tokens

TOO_BIG = craft({"alg": "HS256"}, claims(meta={"blob": "x" * 9000}))

BAD_TOKENS: list[tuple[str, Callable[[], str], str]] = [
    ("empty", lambda: "", "invalid token"),
    ("one part", lambda: "abc", "invalid token"),
    ("junk parts", lambda: "a.b.c", "invalid token"),
    ("two parts", lambda: craft({"alg": "HS256"}, claims()).rsplit(".", 1)[0], "invalid token"),
    ("four parts", lambda: craft({"alg": "HS256"}, claims()) + ".x", "invalid token"),
    ("dots", lambda: "..", "invalid token"),
    ("spaces", lambda: " " + craft({"alg": "HS256"}, claims()), "invalid token"),
    ("not ascii", lambda: craft({"alg": "HS256"}, claims()) + "é", "invalid token"),
    ("header not json", lambda: b64(b"{alg") + "." + part(claims()) + ".sig", "invalid token"),
    ("header an array", lambda: part(["HS256"]) + "." + part(claims()) + ".sig", "invalid token"),
    ("header without alg", lambda: craft({"typ": "JWT"}, claims()), "invalid token"),
    ("alg not text", lambda: craft({"alg": 256}, claims()), "invalid token"),
    ("huge nested header", lambda: b64(b"[" * 100_000) + ".e30.sig", "token too large"),
    ("nested header", lambda: b64(b"[" * 3000 + b"]" * 3000) + ".e30.sig", "invalid token"),
    ("huge", lambda: "x" * 9000, "token too large"),
    ("huge but signed", lambda: TOO_BIG, "token too large"),
    ("other secret", lambda: craft({"alg": "HS256"}, claims(), secret=OTHER_SECRET), "invalid token"),
    ("bad signature", lambda: craft({"alg": "HS256"}, claims())[:-4] + "AAAA", "invalid token"),
    ("no signature", lambda: craft({"alg": "HS256"}, claims(), secret=None), "invalid token"),
    ("alg none", lambda: craft({"alg": "none"}, claims(), secret=None), "unsigned tokens are not accepted"),
    (
        "alg None",
        lambda: craft({"alg": "None", "typ": "JWT"}, claims(), secret=None),
        "unsigned tokens are not accepted",
    ),
    ("alg none signed", lambda: craft({"alg": "none"}, claims()), "unsigned tokens are not accepted"),
    (
        "HS512 not allowed",
        lambda: craft({"alg": "HS512"}, claims(), sign_with="HS512"),
        "token signed with an algorithm not allowed",
    ),
    ("RS256", lambda: craft({"alg": "RS256"}, claims()), "token signed with an algorithm not allowed"),
    ("alg header lies", lambda: craft({"alg": "HS256"}, claims(), sign_with="HS512"), "invalid token"),
    (
        "crit header",
        lambda: craft({"alg": "HS256", "crit": ["exp"]}, claims()),
        "token uses unsupported critical header parameters",
    ),
    ("payload an array", lambda: craft({"alg": "HS256"}, ["alice"]), "invalid token"),
    (
        "payload not json",
        lambda: pyjwt.api_jws.encode(b"{nope", SECRET.encode(), algorithm="HS256"),
        "invalid token",
    ),
    ("no exp", lambda: craft({"alg": "HS256"}, claims(exp=None)), "token has no expiry"),
    (
        "exp as text",
        lambda: craft({"alg": "HS256"}, claims(exp=str(int(NOW) + 60))),
        "token has an invalid exp claim",
    ),
    ("exp true", lambda: craft({"alg": "HS256"}, claims(exp=True)), "token has an invalid exp claim"),
    ("exp huge", lambda: craft({"alg": "HS256"}, claims(exp=10**400)), "token has an invalid exp claim"),
    ("iat as text", lambda: craft({"alg": "HS256"}, claims(iat="now")), "token has an invalid iat claim"),
    ("expired", lambda: craft({"alg": "HS256"}, claims(exp=int(NOW) - 1)), "token expired"),
    ("no sub", lambda: craft({"alg": "HS256"}, claims(sub=None)), "token has no subject"),
    ("empty sub", lambda: craft({"alg": "HS256"}, claims(sub="")), "token has no subject"),
    ("sub a number", lambda: craft({"alg": "HS256"}, claims(sub=42)), "token has no subject"),
    ("no role", lambda: craft({"alg": "HS256"}, claims(role=None)), "token has no role"),
    ("role a number", lambda: craft({"alg": "HS256"}, claims(role=5)), "token has no role"),
    ("unknown role", lambda: craft({"alg": "HS256"}, claims(role="superuser")), "token has an unknown role"),
    ("role in caps", lambda: craft({"alg": "HS256"}, claims(role="ADMIN")), "token has an unknown role"),
    ("meta a list", lambda: craft({"alg": "HS256"}, claims(meta=["x"])), "token has an invalid meta claim"),
]


@pytest.mark.parametrize(
    ("token", "message"), [(t, m) for _, t, m in BAD_TOKENS], ids=[i for i, _, _ in BAD_TOKENS]
)
def test_bad_tokens_are_refused(auth: JWTAuth, token: Callable[[], str], message: str) -> None:
    refused(auth, token(), message)
    assert auth.cached == 0


def test_the_control_token_of_the_bad_cases_is_accepted(auth: JWTAuth) -> None:
    assert auth.verify(craft({"alg": "HS256"}, claims())) == Principal(
        "alice", Role.AUTHENTICATED_WRITE, {}, NOW + 3600
    )
    assert auth.verify(craft({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims(meta={"a": 1}))).meta == {
        "a": 1
    }


def test_a_tampered_payload_is_refused(auth: JWTAuth) -> None:
    header, _, signature = auth.issue("alice", "public_read").split(".")
    forged = f"{header}.{part(claims(role='admin'))}.{signature}"
    refused(auth, forged, "invalid token")


def test_max_token_size_is_the_limit(clock: Clock) -> None:
    token = craft({"alg": "HS256"}, claims(meta={"pad": "x" * 100}))
    exact = JWTAuth(settings(max_token_size=len(token)), clock=clock)
    assert exact.verify(token).subject == "alice"
    smaller = JWTAuth(settings(max_token_size=len(token) - 1), clock=clock)
    refused(smaller, token, "token too large")


def test_not_a_string_is_refused(auth: JWTAuth) -> None:
    for token in (None, b"a.b.c", 42, ["a"]):
        with pytest.raises(Unauthenticated, match=r"^invalid token$"):
            auth.verify(token)  # type: ignore[arg-type]


def test_a_secret_shaped_like_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="PEM or SSH key"):
        JWTAuth(settings(secret="-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n"))


# --------------------------------------------------------------------------- interop


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_pyjwt_tokens_verify(algorithm: str) -> None:
    auth = JWTAuth(settings(algorithms=[algorithm]))  # the real clock
    now = int(time.time())
    token = pyjwt_token(
        {"sub": "carol", "role": "authenticated_read", "iat": now, "exp": now + 60, "meta": {"n": 1}},
        algorithm=algorithm,
    )
    assert auth.verify(token) == Principal("carol", Role.AUTHENTICATED_READ, {"n": 1}, now + 60.0)
    # and the other way round
    ours = auth.issue("dave", "admin")
    assert pyjwt.decode(ours, SECRET.encode(), algorithms=[algorithm])["sub"] == "dave"
    # the same claims with another secret, or an expired one, are still refused
    refused(auth, pyjwt_token({"sub": "c", "role": "admin", "exp": now + 60}, secret=OTHER_SECRET,
                              algorithm=algorithm), "invalid token")  # fmt: skip
    refused(
        auth,
        pyjwt_token({"sub": "c", "role": "admin", "exp": now - 10}, algorithm=algorithm),
        "token expired",
    )


def test_pyjwt_tokens_with_issuer_and_audience(clock: Clock) -> None:
    auth = JWTAuth(settings(issuer="notes", audience="web"), clock=clock)
    payload = {"sub": "c", "role": "admin", "exp": int(NOW) + 60, "iss": "notes", "aud": ["web", "cli"]}
    assert auth.verify(pyjwt_token(payload)).subject == "c"
    refused(auth, pyjwt_token({**payload, "aud": "cli"}), "token for another audience")


# --------------------------------------------------------------------------- cache


@pytest.fixture
def jose_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each signature check (python-jose's, through the node's keys), by token."""
    calls: list[str] = []
    real = TokenKey.verify

    def counting(key: TokenKey, alg: str, signing_input: bytes, signature: bytes) -> bool:
        calls.append(f"{signing_input.decode()}.{b64(signature)}")
        return real(key, alg, signing_input, signature)

    monkeypatch.setattr(TokenKey, "verify", counting)
    return calls


def test_a_repeated_token_skips_jose(auth: JWTAuth, jose_calls: list[str]) -> None:
    token = auth.issue("alice", "admin")
    first = auth.verify(token)
    assert auth.verify(token) is first
    assert auth.verify(token) is first
    assert jose_calls == [token]
    other = auth.issue("bob", "admin")
    auth.verify(other)
    assert jose_calls == [token, other]
    assert auth.cached == 2 and auth.status()["cached_tokens"] == 2


def test_a_cached_token_is_refused_once_expired(auth: JWTAuth, clock: Clock, jose_calls: list[str]) -> None:
    token = auth.issue("alice", "admin", ttl=10)
    auth.verify(token)
    clock.advance(9.5)
    auth.verify(token)
    assert len(jose_calls) == 1
    clock.advance(0.5)
    refused(auth, token, "token expired")
    assert auth.cached == 0
    refused(auth, token, "token expired")


def test_within_leeway_the_cache_steps_aside_for_a_full_check(clock: Clock, jose_calls: list[str]) -> None:
    auth = JWTAuth(settings(leeway="5s"), clock=clock)
    token = auth.issue("alice", "admin", ttl=10)
    auth.verify(token)
    clock.advance(12)  # past exp, within leeway: verified again (not cached), still accepted
    auth.verify(token)
    auth.verify(token)
    assert len(jose_calls) == 3 and auth.cached == 0
    clock.advance(3)
    refused(auth, token, "token expired")


def test_refused_tokens_are_not_cached(auth: JWTAuth, jose_calls: list[str]) -> None:
    forged = craft({"alg": "HS256"}, claims(), secret=OTHER_SECRET)
    refused(auth, forged, "invalid token")
    refused(auth, forged, "invalid token")
    assert jose_calls == [forged, forged]
    assert auth.cached == 0


def test_the_cache_is_bounded_and_evicts_the_oldest(clock: Clock, jose_calls: list[str]) -> None:
    auth = JWTAuth(settings(), clock=clock, cache_size=3)
    tokens = [auth.issue(f"user{i}", "admin") for i in range(5)]
    for token in tokens:
        auth.verify(token)
    assert auth.cached == 3
    jose_calls.clear()
    for token in tokens[2:]:
        auth.verify(token)
    assert jose_calls == []  # the newest three are cached
    auth.verify(tokens[0])  # the oldest was evicted: verified again, evicting the next oldest
    assert jose_calls == [tokens[0]] and auth.cached == 3
    auth.verify(tokens[2])
    assert jose_calls == [tokens[0], tokens[2]]


def test_a_cache_size_of_zero_caches_nothing(clock: Clock, jose_calls: list[str]) -> None:
    auth = JWTAuth(settings(), clock=clock, cache_size=0)
    token = auth.issue("alice", "admin")
    auth.verify(token)
    auth.verify(token)
    assert len(jose_calls) == 2 and auth.cached == 0
    with pytest.raises(ValueError, match="cache_size"):
        JWTAuth(settings(), cache_size=-1)


# --------------------------------------------------------------------------- status


def test_status_and_repr_never_show_the_secret(clock: Clock) -> None:
    auth = JWTAuth(settings(algorithms=["HS384"], ttl="2h", issuer="notes"), clock=clock)
    auth.verify(auth.issue("alice", "admin"))
    status = auth.status()
    assert status == {
        "algorithms": ["HS384"],
        "keys": [
            {
                "kid": None,
                "kind": "hmac",
                "algorithms": ["HS384"],
                "signs": "HS384",
                "source": "auth.jwt.secret",
            }
        ],
        "signer": "auth.jwt.secret",
        "ttl": 7200.0,
        "leeway": 0.0,
        "issuer": "notes",
        "audience": None,
        "max_token_size": 8192,
        "cached_tokens": 1,
    }
    assert SECRET not in json.dumps(status) and SECRET not in repr(auth)
