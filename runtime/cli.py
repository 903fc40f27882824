"""The ``msuite`` command line (also ``python -m msuite``).

Subcommands import what they need when they run, so ``msuite validate``
loads only :mod:`msuite.spec`. Bad input never shows a traceback: every
expected failure prints one located line per problem and exits 1.

Every subcommand that reads a manifest names it the same way: ``[FILE]``
(``validate``: ``[FILE...]``), default ``./msuite.yaml``, with ``-f/--file
FILE`` as an alias of ``FILE``. Naming two manifests to a command that takes
one is a usage error (one line, exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import TextIO

import msuite

_BEGAN = time.perf_counter()

__all__ = ["main"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

DEFAULT_MANIFEST = "msuite.yaml"


class _Manifests(argparse.Action):
    """Collect manifest paths from ``FILE`` and ``-f/--file FILE`` into one list, in command-line order.

    Both arguments share this action and its ``dest``, so ``msuite up x.yaml``
    and ``msuite up -f x.yaml`` parse to the same namespace. A ``FILE`` left
    out arrives as ``None`` (``[FILE]``) or ``[]`` (``[FILE...]``) and adds
    nothing; :func:`_resolve_manifests` applies the default afterwards.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        if values is None:
            return
        given = [values] if isinstance(values, str) else [str(value) for value in values]
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), *given])


def _add_manifest_arguments(parser: argparse.ArgumentParser, *, many: bool) -> None:
    """``[FILE]`` (or ``[FILE...]`` when ``many``) with ``-f/--file FILE`` as its alias."""
    if many:
        parser.add_argument(
            "manifests",
            nargs="*",
            action=_Manifests,
            metavar="FILE",
            help=f"manifests (default: ./{DEFAULT_MANIFEST})",
        )
        alias = "a manifest, the same as FILE; may repeat"
    else:
        parser.add_argument(
            "manifests",
            nargs="?",
            action=_Manifests,
            metavar="FILE",
            help=f"manifest (default: ./{DEFAULT_MANIFEST})",
        )
        alias = "the manifest, the same as FILE (give one or the other)"
    parser.add_argument("-f", "--file", dest="manifests", action=_Manifests, metavar="FILE", help=alias)
    parser.set_defaults(manifests=None, one_manifest=not many)


