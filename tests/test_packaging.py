"""Packaging: setup.py, declared dependencies, the CI entry point, the README's first commands."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from basicsr.version import __version__

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / 'README.md'

DISTRIBUTION_OF = {
    'cv2': 'opencv-python-headless',
    'yaml': 'pyyaml',
    'skimage': 'scikit-image',
    'PIL': 'pillow',
    'sklearn': 'scikit-learn',
}
"""Import name -> distribution name, where they differ."""

OPTIONAL_IMPORTS = {'aedat'}
"""Optional dependencies that need not be in requirements.txt (their users explain how to install them)."""

IMPORT_ERRORS = {'ImportError', 'ModuleNotFoundError'}


def normalise(distribution: str) -> str:
    return re.sub(r'[-_.]+', '-', distribution).lower()


def declared_requirements() -> set[str]:
    names = set()
    for line in (REPO_ROOT / 'requirements.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            names.add(normalise(re.split(r'[\s\[<>=!~;]', line, maxsplit=1)[0]))
    return names


def catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(kind, ast.Name) and kind.id in IMPORT_ERRORS for kind in kinds)


def required_top_level_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports of a file, except imports guarded by ``except ImportError``."""
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(catches_import_error(h) for h in node.handlers):
            guarded.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    names = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.partition('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition('.')[0])
    return names


def is_local_module(name: str, path: Path) -> bool:
    """A script's sibling module or package (scripts import their neighbours)."""
    return (path.parent / f'{name}.py').exists() or (path.parent / name / '__init__.py').exists()


def third_party_imports() -> dict[str, list[str]]:
    """Import name -> files, for every non-stdlib, non-project import in basicsr/ and scripts/."""
    found: dict[str, list[str]] = {}
    for folder in ('basicsr', 'scripts'):
        for path in sorted((REPO_ROOT / folder).rglob('*.py')):
            for name in required_top_level_imports(path):
                if name in sys.stdlib_module_names or name == 'basicsr' or is_local_module(name, path):
                    continue
                found.setdefault(name, []).append(str(path.relative_to(REPO_ROOT)))
    return found


def test_requirements_declare_every_third_party_import():
    declared = declared_requirements()
    missing = {
        name: files
        for name, files in third_party_imports().items()
        if name not in OPTIONAL_IMPORTS and normalise(DISTRIBUTION_OF.get(name, name)) not in declared
    }
    assert missing == {}, f'imported but not in requirements.txt: {missing}'


def test_the_import_scan_sees_the_core_dependencies():
    assert {'torch', 'numpy', 'cv2', 'h5py', 'yaml'} <= set(third_party_imports())


def test_guarded_imports_are_optional(tmp_path):
    source = tmp_path / 'mod.py'
    source.write_text(
        'import numpy\ntry:\n    import wandb\nexcept ImportError:\n    wandb = None\n'
        'try:\n    import lmdb\nexcept (OSError, ModuleNotFoundError):\n    pass\n'
        'try:\n    import scipy\nexcept ValueError:\n    pass\n'
    )
    assert required_top_level_imports(source) == {'numpy', 'scipy'}


def test_setup_py_accepts_and_drops_no_cuda_ext(run_python):
    result = run_python('setup.py', '--name', '--no_cuda_ext')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == 'efnet-basicsr'
    result = run_python('setup.py', '--no_cuda_ext', '--version')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == __version__


def test_ci_runs_make_test_and_nothing_else():
    run = REPO_ROOT / '.ci' / 'run'
    assert run.stat().st_mode & 0o111, '.ci/run must be executable'
    lines = [line.strip() for line in run.read_text().splitlines() if line.strip() and not line.strip().startswith('#')]
    commands = [line for line in lines if not line.startswith(('set ', 'cd '))]
    assert commands == ['make test']


def test_readme_starts_with_the_two_commands():
    text = README.read_text(encoding='utf-8')
    blocks = re.findall(r'```[^\n]*\n(.*?)```', text, flags=re.DOTALL)
    assert blocks, 'README.md has no code block'
    first_block_at = text.index('```')
    assert text[:first_block_at].count('\n## ') == 0, 'the commands must come before the first section'
    commands = [line.split('#', 1)[0].strip() for line in blocks[0].splitlines()]
    assert 'make demo' in commands and 'make test' in commands


IMPORTED_THROUGH = {'tensorboard': 'torch.utils.tensorboard'}
"""Distributions used through another package's module rather than imported by their own name."""


def imported_module_names() -> set[str]:
    """Dotted names of every absolute import (functions included) in basicsr/ and scripts/."""
    names = set()
    for folder in ('basicsr', 'scripts'):
        for path in (REPO_ROOT / folder).rglob('*.py'):
            for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), filename=str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module)
    return names


def test_every_runtime_requirement_is_imported():
    import_name_of = {normalise(dist): name for name, dist in DISTRIBUTION_OF.items()}
    imported = imported_module_names()
    unused = []
    for distribution in sorted(declared_requirements()):
        module = IMPORTED_THROUGH.get(distribution, import_name_of.get(distribution, distribution))
        if not any(name == module or name.startswith(module + '.') for name in imported):
            unused.append(distribution)
    assert unused == [], f'in requirements.txt but imported nowhere in basicsr/ or scripts/: {unused}'


def test_scripts_run_with_the_installed_package_and_the_entry_points_share_one_bootstrap():
    touching = [
        str(path.relative_to(REPO_ROOT))
        for path in sorted((REPO_ROOT / 'scripts').rglob('*.py'))
        if 'sys.path' in path.read_text(encoding='utf-8')
    ]
    assert touching == []
    for entry in ('train', 'test', 'deblur'):
        source = (REPO_ROOT / 'basicsr' / f'{entry}.py').read_text(encoding='utf-8')
        assert 'sys.path' not in source and 'import _clone_path' in source
    setup = (REPO_ROOT / 'setup.py').read_text(encoding='utf-8')
    for entry in ('train', 'test', 'deblur'):
        assert f"'basicsr-{entry}=basicsr.{entry}:main'" in setup
