"""Running protoc (grpcio-tools) on the manifest's protos.

protoc runs in a subprocess: in-process ``grpc_tools.protoc.main`` writes its
errors straight to file descriptor 2, where they cannot be captured and
located. Two runs: the first resolves the import closure into a descriptor
set; the second generates message modules, grpc stubs and mypy-protobuf's
typed ``.pyi`` stubs for every user proto in that closure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

from msuite import MsuiteError
from msuite.spec import Diagnostic, Manifest

__all__ = ["CodegenError", "Compiled", "ProtoSource", "compile_protos", "include_roots"]

_PROTOC_LINE = re.compile(r"^(?P<file>[^:\n]+\.proto):(?P<line>\d+):(?P<col>\d+): (?P<message>.*)$")
_IMPORT_NOT_FOUND = re.compile(r'^Import "(?P<name>[^"]+)" was not found or had errors\.$')
_LIBRARY_PREFIXES = ("google/protobuf/", "google/api/", "google/rpc/", "google/type/")


class CodegenError(MsuiteError):
    """Generation failed; ``diagnostics`` says where and why. Nothing was written."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


@dataclass(frozen=True)
class ProtoSource:
    """A user proto: its name for protoc (relative to its include root) and its file."""

    name: str
    path: Path


@dataclass(frozen=True)
class Compiled:
    files: dict[str, bytes]
    """Generated files by path relative to the output package."""
    descriptors: descriptor_pb2.FileDescriptorSet
    sources: tuple[ProtoSource, ...]
    """Every user proto compiled, in name order."""


def _library_roots() -> list[Path]:
    import google.api.annotations_pb2 as annotations
    import grpc_tools

    return [Path(grpc_tools.__file__).parent / "_proto", Path(annotations.__file__).parents[2]]


def include_roots(manifest: Manifest) -> list[Path]:
    """The user's include roots: ``codegen.proto_paths``; by default those of them that exist."""
    roots = [Path(os.path.normpath(manifest.base_dir / p)) for p in manifest.codegen.proto_paths]
    if "proto_paths" not in manifest.codegen.model_fields_set:
        roots = [r for r in roots if r.is_dir()]
    return list(dict.fromkeys(roots))


def _plugin(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise CodegenError(
            [
                Diagnostic(
                    "msuite", 0, 0, "codegen", f"{name} not found: install msuite[codegen] (mypy-protobuf)"
                )
            ]
        )
    return found


def _display(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return relative if not relative.startswith("..") else str(path)


def _locate(name: str, roots: list[Path]) -> Path | None:
    for root in roots:
        candidate = root / name
        if candidate.is_file():
            return candidate
    return None


def _run(args: list[str], roots: list[Path], cwd: Path) -> None:
    command = [sys.executable, "-m", "grpc_tools.protoc", *(f"-I{r}" for r in roots), *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    if result.returncode == 0:
        return
    diagnostics: list[Diagnostic] = []
    user_roots = roots[: len(roots) - 2]
    searched = ", ".join(_display(r) for r in roots)
    for line in result.stderr.splitlines():
        match = _PROTOC_LINE.match(line.strip())
        if match is None:
            continue
        path = _locate(match["file"], roots)
        file = _display(path) if path else match["file"]
        message = match["message"]
        missing = _IMPORT_NOT_FOUND.match(message)
        if missing:
            found = _locate(missing["name"], user_roots)
            message = (
                f'import "{missing["name"]}" has errors'
                if found
                else f'import "{missing["name"]}" not found; searched: {searched}'
            )
        diagnostics.append(Diagnostic(file, int(match["line"]), int(match["col"]), "proto", message))
    if not diagnostics:
        text = " ".join(result.stderr.split()) or f"protoc failed with status {result.returncode}"
        diagnostics.append(Diagnostic("protoc", 0, 0, "proto", text))
    raise CodegenError(diagnostics)


def _refuse_module_clashes(sources: list[ProtoSource]) -> None:
    """Two protos whose Python modules would be the same file (``a-b.proto``, ``a_b.proto``)."""
    seen: dict[str, ProtoSource] = {}
    problems = []
    for source in sources:
        module = source.name[: -len(".proto")].replace("-", "_")
        if module in seen:
            problems.append(
                Diagnostic(
                    _display(source.path),
                    1,
                    1,
                    "proto",
                    f"gives the same Python module as {seen[module].name}: rename one of them",
                )
            )
        seen.setdefault(module, source)
    if problems:
        raise CodegenError(problems)


def compile_protos(manifest: Manifest, entry_points: list[ProtoSource]) -> Compiled:
    """Compile ``entry_points`` and every user proto they import."""
    user_roots = include_roots(manifest)
    roots = user_roots + _library_roots()
    with tempfile.TemporaryDirectory(prefix="msuite-protoc-") as tmp:
        work = Path(tmp)
        names = sorted({p.name for p in entry_points})
        _run(
            [
                f"--descriptor_set_out={work / 'set.bin'}",
                "--include_imports",
                "--include_source_info",
                *names,
            ],
            roots,
            manifest.base_dir,
        )
        descriptors = descriptor_pb2.FileDescriptorSet.FromString((work / "set.bin").read_bytes())
        sources = []
        for file in descriptors.file:
            if file.name.startswith(_LIBRARY_PREFIXES):
                continue
            path = _locate(file.name, user_roots)
            if path is not None:
                sources.append(ProtoSource(file.name, path))
        sources.sort(key=lambda s: s.name)
        _refuse_module_clashes(sources)
        out = work / "out"
        out.mkdir()
        _run(
            [
                f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
                f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                f"--mypy_out={out}",
                f"--mypy_grpc_out={out}",
                *(s.name for s in sources),
            ],
            roots,
            manifest.base_dir,
        )
        files = {
            path.relative_to(out).as_posix(): path.read_bytes()
            for path in sorted(out.rglob("*"))
            if path.is_file()
        }
    return Compiled(files, descriptors, tuple(sources))