def _resolve_manifests(args: argparse.Namespace) -> str | None:
    """Apply the default manifest; a usage error message when a one-manifest command got several."""
    given: list[str] = list(args.manifests or ())
    if args.one_manifest and len(given) > 1:
        return (
            f"{args.command} takes one manifest, got {len(given)} ({', '.join(given)}): "
            "give it once, as FILE or as -f FILE"
        )
    args.manifests = given or [DEFAULT_MANIFEST]
    return None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msuite",
        description="Declare a distributed service in msuite.yaml; validate, generate and run it.",
    )
    parser.add_argument("--version", action="version", version=f"msuite {msuite.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="check manifests; exit 1 if any is invalid",
        description="Check each manifest against the schema and the semantic rules. Every "
        "problem is printed as FILE:LINE:COL: PATH: MESSAGE.",
    )
    _add_manifest_arguments(validate, many=True)
    validate.add_argument(
        "--format",
        choices=("text", "json", "github"),
        default="text",
        help="text (default), json, or github (GitHub Actions ::error annotations)",
    )
    validate.add_argument(
        "--allow-unset-env",
        action="store_true",
        help="check everything but the values that need an unset ${VAR} (CI without secrets)",
    )
    validate.set_defaults(run=_validate)

    up = commands.add_parser(
        "up",
        help="serve the node a manifest declares, until SIGINT or SIGTERM",
        description="Load the manifest, regenerate code when stale, start the node, print a "
        "readiness line per listener, serve until SIGINT/SIGTERM, drain and exit 0.",
    )
    _add_manifest_arguments(up, many=False)
    up.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        dest="overrides",
        help="lay a setting over the manifest, e.g. --set http.port=0 --set logging.level=debug, "
        "a list as --set 'p2p.bootstrap=[/ip4/...]' (repeatable; checked like the file)",
    )
    up.set_defaults(run=_up)

    generate = commands.add_parser(
        "generate",
        help="generate typed code (gen/) from the manifest's protos and events",
        description="Compile the services' protos and write the output package (codegen.out, "
        "default gen/ beside the manifest): message modules, typed stubs, wiring, events.",
    )
    _add_manifest_arguments(generate, many=False)
    generate.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing stale, missing or extra files"
    )
    generate.add_argument(
        "--allow-unset-env",
        action="store_true",
        help="generate (or --check) with unset ${VAR}s left unchecked (CI without secrets)",
    )
    generate.set_defaults(run=_generate)

    token = commands.add_parser(
        "token",
        help="print a JWT signed with the manifest's auth.jwt key (for testing and scripts)",
        description="Load the manifest as `msuite up` does and print, alone on stdout, a token its "
        "node would issue: signed with auth.jwt's signing key, for --sub with --role (a role of "
        "auth.roles), valid --ttl (default: auth.jwt.ttl). TOKEN=$(msuite token --sub ann --role "
        "user) keeps it in a variable.",
    )
    _add_manifest_arguments(token, many=False)
    token.add_argument("--sub", required=True, metavar="SUBJECT", help="the token's subject (sub claim)")
    token.add_argument(
        "--role",
        required=True,
        metavar="ROLE",
        help="the token's role, a role of the manifest's ladder (auth.roles); required, never a default",
    )
    token.add_argument(
        "--ttl", metavar="DURATION", help="lifetime, e.g. 15m or 2h (default: the manifest's auth.jwt.ttl)"
    )
    token.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a string in the token's meta claim (repeatable)",
    )
    token.set_defaults(run=_token)

    schema = commands.add_parser("schema", help="print the manifest's JSON Schema")
    schema.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    schema.set_defaults(run=_schema)

    init = commands.add_parser(
        "init",
        help="scaffold a hello node",
        description="Write a working hello node (manifest, proto, service) into DIR.",
    )
    init.add_argument("directory", nargs="?", default=".", metavar="DIR", help="target folder (default: .)")
    init.add_argument("--name", default="hello", help="node name (default: hello)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(run=_init)

    repo = commands.add_parser("repo", help="inspect or repair a node's repository")
    repo_commands = repo.add_subparsers(dest="repo_command", metavar="ACTION", required=True)
    status = repo_commands.add_parser("status", help="print the layout and disk usage as JSON")
    status.add_argument("directory", metavar="DIR", help="the repository folder (the manifest's `repo`)")
    status.set_defaults(run=_repo_status)
    repair = repo_commands.add_parser(
        "repair",
        help="rebuild a damaged LevelDB (back the folder up first: damaged records may be dropped)",
    )
    repair.add_argument("directory", metavar="DIR", help="the repository folder")
    repair.set_defaults(run=_repo_repair)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "manifests"):
        problem = _resolve_manifests(args)
        if problem is not None:
            return _error(problem, status=EXIT_USAGE)
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    return status


# --------------------------------------------------------------------------- up


def _up(args: argparse.Namespace) -> int:
    from .up import up

    file: str = args.manifests[0]
    return up(file, began=_BEGAN, overrides=args.overrides)


# --------------------------------------------------------------------------- token


def _token(args: argparse.Namespace) -> int:
    from .token import token

    file: str = args.manifests[0]
    return token(file, subject=args.sub, role=args.role, ttl=args.ttl, meta=args.meta)


# --------------------------------------------------------------------------- validate


def _validate(args: argparse.Namespace) -> int:
    from msuite.spec import Diagnostic, ManifestError, UncheckedValues, load_manifest, render

    files: list[str] = args.manifests
    diagnostics: list[Diagnostic] = []
    results: list[dict[str, object]] = []
    for file in files:
        try:
            manifest = load_manifest(file, allow_unset_env=args.allow_unset_env)
        except UncheckedValues as exc:
            results.append({"file": file, "valid": True, "name": None, "unchecked": exc.variables})
        except ManifestError as exc:
            diagnostics.extend(exc.diagnostics)
            results.append({"file": file, "valid": False, "errors": len(exc.diagnostics)})
        else:
            results.append({"file": file, "valid": True, "name": manifest.name})

    valid = not diagnostics
    if args.format == "json":
        report = {
            "valid": valid,
            "files": results,
            "diagnostics": json.loads(render(diagnostics, "json")),
        }
        print(json.dumps(report, indent=2))
    elif args.format == "github":
        if diagnostics:
            print(render(diagnostics, "github"))
    else:
        if diagnostics:
            print(render(diagnostics, "text"), file=sys.stderr)
        for result in results:
            if result.get("unchecked"):
                unchecked = ", ".join(str(v) for v in result["unchecked"])  # type: ignore[attr-defined]
                print(f"{result['file']}: valid, but for the values of unset {unchecked}")
            elif result["valid"]:
                print(f"{result['file']}: valid (node {result['name']})")
        if diagnostics:
            bad = sum(1 for r in results if not r["valid"])
            count = len(diagnostics)
            print(
                f"{count} problem{'s' * (count != 1)} in {bad} file{'s' * (bad != 1)}",
                file=sys.stderr,
            )
    return EXIT_OK if valid else EXIT_INVALID


