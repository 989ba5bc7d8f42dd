"""Finding the training state to resume from, and checking that the option file can continue it.

A training state holds, besides the model's optimizers, schedulers, scaler and EMA, the engine's part: the run
seed, the sampler position, every rank's random-number states and the *run signature* (network, optimizer type,
scheduler, batch layout) that :func:`check_compatible` compares with the option file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from basicsr.engine.context import RunContext
from basicsr.utils.checkpoint import CheckpointError, read_training_state
from basicsr.utils.errors import InvalidInputError, MissingInputError
from basicsr.utils.option_schema import FrozenDict, thaw

logger = logging.getLogger(__name__)


def run_signature(opt: FrozenDict, world_size: int) -> dict[str, Any]:
    """What a state can only be continued with: plain data, stored in every training state."""
    train_opt = opt['train']
    return {
        'network_g': thaw(opt['network_g']),
        'optim_type': train_opt['optim_g']['type'],
        'scheduler': thaw(train_opt['scheduler']),
        'batch_size_per_gpu': opt['datasets']['train']['batch_size_per_gpu'],
        'world_size': world_size,
    }


def _checkpoint_readable(path: Path) -> str | None:
    """None when ``path`` loads, else why not."""
    if not path.is_file():
        return 'it does not exist'
    try:
        torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means "not usable"; the reason is logged
        return f'{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ""}'
    return None


def newest_resumable_state(states_folder: Path, models_folder: Path) -> tuple[Path, dict] | None:
    """The newest ``<iter>.state`` that can be read AND whose ``net_g_<iter>.pth`` can be read (``--auto_resume``).

    A corrupt state or an unreadable matching checkpoint (a kill or a full disk while it was written) is skipped
    with a warning naming it, and the previous state is tried.

    Raises:
        CheckpointError: there are states but none can be resumed from; the message lists them.
    """
    states = (
        sorted((p for p in states_folder.glob('*.state') if p.stem.isdigit()), key=lambda p: int(p.stem), reverse=True)
        if states_folder.is_dir()
        else []
    )
    for path in states:
        try:
            state = read_training_state(path)
        except CheckpointError as error:
            logger.warning('Skipping training state %s: %s', path.name, error)
            continue
        checkpoint = models_folder / f'net_g_{state["iter"]}.pth'
        reason = _checkpoint_readable(checkpoint)
        if reason is None:
            return path, state
        logger.warning("Skipping training state '%s': its weights '%s' cannot be read (%s).", path, checkpoint, reason)
    if states:
        raise CheckpointError(
            f"None of the training states in '{states_folder}' can be resumed from "
            f'({", ".join(p.name for p in states)}: each is unreadable or its net_g_<iter>.pth '
            'is); start again without --auto_resume, or point path.resume_state to a good state.'
        )
    return None


def find_resume_state(opt: FrozenDict, ctx: RunContext) -> tuple[Path, dict] | None:
    """``path.resume_state``, else with ``--auto_resume`` the newest resumable state; None for a new run."""
    if opt['path']['resume_state'] is not None:
        path = Path(opt['path']['resume_state'])
        if not path.is_file():
            raise MissingInputError(
                f"path.resume_state '{path}' does not exist; point it to a "
                'training_states/<iter>.state file, or use --auto_resume.'
            )
        return path, read_training_state(path)
    if ctx.auto_resume:
        return newest_resumable_state(ctx.paths.training_states, ctx.paths.models)
    return None


def _differences(name: str, before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """(key path, before, after) of each difference; mappings are compared key by key."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            difference
            for key in sorted(before.keys() | after.keys(), key=str)
            for difference in _differences(f'{name}.{key}', before.get(key), after.get(key))
        ]
    return [] if before == after else [(name, before, after)]


def check_compatible(state: dict, opt: FrozenDict, world_size: int, source: os.PathLike) -> bool:
    """Compare the state's run signature with the option file.

    Returns:
        Whether ``train.scheduler`` changed (the new one then continues from the state's iteration, as if it
        had been used from the start).

    Raises:
        InvalidInputError: a changed network, optimizer type or batch layout (batch size, processes); the message
            names what the state holds and what the file says.
    """
    saved = state.get('signature')
    if saved is None:
        logger.warning(
            "Training state '%s' was written by an older version (no run signature, seed or "
            'random-number states): the network and optimizer are not checked and the resume is not '
            'exact.',
            source,
        )
        return False
    now = run_signature(opt, world_size)
    labels = {
        'network_g': 'network_g',
        'optim_type': 'train.optim_g.type',
        'batch_size_per_gpu': 'datasets.train.batch_size_per_gpu',
        'world_size': 'the number of processes',
    }
    changed = [
        f'{name}: {before} in the state, {after} in the option file'
        for key, label in labels.items()
        for name, before, after in _differences(label, saved[key], now[key])
    ]
    if changed:
        raise InvalidInputError(
            f"Training state '{source}' cannot be continued with these options: {'; '.join(changed)}. Resume with "
            'the option file it was trained with (a copy is in the experiment folder), or start a new run from its '
            'weights with path.pretrain_network_g.'
        )
    if saved['scheduler'] != now['scheduler']:
        logger.warning(
            'train.scheduler changed (%s in the state, %s in the option file): the new one continues '
            'from iteration %d as if it had been used from the start.',
            saved['scheduler'],
            now['scheduler'],
            state['iter'],
        )
        return True
    return False
