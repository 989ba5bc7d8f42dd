"""Small helpers: seeding, time strings, folders, the newest training state."""

from __future__ import annotations

import logging
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


def capture_rng_state() -> dict:
    """The state of every random-number generator of this process, as plain data.

    Python's ``random``, NumPy's global generator, torch's CPU generator and the CUDA generator of every
    visible device (an empty list without CUDA). Only tensors, ints, floats and None, so a training state
    holding it loads with ``torch.load(weights_only=True)``. :func:`restore_rng_state` puts it back.
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        'python': {'version': version, 'internal': torch.tensor(internal, dtype=torch.int64), 'gauss_next': gauss_next},
        'numpy': {
            'name': name,
            'keys': torch.from_numpy(keys.astype(np.int64)),
            'pos': int(pos),
            'has_gauss': int(has_gauss),
            'cached_gaussian': float(cached_gaussian),
        },
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    """Put back a state from :func:`capture_rng_state`; the draws that follow repeat those that followed the capture.

    CUDA states are restored device by device; a state captured on more GPUs than are visible now restores the
    visible ones and logs a warning (the draws on the others cannot continue exactly).
    """
    python = state['python']
    random.setstate((python['version'], tuple(python['internal'].tolist()), python['gauss_next']))
    numpy = state['numpy']
    np.random.set_state(
        (
            numpy['name'],
            numpy['keys'].numpy().astype(np.uint32),
            numpy['pos'],
            numpy['has_gauss'],
            numpy['cached_gaussian'],
        )
    )
    torch.set_rng_state(state['torch'])
    cuda_states = state['cuda']
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for device, cuda_state in enumerate(cuda_states[:visible]):
        torch.cuda.set_rng_state(cuda_state, device)
    if len(cuda_states) > visible:
        logging.getLogger(__name__).warning(
            'The training state holds the CUDA random-number states of %d devices but %d are visible; the states '
            'of the others are not restored, so random draws on them will not repeat the interrupted run.',
            len(cuda_states),
            visible,
        )
