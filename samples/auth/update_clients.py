"""Write (or check) ``notifications_client/``: the typed stubs auth calls notifications with.

msuite generates code for the services a manifest *serves*; it has no client-only
proto dependency (docs/codegen.md). So this script runs ``msuite generate`` on a
throwaway manifest that declares ``notifications.v1.Notifications`` from
``../notifications/protos/notifications.proto`` and copies the proto's modules here.
The file keeps its name (``notifications.proto``) and contents, so the auth node and a
notifications node can share one process (docs/multi-node.md: one proto per name).

Usage: python update_clients.py [--check]   (exit 1 with --check when the copy is stale)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from msuite.codegen import generate
from msuite.spec import load_manifest

HERE = Path(__file__).resolve().parent
PROTO = HERE.parent / "notifications" / "protos" / "notifications.proto"
OUT = HERE / "notifications_client"
MODULES = (
    "notifications_pb2.py",
    "notifications_pb2.pyi",
    "notifications_pb2_grpc.py",
    "notifications_pb2_grpc.pyi",
)
HEADER = b"# fmt: off\n# Copied by update_clients.py (ruff format leaves it as msuite generate wrote it).\n"
MANIFEST = """\
name: notifications-client
services:
  notifications.v1.Notifications: {proto: protos/notifications.proto, impl: "unused:Unused"}
grpc: {unix: {path: unused.sock}}
"""


def generated() -> dict[str, bytes]:
    """The modules ``msuite generate`` writes for notifications.proto, by file name."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "protos").mkdir()
        shutil.copyfile(PROTO, root / "protos" / PROTO.name)
        (root / "msuite.yaml").write_text(MANIFEST)
        generate(load_manifest(root / "msuite.yaml"))
        return {name: HEADER + (root / "gen" / name).read_bytes() for name in MODULES}


def main(argv: list[str]) -> int:
    modules = generated()
    if "--check" in argv:
        stale = [
            name
            for name, data in modules.items()
            if not (OUT / name).is_file() or (OUT / name).read_bytes() != data
        ]
        for name in stale:
            print(f"{OUT / name}: stale or missing (run python update_clients.py)", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(exist_ok=True)
    for name, data in modules.items():
        (OUT / name).write_bytes(data)
    print(f"{OUT}: written ({len(modules)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
