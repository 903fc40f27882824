"""Time to generate: a 20-service manifest and the `msuite init` scaffold, against bare protoc.

    python bench/bench_codegen.py [--rounds N]

The baseline is one in-process grpc_tools.protoc run producing the same
message modules, grpc stubs and mypy stubs for the same protos, with nothing
else (no import closure, no wiring, no checks). Target: under 3 s for 20
services on this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from msuite.codegen import generate
from msuite.spec import load_manifest

REPO = Path(__file__).resolve().parent.parent


def twenty_services(folder: Path) -> Path:
    protos = folder / "protos"
    protos.mkdir(parents=True)
    lines = ["name: big", "grpc: {tcp: {port: 0}}", "services:"]
    for i in range(20):
        (protos / f"svc{i}.proto").write_text(
            f'syntax = "proto3";\npackage big.s{i}.v1;\nimport "google/api/annotations.proto";\n'
            + "".join(
                f"message M{j} {{ string a = 1; int64 b = 2; repeated string c = 3; }}\n" for j in range(5)
            )
            + f"service Service{i} {{\n"
            + "".join(
                f"  rpc Call{j}(M{j}) returns (M{(j + 1) % 5}) "
                f'{{ option (google.api.http) = {{post: "/v1/s{i}/c{j}" body: "*"}}; }}\n'
                for j in range(5)
            )
            + "}\n"
        )
        lines.append(f"  big.s{i}.v1.Service{i}: {{proto: protos/svc{i}.proto, impl: impl:S{i}}}")
    manifest = folder / "msuite.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def scaffold(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "msuite", "init", str(folder)], check=True, capture_output=True)
    return folder / "msuite.yaml"


def time_generate(manifest_path: Path, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        shutil.rmtree(manifest_path.parent / "gen", ignore_errors=True)
        start = time.perf_counter()
        generate(load_manifest(manifest_path))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def time_protoc(manifest_path: Path, rounds: int) -> float:
    from grpc_tools import protoc

    folder = manifest_path.parent
    protos = sorted(p.name for p in (folder / "protos").glob("*.proto"))
    import google.api.annotations_pb2 as annotations
    import grpc_tools

    includes = [
        f"-I{folder / 'protos'}",
        f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
        f"-I{Path(annotations.__file__).parents[2]}",
    ]
    bin_dir = Path(sys.executable).parent
    samples = []
    for _ in range(rounds):
        out = folder / "raw-out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        saved = os.dup(2)  # the mypy plugins print a line per file on fd 2
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        start = time.perf_counter()
        status = protoc.main(
            [
                "protoc",
                *includes,
                f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
                f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                f"--mypy_out={out}",
                f"--mypy_grpc_out={out}",
                *protos,
            ]
        )
        samples.append(time.perf_counter() - start)
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
        assert status == 0
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = twenty_services(Path(tmp) / "big")
        hello = scaffold(Path(tmp) / "hello")
        for label, manifest in (("20 services", big), ("init scaffold", hello)):
            ours = time_generate(manifest, args.rounds)
            raw = time_protoc(manifest, args.rounds)
            print(
                f"{label:<14} msuite generate {ours * 1000:7.0f} ms   bare protoc {raw * 1000:7.0f} ms   "
                f"ratio {ours / raw:5.2f}x"
            )


if __name__ == "__main__":
    main()
