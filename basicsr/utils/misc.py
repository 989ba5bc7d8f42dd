"""Small helpers: seeding, time strings, folders, the newest training state."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch


def set_random_seed(seed: int) -> None:
    """Seed Python's random, NumPy and torch (all CUDA devices too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def get_time_str() -> str:
    """Local time as ``YYYYmmdd_HHMMSS``, for file names."""
    return time.strftime('%Y%m%d_%H%M%S', time.localtime())


def mkdir_and_rename(path: str | Path) -> Path:
    """Create ``path``; an existing folder is renamed to ``<path>_archived_<time>`` first, never deleted."""
    path = Path(path)
    if path.exists():
        archived = path.with_name(f'{path.name}_archived_{get_time_str()}')
        suffix = 1
        while archived.exists():
            archived = path.with_name(f'{path.name}_archived_{get_time_str()}_{suffix}')
            suffix += 1
        path.rename(archived)
    path.mkdir(parents=True, exist_ok=True)
    return path


def newest_training_state(folder: str | Path) -> Path | None:
    """The ``<iter>.state`` file with the largest iteration in ``folder``, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    states = [p for p in folder.glob('*.state') if p.stem.isdigit()]
    return max(states, key=lambda p: int(p.stem)) if states else None
