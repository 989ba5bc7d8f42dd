"""Imports flow one way: utils -> events -> data -> archs / losses / metrics -> models -> engine -> entry points.

Every import of every module of basicsr/ counts, including imports inside functions and ``importlib`` calls
with a literal name; imports under ``if TYPE_CHECKING:`` (annotations only) do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'basicsr'

FORBIDDEN = {
    'utils': {'events', 'data', 'archs', 'losses', 'metrics', 'models', 'engine', 'train', 'test'},
    'events': {'data', 'archs', 'losses', 'metrics', 'models', 'engine', 'train', 'test'},
    'data': {'archs', 'losses', 'metrics', 'models', 'engine', 'train', 'test'},
    'archs': {'data', 'losses', 'metrics', 'models', 'engine', 'train', 'test'},
    'losses': {'data', 'archs', 'models', 'engine', 'train', 'test'},
    'metrics': {'data', 'archs', 'losses', 'models', 'engine', 'train', 'test'},
    'models': {'engine', 'train', 'test'},
    'engine': {'train', 'test'},
}
"""Layer (sub-package of basicsr) -> layers it must not import."""

ONLY_ENGINE_IMPORTS = 'models'
"""Above the models only the engine (and the entry points on top of it) reaches the models."""


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
        isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING'
    )


def runtime_nodes(tree: ast.AST):
    """Every node except those inside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def imported_modules(path: Path) -> set[str]:
    """Absolute dotted names imported by ``path`` at run time (relative imports resolved)."""
    module = '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    names = set()
    for node in runtime_nodes(ast.parse(path.read_text(encoding='utf-8'), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f'{base}.{alias.name}' for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, 'id', '')
            if called in ('import_module', '__import__') and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def layer_of(module: str) -> str | None:
    parts = module.split('.')
    return parts[1] if parts[0] == 'basicsr' and len(parts) > 1 else None


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob('*.py'))


@pytest.mark.parametrize('path', modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    layer = path.relative_to(PACKAGE).parts[0] if len(path.relative_to(PACKAGE).parts) > 1 else None
    imported_layers = {layer_of(name) for name in imported_modules(path)} - {None, layer}
    wrong = imported_layers & FORBIDDEN.get(layer, set())
    assert wrong == set(), f'{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}'


def test_only_the_engine_and_the_entry_points_reach_the_models():
    reaching = {
        path.relative_to(PACKAGE).parts[0]
        for path in modules()
        if any(layer_of(name) == ONLY_ENGINE_IMPORTS for name in imported_modules(path))
    }
    assert reaching - {'models'} <= {'engine'}, reaching


def test_the_scan_sees_imports_inside_functions_and_skips_type_checking(tmp_path, monkeypatch):
    package = tmp_path / 'basicsr'
    (package / 'utils').mkdir(parents=True)
    source = package / 'utils' / 'mod.py'
    source.write_text(
        'from typing import TYPE_CHECKING\n'
        'if TYPE_CHECKING:\n    from basicsr.engine.context import RunContext\n'
        'def f():\n    from basicsr.data import build_dataloader\n'
        "    importlib.import_module('basicsr.models.base_model')\n"
        'from ..events import read_events\n'
    )
    monkeypatch.setattr(__import__(__name__), 'PACKAGE', package)
    names = imported_modules(source)
    assert {'basicsr.data', 'basicsr.models.base_model', 'basicsr.events'} <= names
    assert not any(name.startswith('basicsr.engine') for name in names)
