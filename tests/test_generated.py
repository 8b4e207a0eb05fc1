"""generated/ must match what tools/gen_protos.py writes from protos/ today."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _load_gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    gen = _load_gen_protos()
    gen.generate(tmp_path)
    fresh = _tree(tmp_path)
    committed = _tree(ROOT / "generated")
    assert sorted(fresh) == sorted(committed), "generated/ is stale: run `make protos`"
    for name, content in fresh.items():
        assert committed[name] == content, f"generated/{name} is stale: run `make protos`"
