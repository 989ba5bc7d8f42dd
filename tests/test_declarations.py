"""Declared minimum versions match the code: Python (checked with vermin) and torch (a table of newer APIs).

What this covers and what it does not:

* Python: vermin parses every file of basicsr/ and scripts/ and reports the oldest Python whose syntax and
  standard library they use (``typing.Self``: 3.11). It knows the standard library only; third-party pins
  (numpy 2.4 also needs 3.11) are not checked here.
* torch: no tool knows torch's API history, so :data:`TORCH_APIS` lists the newer torch APIs this code uses,
  each with a pattern found in the sources and the torch version that introduced it (from torch's release
  notes). The test checks that every listed API is still used (so the table does not rot), and that the
  declared minimum (setup.py, requirements.txt, the Makefile's reuse check) equals the newest of them. An API
  newer than the declared minimum that is missing from the table goes unnoticed: add it when you use one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

TORCH_APIS = {
    'torch.amp.GradScaler(device, ...)': (r'torch\.amp\.GradScaler\(', (2, 3)),
    'torch.utils.flop_counter.FlopCounterMode': (r'torch\.utils\.flop_counter', (2, 1)),
    'nn.Module.compile()': (r'net\.compile\(\)', (2, 2)),
    'torch.optim.lr_scheduler.LRScheduler (public name)': (r'lr_scheduler import .*\bLRScheduler\b', (2, 0)),
    'torch.load(weights_only=...)': (r'weights_only=', (1, 13)),
}
"""API -> (regular expression found in the sources, the torch version that introduced it)."""


def sources() -> str:
    return '\n'.join(
        path.read_text(encoding='utf-8')
        for folder in ('basicsr', 'scripts')
        for path in sorted((REPO_ROOT / folder).rglob('*.py'))
    )


def version(text: str) -> tuple[int, int]:
    major, minor = text.split('.')[:2]
    return int(major), int(minor)


def declared_python() -> tuple[int, int]:
    setup = (REPO_ROOT / 'setup.py').read_text(encoding='utf-8')
    return version(re.search(r"python_requires='>=([0-9.]+)'", setup).group(1))


def declared_torch_minimums() -> dict[str, tuple[int, int]]:
    setup = (REPO_ROOT / 'setup.py').read_text(encoding='utf-8')
    requirements = (REPO_ROOT / 'requirements.txt').read_text(encoding='utf-8')
    makefile = (REPO_ROOT / 'Makefile').read_text(encoding='utf-8')
    return {
        'setup.py': version(re.search(r"'torch>=([0-9.]+)'", setup).group(1)),
        'requirements.txt': version(re.search(r'^torch>=([0-9.]+)', requirements, re.M).group(1)),
        'Makefile': tuple(int(x) for x in re.search(r'sys\.exit\(v < \((\d+), (\d+)\)\)', makefile).groups()),
    }


def vermin_command() -> list[str] | None:
    installed = shutil.which('vermin', path=str(Path(sys.executable).parent)) or shutil.which('vermin')
    return [installed] if installed else None


@pytest.mark.skipif(vermin_command() is None, reason='vermin is not installed (pip install -r requirements-dev.txt)')
def test_the_code_runs_on_the_declared_python():
    result = subprocess.run(
        [*vermin_command(), '--no-tips', '--no-parse-comments', 'basicsr', 'scripts'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r'Minimum required versions: (?:[0-9.~]+, )?([0-9]+\.[0-9]+)', result.stdout)
    assert found, result.stdout
    assert version(found.group(1)) <= declared_python(), (
        f'vermin says the code needs Python {found.group(1)} but setup.py declares {declared_python()}'
    )
    assert version(found.group(1)) == declared_python(), 'python_requires is not the oldest Python the code runs on'
    ruff = (REPO_ROOT / 'ruff.toml').read_text(encoding='utf-8')
    assert f'target-version = "py3{declared_python()[1]}"' in ruff


def test_the_torch_minimum_is_the_newest_api_the_code_uses():
    text = sources()
    unused = [api for api, (pattern, _) in TORCH_APIS.items() if not re.search(pattern, text)]
    assert unused == [], f'listed in TORCH_APIS but no longer used (drop them from the table): {unused}'
    newest = max(introduced for _, introduced in TORCH_APIS.values())
    assert declared_torch_minimums() == dict.fromkeys(('setup.py', 'requirements.txt', 'Makefile'), newest)
    assert f'torch >= {newest[0]}.{newest[1]}' in (REPO_ROOT / 'README.md').read_text(encoding='utf-8')
