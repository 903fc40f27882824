"""Manifest loading: msuite.spec against plain ruamel.yaml, in one run.

    python bench/bench_spec.py [--rounds N]

Baselines, on the same files:
  ruamel-safe      YAML(typ="safe", pure=True).load   (no positions, no checks)
  ruamel-rt        YAML(typ="rt").load                (ruamel's own position-keeping load)
  ruamel+pydantic  ruamel-safe, then Manifest.model_validate (what a loader without
                   positions, interpolation and located errors would cost)
msuite.load_manifest does all of that plus positions, interpolation, refusals and
the semantic checks. The ratio is msuite's time over each baseline's.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ruamel.yaml import YAML

from msuite.spec import Manifest, load_manifest
from msuite.spec.models import DEFER_CHECKS

REPO = Path(__file__).resolve().parent.parent


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds per call over ``rounds`` calls (after one warm-up)."""
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def big_manifest(folder: Path) -> Path:
    """A manifest at the node cap (5 000 nodes): 2 490 config entries."""
    path = folder / "big.yaml"
    lines = ["name: big", "config:"] + [f"  key{i:05d}: some value of setting {i}" for i in range(2490)]
    path.write_text("\n".join(lines) + "\n")
    return path


def cold_import_ms() -> float:
    code = "import time; t = time.perf_counter(); import msuite.spec; print(time.perf_counter() - t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code])) for _ in range(5)]
    return statistics.median(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "samples/hello": REPO / "samples/hello/msuite.yaml",
            "5k-node config": big_manifest(Path(tmp)),
        }
        print(f"{'file':<14} {'loader':<16} {'median':>10} {'msuite/x':>9}")
        for label, path in files.items():
            rounds = args.rounds if path.stat().st_size < 100_000 else max(3, args.rounds // 40)
            text = path.read_text()

            def safe(text: str = text) -> object:
                return YAML(typ="safe", pure=True).load(text)

            def rt(text: str = text) -> object:
                return YAML(typ="rt").load(text)

            def validated(text: str = text) -> object:
                return Manifest.model_validate(safe(text), context={DEFER_CHECKS: True})

            def ours(path: Path = path) -> object:
                return load_manifest(path)

            results = {
                "msuite": timed(ours, rounds),
                "ruamel-safe": timed(safe, rounds),
                "ruamel-rt": timed(rt, rounds),
                "ruamel+pydantic": timed(validated, rounds),
            }
            for name, seconds in results.items():
                ratio = results["msuite"] / seconds
                print(f"{label:<14} {name:<16} {seconds * 1000:>8.2f}ms {ratio:>8.2f}x")
    print(f"cold `import msuite.spec`: {cold_import_ms():.0f} ms (median of 5)")


if __name__ == "__main__":
    main()
