"""Regenerate ``generated/`` from ``protos/`` with grpcio-tools and mypy-protobuf.

Usage: ``python tools/gen_protos.py [--out DIR]``. Without ``--out`` it rewrites
``generated/`` in place; tests call :func:`generate` into a temporary folder and
compare, so a stale ``generated/`` fails the suite.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ROOT / "generated"
_SERVICE = re.compile(r"^\s*service\s+\w+", re.MULTILINE)


def _plugin(name: str) -> str:
    scripts = Path(sysconfig.get_path("scripts"))
    candidate = scripts / name
    found = candidate if candidate.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"gen_protos: {name} not found (pip install mypy-protobuf)")
    return str(found)


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(out: Path) -> None:
    """Write the Python modules and ``.pyi`` stubs for every proto into ``out``."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTOS)) for p in proto_files()]
    with_services = [p for p in proto_files() if _SERVICE.search(p.read_text())]
    has_services = bool(with_services)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--mypy_out={out}",
    ]
    if has_services:
        args += [
            f"--grpc_python_out={out}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--mypy_grpc_out={out}",
        ]
    code = protoc.main([*args, *files])
    if code != 0:
        raise SystemExit(f"gen_protos: protoc failed with exit code {code}")
    # The grpc plugins write a module per proto file; keep only those with a service.
    for proto in proto_files():
        if proto in with_services:
            continue
        stem = out / proto.relative_to(PROTOS).with_suffix("")
        for suffix in ("_pb2_grpc.py", "_pb2_grpc.pyi"):
            stem.with_name(stem.name + suffix).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.out is not None:
        generate(args.out)
        return 0
    # Generate aside first, so a protoc error leaves the committed tree alone.
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "out"
        generate(fresh)
        shutil.rmtree(GENERATED / "rivalis", ignore_errors=True)
        shutil.copytree(fresh / "rivalis", GENERATED / "rivalis")
    return 0


if __name__ == "__main__":
    sys.exit(main())
