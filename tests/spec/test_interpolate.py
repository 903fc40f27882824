"""Environment interpolation: the three forms, escapes, and typing after it."""

from __future__ import annotations

import pytest

from msuite.spec import InterpolationError, interpolate, loads_manifest

ENV = {"HOST": "10.1.2.3", "EMPTY": "", "PORT": "9000"}


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("${HOST}", "10.1.2.3"),
        ("tcp://${HOST}:${PORT}", "tcp://10.1.2.3:9000"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${HOST:-fallback}", "10.1.2.3"),
        ("${MISSING:-}", ""),
        ("${MISSING:-a:b}", "a:b"),
        ("${HOST:?needed}", "10.1.2.3"),
        ("$${HOST}", "${HOST}"),
        ("cost: $5", "cost: $5"),
        ("$$", "$$"),
        ("no references", "no references"),
    ],
)
def test_forms(text: str, result: str) -> None:
    assert interpolate(text, ENV) == result


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("${MISSING}", "MISSING is not set"),
        ("${EMPTY:?give it a value}", "EMPTY: give it a value"),
        ("${MISSING:?}", "MISSING: is required"),
        ("${HOST", "unclosed"),
        ("${}", "followed by a variable name"),
        ("${1X}", "followed by a variable name"),
        ("${HOST:+x}", "not a valid reference"),
    ],
)
def test_errors(text: str, words: str) -> None:
    with pytest.raises(InterpolationError, match=words.replace("$", r"\$")):
        interpolate(text, ENV)


def test_plain_values_are_typed_after_interpolation_quoted_ones_stay_text() -> None:
    m = loads_manifest(
        "name: x\nhttp:\n  port: ${PORT}\n"
        "config:\n  plain: ${PORT}\n  quoted: '${PORT}'\n  flag: ${MISSING:-true}\n",
        env=ENV,
    )
    assert m.http is not None and m.http.port == 9000
    assert m.config == {"plain": 9000, "quoted": "9000", "flag": True}


def test_keys_are_not_interpolated() -> None:
    m = loads_manifest("name: x\nconfig: {'${HOST}': 1}\n", env=ENV)
    assert m.config == {"${HOST}": 1}


def test_secret_from_the_environment_never_shows_in_errors() -> None:
    secret = "env-secret-value-x"  # too short: the error must not echo it
    with pytest.raises(Exception) as info:
        loads_manifest("name: x\nauth:\n  jwt: {secret: '${JWT}'}\n", env={"JWT": secret})
    assert secret not in str(info.value)
    assert "auth.jwt.secret" in str(info.value)


def test_an_empty_bootstrap_entry_is_skipped_so_a_seed_may_come_from_the_environment() -> None:
    from msuite.spec import loads_manifest

    text = 'name: x\np2p:\n  bootstrap: ["${SEED:-}"]\n'
    seed = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWMBAX9jnp1Pkzb89fRiMafXqCx7jc4yX72abBJpk1PN6s"
    assert loads_manifest(text, file="m.yaml", env={}).p2p.bootstrap == ()  # type: ignore[union-attr]
    assert loads_manifest(text, file="m.yaml", env={"SEED": seed}).p2p.bootstrap == (seed,)  # type: ignore[union-attr]
