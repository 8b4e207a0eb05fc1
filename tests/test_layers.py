"""The import arrows of ARCHITECTURE.md, read from the source: the gateway is given
narrow interfaces and never reaches into the core; only the facade mounts the gateway."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> list[tuple[str, str]]:
    """(module file, imported module) for every import in ``package``, relative ones
    resolved against the package."""
    found: list[tuple[str, str]] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.extend((path.name, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    module = f"{package}.{module}" if module else package
                found.append((path.name, module))
    return found


def test_only_the_facade_imports_the_gateway() -> None:
    importers = {
        name for name, module in _imports("fleet_server") if module.split(".")[0] == "gateway"
    }
    assert importers <= {"_orchestrator.py"}


def test_the_gateway_reaches_the_core_only_through_its_interfaces() -> None:
    core = {module for _, module in _imports("gateway") if module.startswith("fleet_server")}
    assert core == {"fleet_server._interfaces"}


def test_the_agent_imports_nothing_of_the_orchestrator() -> None:
    roots = {module.split(".")[0] for _, module in _imports("fleet_agent")}
    assert not roots & {"fleet_server", "gateway"}


def test_product_modules_and_functions_stay_small() -> None:
    """No module of the three packages above 450 lines, no function above 60."""
    too_big: list[str] = []
    for package in ("fleet_server", "fleet_agent", "gateway"):
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text()
            if source.count("\n") > 450:
                too_big.append(f"{path.name}: {source.count(chr(10))} lines")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > 60:
                        too_big.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    assert too_big == []
