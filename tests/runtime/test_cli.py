"""The msuite command line, run as a real subprocess."""

from __future__ import annotations

import base64
import filecmp
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from msuite.spec import load_manifest, manifest_schema_text
from tests.helpers import REPO

BAD = "name: n\ngrcp: {}\nhttp: {port: 70000}\n"


def msuite(*args: str, cwd: Path | None = None, module: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "msuite"] if module else [str(Path(sys.executable).parent / "msuite")]
    return subprocess.run([*command, *args], check=False, capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.fixture
def bad_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


def test_validate_text_ok() -> None:
    result = msuite("validate", str(REPO / "samples/hello/msuite.yaml"))
    assert result.returncode == 0, result.stderr
    assert "valid (node hello)" in result.stdout
    assert result.stderr == ""


def test_validate_defaults_to_msuite_yaml_in_cwd() -> None:
    result = msuite("validate", cwd=REPO / "samples/hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("msuite.yaml: valid")


def test_validate_text_errors(bad_manifest: Path) -> None:
    result = msuite("validate", str(bad_manifest))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad_manifest}:2:1: grcp: unknown key 'grcp'; did you mean 'grpc'?",
        f"{bad_manifest}:3:14: http.port: must be at most 65535",
        "2 problems in 1 file",
    ]
    assert "Traceback" not in result.stderr


def test_validate_json(bad_manifest: Path) -> None:
    good = REPO / "samples/hello/msuite.yaml"
    result = msuite("validate", "--format", "json", str(good), str(bad_manifest))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["files"] == [
        {"file": str(good), "valid": True, "name": "hello"},
        {"file": str(bad_manifest), "valid": False, "errors": 2},
    ]
    assert report["diagnostics"][1] == {
        "file": str(bad_manifest),
        "line": 3,
        "column": 14,
        "path": "http.port",
        "message": "must be at most 65535",
    }


def test_validate_json_ok() -> None:
    result = msuite("validate", "--format", "json", str(REPO / "samples/hello/msuite.yaml"))
    assert result.returncode == 0
    assert json.loads(result.stdout)["valid"] is True


def test_validate_github(bad_manifest: Path) -> None:
    result = msuite("validate", "--format", "github", str(bad_manifest))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"::error file={bad_manifest},line=2,col=1::grcp: unknown key 'grcp'; did you mean 'grpc'?",
        f"::error file={bad_manifest},line=3,col=14::http.port: must be at most 65535",
    ]


