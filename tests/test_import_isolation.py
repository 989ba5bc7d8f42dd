"""Importing the package needs no optional dependency, imports nothing heavy, and nothing uses torchvision."""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ['torchvision', 'tensorboard', 'aedat', 'wandb']
NOT_AT_IMPORT = ['torchvision', 'tensorboard', 'aedat', 'cv2', 'h5py']


@pytest.mark.parametrize(
    ('statement', 'absent'),
    [
        ('import basicsr', NOT_AT_IMPORT + ['torch', 'basicsr.archs', 'basicsr.data', 'basicsr.models']),
        ('import basicsr.utils', NOT_AT_IMPORT + ['torch']),
        ('import basicsr.engine.options', NOT_AT_IMPORT),
        ('from basicsr.engine.cli import load_options, parse_options', NOT_AT_IMPORT),
    ],
)
def test_imports_work_without_optional_dependencies(statement, absent, run_python, import_blocker):
    script = import_blocker(OPTIONAL) + textwrap.dedent(f"""
        import json
        import sys
        {statement}
        print(json.dumps(sorted(name for name in {absent!r} if name in sys.modules)))
    """)
    result = run_python('-c', script)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_blocker_really_blocks(run_python, import_blocker):
    result = run_python('-c', import_blocker(['tensorboard']) + 'import tensorboard\n')
    assert result.returncode != 0 and 'tensorboard is blocked by the test' in result.stderr


def python_files() -> list[Path]:
    return sorted(p for folder in ('basicsr', 'scripts', 'tests') for p in (REPO_ROOT / folder).rglob('*.py'))


def imported_modules(tree: ast.AST) -> set[str]:
    """Absolute module names of import statements, and literal names given to __import__/import_module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ''
            if called in ('__import__', 'import_module') and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def test_nothing_imports_torchvision():
    offenders = []
    for path in python_files():
        names = imported_modules(ast.parse(path.read_text(encoding='utf-8'), filename=str(path)))
        if any(name == 'torchvision' or name.startswith('torchvision.') for name in names):
            offenders.append(str(path.relative_to(REPO_ROOT)))
    assert offenders == []


def test_the_import_scan_finds_torchvision_imports():
    sources = [
        'import torchvision',
        'from torchvision.ops import nms',
        'import torchvision.transforms as T',
        "__import__('torchvision')",
        "importlib.import_module('torchvision.models')",
    ]
    for source in sources:
        assert any(name.split('.')[0] == 'torchvision' for name in imported_modules(ast.parse(source))), source