# --------------------------------------------------------------------------- generate


def _generate(args: argparse.Namespace) -> int:
    from msuite.spec import ManifestError, UncheckedValues, load_manifest, render

    file: str = args.manifests[0]
    try:
        manifest = load_manifest(file, allow_unset_env=args.allow_unset_env)
    except UncheckedValues as exc:
        return _error(f"{exc}: set them to generate")
    except ManifestError as exc:
        print(render(exc.diagnostics), file=sys.stderr)
        return EXIT_INVALID
    try:
        from msuite.codegen import CodegenError, generate
    except ImportError as exc:
        return _error(f"msuite generate needs the codegen extra: pip install 'msuite[codegen]' ({exc})")
    try:
        outcome = generate(manifest, check=args.check)
    except CodegenError as exc:
        print(render(exc.diagnostics), file=sys.stderr)
        return EXIT_INVALID
    out = outcome.out_dir
    if args.check:
        if outcome.up_to_date:
            print(f"{out}: up to date ({len(outcome.files)} files)")
            return EXIT_OK
        for label, paths in (
            ("stale", outcome.stale),
            ("missing", outcome.missing),
            ("extra", outcome.extra),
        ):
            for path in paths:
                print(f"{out / path}: {label}", file=sys.stderr)
        print(f"{out}: out of date: run `msuite generate {file}`", file=sys.stderr)
        return EXIT_INVALID
    state = "written" if outcome.written else "up to date"
    print(f"{out}: {state} ({len(outcome.files)} files)")
    return EXIT_OK


# --------------------------------------------------------------------------- schema


def _schema(args: argparse.Namespace) -> int:
    from msuite.spec import manifest_schema_text

    text = manifest_schema_text()
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            return _error(f"{args.output}: cannot write: {exc.strerror or exc}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


# --------------------------------------------------------------------------- init


def _scaffold() -> Traversable:
    return resources.files("msuite.templates").joinpath("scaffold", "hello")


def _scaffold_files(root: Traversable, prefix: str = "") -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            out.extend(_scaffold_files(entry, name + "/"))
        else:
            out.append((name, entry.read_bytes()))
    return out


def _init(args: argparse.Namespace) -> int:
    import re

    from msuite.spec.models import NAME_PATTERN

    name: str = args.name
    if not re.fullmatch(NAME_PATTERN, name):
        return _error(f"--name {name!r}: use 1-63 letters, digits, '.', '_' or '-'", status=EXIT_USAGE)
    target = Path(args.directory)
    files = _scaffold_files(_scaffold())
    existing = [rel for rel, _ in files if (target / rel).exists()]
    if existing and not args.force:
        return _error(f"{target}: would overwrite {', '.join(existing)}; use --force to replace them")
    try:
        for rel, content in files:
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if rel == "msuite.yaml" and name != "hello":
                path.write_bytes(content.replace(b"\nname: hello\n", f"\nname: {name}\n".encode()))
            else:
                path.write_bytes(content)
    except OSError as exc:
        return _error(f"{target}: cannot write: {exc.strerror or exc}")
    manifest_path = target / "msuite.yaml"
    print(f"created node {name!r} in {target}/")
    for rel, _ in files:
        print(f"  {rel}")
    print(f"next: msuite up {manifest_path}   (then, from another shell: python {target / 'client.py'})")
    return EXIT_OK


# --------------------------------------------------------------------------- repo


def _repo_status(args: argparse.Namespace) -> int:
    from msuite.runtime.repo import Repo, RepoError

    if not Path(args.directory, "version").is_file():
        return _error(f"{args.directory}: not an msuite repository (no version file)")
    try:
        with Repo.open(args.directory) as repo:
            print(json.dumps(repo.status(), indent=2))
    except RepoError as exc:
        return _error(str(exc))
    return EXIT_OK


def _repo_repair(args: argparse.Namespace) -> int:
    from msuite.runtime.repo import RepoError, repair

    try:
        repair(args.directory)
    except RepoError as exc:
        return _error(str(exc))
    print(f"{args.directory}: repaired")
    return EXIT_OK


def _error(message: str, *, status: int = EXIT_INVALID, stream: TextIO | None = None) -> int:
    print(f"msuite: error: {message}", file=stream or sys.stderr)
    return status
