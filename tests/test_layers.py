"""Imports point down the stages: no module imports from a layer above its own.

The order is the data flow of docs/design.md. Every ``import`` and ``from ... import`` of the
project's own modules, at any depth in a file (function-level imports included), is read with
``ast`` and mapped to its layer.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import from its own layer and from any layer before it.
LAYERS = (
    ("common", ("gnn_tt.common",)),
    ("data", ("gnn_tt.data",)),
    ("partition", ("partition",)),
    ("sampling", ("gnn_tt.sampling",)),
    ("kernels", ("kernels",)),
    ("embedding", ("gnn_tt.embedding",)),
    ("models", ("gnn_tt.models",)),
    ("training", ("gnn_tt.training",)),
    ("experiments", ("gnn_tt.experiments",)),
    ("bench", ("gnn_tt.bench",)),
    ("entry", ("gnn_tt.cli", "gnn_tt.__main__", "gnn_tt")),
)


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the most specific prefix matching ``module``."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise KeyError(module)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import of a project module in ``path``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from gnn_tt import distributed` names a submodule: check the submodule.
            names = [f"{target}.{alias.name}" if _is_module(f"{target}.{alias.name}")
                     else target for alias in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names
                  if n.split(".")[0] in ("gnn_tt", "kernels", "partition")]
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def source_files() -> list[Path]:
    return sorted(p for top in ("gnn_tt", "kernels", "partition")
                  for p in (ROOT / top).rglob("*.py"))


def test_every_source_file_has_a_layer():
    files = source_files()
    assert len(files) > 30
    for path in files:
        layer_of(module_name(path))


def test_imports_point_down():
    violations = []
    for path in source_files():
        own = layer_of(module_name(path))
        for line, target in project_imports(path):
            if layer_of(target) > own:
                violations.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[own][0]}) imports "
                                  f"{target} ({LAYERS[layer_of(target)][0]})")
    assert not violations, "imports from a higher layer:\n" + "\n".join(violations)


def test_production_code_never_imports_benchmarks():
    bench = layer_of("gnn_tt.bench")
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {target}"
                 for path in source_files() if layer_of(module_name(path)) < bench
                 for line, target in project_imports(path) if layer_of(target) == bench]
    assert not offenders


@pytest.mark.parametrize("source, expected", [
    # The checker itself must see each form of import, or the tests above could not fail.
    ("from gnn_tt.training.train import run\n", ["gnn_tt.training.train"]),
    ("def f():\n    from gnn_tt.bench import output\n", ["gnn_tt.bench.output"]),
    ("import partition.assign\n", ["partition.assign"]),
    ("from ..training import config\n", ["gnn_tt.training.config"]),
    ("import numpy\n", []),
])
def test_checker_sees_every_import_form(monkeypatch, source, expected):
    path = ROOT / "gnn_tt" / "models" / "_layers_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)
    assert [target for _, target in project_imports(path)] == expected


def test_layer_order_flags_an_upward_import():
    assert layer_of("gnn_tt.training.train") > layer_of("gnn_tt.models.gat")
    assert layer_of("gnn_tt.bench.output") > layer_of("partition.cli")
    assert layer_of("gnn_tt.common.io") < layer_of("partition.cache")
