"""Shared fixtures: the repository root and a helper that runs Python in a fresh process.

The suite runs in two pytest-xdist workers on two cores: each worker, and every process a test
starts, uses one intra-op thread, since oversubscribed OpenMP threads stall badly.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('OMP_NUM_THREADS', '1')
torch.set_num_threads(1)


def load_script(path: Path) -> types.ModuleType:
    """A script file (e.g. under scripts/) imported as a module, to call its functions in this process."""
    spec = importlib.util.spec_from_file_location(f'script_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the module runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def run_python():
    """``run_python(*args, env=None, cwd=REPO_ROOT, repo_on_path=True)``: run ``sys.executable *args`` (with the
    repository on PYTHONPATH unless ``repo_on_path`` is False); returns the CompletedProcess (text stdout/stderr)."""

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        repo_on_path: bool = True,
        timeout: float = 60,
    ):
        full_env = {**os.environ, **(env or {})}
        if repo_on_path:
            full_env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get('PYTHONPATH')]))
        return subprocess.run(
            [sys.executable, *args], check=False, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
        )

    return run


_BLOCKER = '''
import importlib.abc
import sys

class _BlockImports(importlib.abc.MetaPathFinder):
    """Makes the named top-level packages unimportable, as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in {blocked!r}:
            raise ImportError(f'{{name}} is blocked by the test')
        return None

sys.meta_path.insert(0, _BlockImports())
'''


@pytest.fixture
def import_blocker():
    """``import_blocker(names)``: Python source to run first in a fresh process so that importing any of the
    top-level packages ``names`` raises ImportError (simulates them not being installed)."""

    def prelude(names) -> str:
        return _BLOCKER.format(blocked=set(names))

    return prelude