def test_github_format_escapes_properties(tmp_path: Path) -> None:
    path = tmp_path / "a,b:c.yaml"
    path.write_text("name: n\nzz: 1\n")
    result = msuite("validate", "--format", "github", str(path))
    assert f"file={tmp_path}/a%2Cb%3Ac.yaml,line=2,col=1::" in result.stdout


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"- a\n",
        b"\xff\xfe",
        b"name: x\n\tbad: 1\n",
        b"name: x\nconfig: {a: &x 1, b: *x}\n",
        b"[" * 10000,
    ],
)
def test_bad_input_never_shows_a_traceback(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_bytes(content)
    result = msuite("validate", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{path}:")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    result = msuite("validate", str(tmp_path / "nope.yaml"), str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}:1:1: <root>: no such file" in result.stderr
    assert f"{tmp_path}:1:1: <root>: is a directory" in result.stderr


def test_python_dash_m_is_the_same_command(bad_manifest: Path) -> None:
    assert (
        msuite("validate", str(bad_manifest), module=True).stderr
        == msuite("validate", str(bad_manifest)).stderr
    )
    assert "usage: msuite" in msuite("--help", module=True).stdout


def test_usage_errors_exit_2() -> None:
    assert msuite("validate", "--format", "xml").returncode == 2
    assert msuite().returncode == 2


def test_schema_prints_the_committed_schema(tmp_path: Path) -> None:
    result = msuite("schema")
    assert result.returncode == 0
    assert result.stdout == manifest_schema_text()
    out = tmp_path / "schema.json"
    assert msuite("schema", "-o", str(out)).returncode == 0
    assert out.read_text() == (REPO / "schemas/msuite.schema.json").read_text()


def test_init_creates_the_hello_sample(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    result = msuite("init", str(target))
    assert result.returncode == 0, result.stderr
    comparison = filecmp.dircmp(target, REPO / "samples/hello", ignore=["__pycache__", ".msuite", "gen"])
    assert_same_tree(comparison)
    validated = msuite("validate", str(target / "msuite.yaml"))
    assert validated.returncode == 0, validated.stderr


def assert_same_tree(comparison: filecmp.dircmp[str]) -> None:
    assert comparison.left_only == [] and comparison.right_only == []
    _, mismatch, errors = filecmp.cmpfiles(
        comparison.left, comparison.right, comparison.common_files, shallow=False
    )
    assert mismatch == [] and errors == []
    for sub in comparison.subdirs.values():
        assert_same_tree(sub)


def test_init_declares_what_the_runtime_serves(tmp_path: Path) -> None:
    from msuite.spec import load_manifest

    msuite("init", str(tmp_path))
    m = load_manifest(tmp_path / "msuite.yaml")
    assert m.grpc is not None and m.grpc.tcp is not None and m.grpc.tcp.port != 0
    assert m.grpc.tcp.host == "127.0.0.1" and m.grpc.unix is not None
    assert m.http is not None and m.http.gateway and m.diagnostics.status
    assert list(m.services) == ["hello.v1.Greeter"]


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "msuite.yaml").write_text("name: mine\n")
    result = msuite("init", str(tmp_path))
    assert result.returncode == 1
    assert "would overwrite msuite.yaml" in result.stderr
    assert (tmp_path / "msuite.yaml").read_text() == "name: mine\n"
    assert msuite("init", "--force", str(tmp_path)).returncode == 0
    assert "name: hello" in (tmp_path / "msuite.yaml").read_text()


def test_init_with_a_name(tmp_path: Path) -> None:
    assert msuite("init", "--name", "greeter", str(tmp_path)).returncode == 0
    assert "\nname: greeter\n" in (tmp_path / "msuite.yaml").read_text()
    assert msuite("validate", str(tmp_path / "msuite.yaml")).returncode == 0
    assert msuite("init", "--name", "bad name", str(tmp_path / "x")).returncode == 2


# --------------------------------------------------------------------------- naming the manifest

# Each form names tmp_path/chosen/msuite.yaml (node "chosen") while ./msuite.yaml in
# tmp_path is a decoy (node "decoy"); "default" runs inside chosen/ with no argument.
# A form that is ignored falls back to the decoy and the test sees node "decoy".
MANIFEST_FORMS: dict[str, tuple[list[str], str]] = {
    "positional": (["chosen/msuite.yaml"], "."),
    "-f": (["-f", "chosen/msuite.yaml"], "."),
    "--file": (["--file", "chosen/msuite.yaml"], "."),
    "--file=": (["--file=chosen/msuite.yaml"], "."),
    "default": ([], "chosen"),
}


def name_the_manifest(tmp_path: Path, form: str) -> tuple[list[str], Path]:
    """Write the chosen manifest and the decoy; the arguments and folder that ``form`` runs with."""
    (tmp_path / "chosen").mkdir()
    (tmp_path / "chosen" / "msuite.yaml").write_text('name: chosen\nrepo: ":memory:"\n')
    (tmp_path / "msuite.yaml").write_text('name: decoy\nrepo: ":memory:"\n')
    args, cwd = MANIFEST_FORMS[form]
    return args, tmp_path / cwd


@pytest.mark.parametrize("form", MANIFEST_FORMS)
def test_validate_reads_the_manifest_named_by_file_f_file_or_the_default(tmp_path: Path, form: str) -> None:
    args, cwd = name_the_manifest(tmp_path, form)
    result = msuite("validate", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert line.endswith("msuite.yaml: valid (node chosen)")


def test_validate_takes_several_files_as_positionals_and_repeated_f_in_order(tmp_path: Path) -> None:
    for name in "abcd":
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\n")
    result = msuite("validate", "-f", "a.yaml", "--file", "b.yaml", "c.yaml", "d.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{name}.yaml: valid (node {name})" for name in "abcd"]


@pytest.mark.parametrize("form", MANIFEST_FORMS)
def test_generate_writes_beside_the_manifest_named_by_file_f_file_or_the_default(
    tmp_path: Path, form: str
) -> None:
    args, cwd = name_the_manifest(tmp_path, form)
    result = msuite("generate", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "chosen" / "gen"
    assert result.stdout.startswith(f"{out}: written (")
    assert (out / "wiring.py").is_file()
    assert not (tmp_path / "gen").exists()


@pytest.mark.parametrize("form", MANIFEST_FORMS)
def test_up_serves_the_manifest_named_by_file_f_file_or_the_default(tmp_path: Path, form: str) -> None:
    args, cwd = name_the_manifest(tmp_path, form)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "msuite"), "up", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("ready (no listeners) ("), ready
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "stopped chosen" in stderr


@pytest.mark.parametrize("command", ["up", "generate"])
@pytest.mark.parametrize(
    "args",
    [["a.yaml", "-f", "b.yaml"], ["--file", "a.yaml", "b.yaml"], ["-f", "a.yaml", "-f", "b.yaml"]],
    ids=["FILE and -f", "--file and FILE", "-f twice"],
)
def test_one_manifest_commands_refuse_two_in_one_line(tmp_path: Path, command: str, args: list[str]) -> None:
    # a.yaml and b.yaml do not exist: a command that went on would fail with status 1 instead
    result = msuite(command, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"msuite: error: {command} takes one manifest, got 2 (a.yaml, b.yaml): "
        "give it once, as FILE or as -f FILE"
    ]


@pytest.mark.parametrize("command", ["up", "generate"])
@pytest.mark.parametrize("args", [["nope.yaml"], ["-f", "nope.yaml"], []], ids=["FILE", "-f", "default"])
def test_a_missing_manifest_is_one_line_naming_it(tmp_path: Path, command: str, args: list[str]) -> None:
    result = msuite(command, *args, cwd=tmp_path)
    assert result.returncode == 1
    named = args[-1] if args else "msuite.yaml"
    assert result.stderr.splitlines() == [f"{named}:1:1: <root>: no such file"]


def test_init_prints_up_with_the_manifest_as_file(tmp_path: Path) -> None:
    result = msuite("init", "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("next: msuite up demo/msuite.yaml   (then")


def test_validate_in_ci_without_secrets_checks_everything_else(tmp_path: Path) -> None:
    """`${NOTES_JWT_SECRET}` unset made validate (and generate) fail, breaking the README's CI recipe."""
    secret_only = tmp_path / "secret.yaml"
    secret_only.write_text('name: a\nauth:\n  jwt: {secret: "${MSUITE_TEST_UNSET_SECRET}"}\n')
    unbuildable = tmp_path / "port.yaml"
    unbuildable.write_text('name: b\nhttp: {port: "${MSUITE_TEST_UNSET_PORT}"}\n')
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text('name: c\nauth:\n  jwt: {secret: "${MSUITE_TEST_UNSET_SECRET}"}\nhttp: {prot: 1}\n')

    plain = msuite("validate", str(secret_only))
    assert plain.returncode == 1 and "MSUITE_TEST_UNSET_SECRET is not set" in plain.stderr
    lenient = msuite("validate", "--allow-unset-env", str(secret_only), str(unbuildable))
    assert lenient.returncode == 0, lenient.stderr
    assert f"{secret_only}: valid (node a)" in lenient.stdout
    assert f"{unbuildable}: valid, but for the values of unset MSUITE_TEST_UNSET_PORT" in lenient.stdout
    # everything else is still checked
    caught = msuite("validate", "--allow-unset-env", str(wrong))
    assert caught.returncode == 1
    assert "http.prot: unknown key 'prot'; did you mean 'port'?" in caught.stderr
    assert "MSUITE_TEST_UNSET_SECRET" not in caught.stderr


# --------------------------------------------------------------------------- token

TOKEN_SECRET = "t" * 40
TOKEN_MANIFEST = (
    'name: tokens\nrepo: ":memory:"\nauth:\n'
    '  jwt: {secret: "${MSUITE_TEST_TOKEN_SECRET}", ttl: 1h}\n'
    "  roles: [user, service, admin]\n"
)


def verifier(manifest: Path, env: dict[str, str] | None = None) -> Any:
    """The JWTAuth a node of ``manifest`` verifies its tokens with."""
    from msuite.runtime.auth import JWTAuth

    loaded = load_manifest(manifest, env=env or {})
    assert loaded.auth is not None and loaded.auth.jwt is not None
    return JWTAuth(loaded.auth.jwt, roles=loaded.auth.ladder, base_dir=loaded.base_dir)


def claims_of(token: str, part: int = 1) -> dict[str, Any]:
    text = token.split(".")[part]
    loaded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return loaded


@pytest.mark.parametrize("form", MANIFEST_FORMS)
def test_token_prints_only_a_token_the_node_verifies(
    tmp_path: Path, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSUITE_TEST_TOKEN_SECRET", TOKEN_SECRET)
    args, cwd = name_the_manifest(tmp_path, form)
    chosen = tmp_path / "chosen" / "msuite.yaml"
    chosen.write_text(TOKEN_MANIFEST)
    before = int(time.time())
    result = msuite("token", *args, "--sub", "ann", "--role", "service", "--meta", "team=ops", cwd=cwd)
    after = int(time.time())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    token, newline = result.stdout[:-1], result.stdout[-1:]
    assert newline == "\n" and "\n" not in token
    principal = verifier(chosen, {"MSUITE_TEST_TOKEN_SECRET": TOKEN_SECRET}).verify(token)
    assert (principal.subject, principal.role, dict(principal.meta)) == ("ann", "service", {"team": "ops"})
    claims = claims_of(token)
    assert claims["exp"] - claims["iat"] == 3600  # auth.jwt.ttl
    assert before + 3600 <= claims["exp"] <= after + 3600
    assert TOKEN_SECRET not in result.stdout


def test_token_ttl_overrides_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSUITE_TEST_TOKEN_SECRET", TOKEN_SECRET)
    (tmp_path / "msuite.yaml").write_text(TOKEN_MANIFEST)
    result = msuite("token", "--sub", "svc", "--role", "admin", "--ttl", "1m30s", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    claims = claims_of(result.stdout.strip())
    assert claims["exp"] - claims["iat"] == 90
    assert (claims["sub"], claims["role"]) == ("svc", "admin")
    assert "meta" not in claims


def write_private_key(path: Path, kind: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.mark.parametrize(("kind", "alg"), [("rsa", "RS256"), ("ed25519", "EdDSA")])
def test_token_signs_with_a_private_key_relative_to_the_manifest(tmp_path: Path, kind: str, alg: str) -> None:
    node = tmp_path / "node"
    (node / "keys").mkdir(parents=True)
    write_private_key(node / "keys" / "signer.pem", kind)
    manifest = node / "msuite.yaml"
    manifest.write_text(
        'name: keyed\nrepo: ":memory:"\nauth:\n  jwt:\n    keys:\n'
        "      - {kid: signer, private_key: keys/signer.pem}\n"
    )
    # run from another folder: the key is found beside the manifest, as the node finds it
    result = msuite(
        "token", "node/msuite.yaml", "--sub", "ann", "--role", "authenticated_write", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert claims_of(token, 0) == {"alg": alg, "typ": "JWT", "kid": "signer"}
    principal = verifier(manifest).verify(token)
    assert (principal.subject, principal.role) == ("ann", "authenticated_write")
    claims = claims_of(token)
    assert claims["exp"] - claims["iat"] == 24 * 3600  # the default auth.jwt.ttl


def test_token_needs_a_key_that_can_sign(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    (tmp_path / "partner.pem").write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "verifies.yaml").write_text(
        'name: v\nrepo: ":memory:"\nauth:\n  jwt:\n'
        "    keys:\n      - {kid: partner, public_key: partner.pem}\n"
        "    jwks_url: https://idp.example/jwks.json\n"
    )
    (tmp_path / "open.yaml").write_text('name: o\nrepo: ":memory:"\n')
    verifies = msuite("token", "verifies.yaml", "--sub", "ann", "--role", "admin", cwd=tmp_path)
    assert verifies.returncode == 1
    assert verifies.stdout == ""
    assert verifies.stderr.splitlines() == [
        "verifies.yaml:5:5: auth.jwt: no key can sign tokens (auth.jwt.keys, auth.jwt.jwks_url only "
        "verify): msuite token needs auth.jwt.secret, or a key of auth.jwt.keys with a secret or a private_key"
    ]
    without_auth = msuite("token", "-f", "open.yaml", "--sub", "ann", "--role", "admin", cwd=tmp_path)
    assert without_auth.returncode == 1
    assert without_auth.stdout == ""
    assert without_auth.stderr.splitlines() == [
        "open.yaml:1:1: auth.jwt: msuite token needs auth.jwt with a key that can sign "
        "(a secret, or a key with a secret or a private_key)"
    ]


def test_token_refuses_a_role_off_the_ladder_with_did_you_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSUITE_TEST_TOKEN_SECRET", TOKEN_SECRET)
    (tmp_path / "msuite.yaml").write_text(TOKEN_MANIFEST)
    result = msuite("token", "--sub", "ann", "--role", "admn", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "msuite: error: --role: unknown role 'admn'; did you mean 'admin'? "
        "(roles, lowest first: none, user, service, admin)"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sub", ""], "--sub: a token's subject is a non-empty string"),
        (["--sub", "a", "--ttl", "0s"], "--ttl '0s': a token's ttl must be positive"),
        (["--sub", "a", "--ttl", "15"], "--ttl '15': not a duration: write a number and a unit"),
        (["--sub", "a", "--meta", "team"], "--meta 'team': write KEY=VALUE, e.g. --meta team=ops"),
        (["--sub", "a", "--meta", "k=1", "--meta", "k=2"], "--meta 'k' is given twice"),
    ],
    ids=["empty sub", "zero ttl", "ttl without unit", "meta without =", "meta twice"],
)
def test_token_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setenv("MSUITE_TEST_TOKEN_SECRET", TOKEN_SECRET)
    (tmp_path / "msuite.yaml").write_text(TOKEN_MANIFEST)
    result = msuite("token", *args, "--role", "user", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"msuite: error: {message}")


def test_token_requires_sub_and_role(tmp_path: Path) -> None:
    for args in (["--sub", "ann"], ["--role", "user"]):
        result = msuite("token", *args, cwd=tmp_path)
        assert result.returncode == 2
        assert "the following arguments are required" in result.stderr


def test_token_with_an_unset_variable_fails_like_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The samples read SAMPLES_JWT_SECRET; unset, token says what `msuite up` says."""
    monkeypatch.delenv("SAMPLES_JWT_SECRET", raising=False)
    sample = tmp_path / "msuite.yaml"
    sample.write_text(
        'name: sample\nrepo: ":memory:"\nauth:\n  jwt: {secret: "${SAMPLES_JWT_SECRET}"}\n'
        "  roles: [user, service, admin]\n"
    )
    token = msuite("token", "--sub", "ann", "--role", "user", cwd=tmp_path)
    up = msuite("up", cwd=tmp_path)
    assert token.returncode == up.returncode == 1
    assert token.stdout == ""
    assert token.stderr == up.stderr
    assert token.stderr.splitlines() == [
        "msuite.yaml:4:17: auth.jwt.secret: environment variable SAMPLES_JWT_SECRET is not set "
        "(write ${SAMPLES_JWT_SECRET:-default} to give a default)"
    ]


def test_token_never_prints_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "msuite.yaml").write_text(TOKEN_MANIFEST)
    for secret, args in (
        (TOKEN_SECRET, ["--role", "admin"]),
        (TOKEN_SECRET, ["--role", "root"]),
        ("too-short-to-sign-with", ["--role", "user"]),  # refused by the manifest's rules
    ):
        monkeypatch.setenv("MSUITE_TEST_TOKEN_SECRET", secret)
        result = msuite("token", "--sub", "ann", *args, cwd=tmp_path)
        assert secret not in result.stdout + result.stderr
        assert result.stderr or result.returncode == 0
