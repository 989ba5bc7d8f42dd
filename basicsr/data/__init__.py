"""Data sets and data loaders.

Data sets register in ``DATASET_REGISTRY`` (which imports their modules on first use, so importing this
package stays light) and are built with ``build(DATASET_REGISTRY, dataset_opt)``; ``build_dataloader``
wraps one in a DataLoader configured like BasicSR's.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import random
import signal
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from basicsr.data.data_sampler import EnlargedSampler
from basicsr.data.prefetch_dataloader import (
    CPUPrefetcher,
    CUDAPrefetcher,
    PrefetchDataLoader,
)

__all__ = [
    'CPUPrefetcher',
    'CUDAPrefetcher',
    'EnlargedSampler',
    'PrefetchDataLoader',
    'build_dataloader',
    'resolve_prefetch_mode',
    'worker_init_fn',
]

logger = logging.getLogger(__name__)


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    """Seed Python's random, NumPy and torch of a loader worker with ``seed + worker_id + num_workers * rank``,
    and shield it from the stop signals meant for the training loop.

    Every worker of every process gets its own seed (with ``seed = manual_seed + rank`` as BasicSR does).
    """
    worker_seed = seed + worker_id + num_workers * rank
    random.seed(worker_seed)
    np.random.seed(worker_seed % 2**32)
    torch.manual_seed(worker_seed)
    _ignore_stop_signals()


def _ignore_stop_signals() -> None:
    """Keep a worker alive through Ctrl-C, SIGUSR1 and a SIGTERM sent to the whole job.

    A terminal sends Ctrl-C, and SLURM its SIGUSR1/SIGTERM, to every process of the job; a worker that died of
    them would make the main process fail while it finishes its iteration and saves (graceful stop). A SIGTERM
    from the worker's parent (the DataLoader ending a stuck worker) still ends it, as torch's own handler does.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit the mask
    parent = multiprocessing.parent_process()  # the loader's process, also under spawn/forkserver (not getppid)
    creator = parent.pid if parent is not None else os.getppid()
    threading.Thread(target=_exit_on_sigterm_from, args=(creator,), daemon=True).start()


def _exit_on_sigterm_from(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)


def _phase_group(phase: str) -> str:
    group = phase.split('_', 1)[0]
    if group not in ('train', 'val', 'test'):
        raise ValueError(f'data set phase must be train, val or test (or val_2, test_2, ...), got {phase!r}')
    return group


def resolve_prefetch_mode(dataset_opt: Mapping[str, Any], device: torch.device | None) -> str | None:
    """``prefetch_mode`` in effect: ``auto`` is ``cuda`` (copies to the GPU on a side stream) for training on a
    CUDA device and nothing elsewhere. On the CPU a prefetch thread competes with the compute threads for the
    same cores: on 2 cores it made the demo's training step about 50 % slower than loading each batch in turn
    (``scripts/benchmark/bench_train.py --loop``); loader workers overlap loading where cores are left."""
    mode = dataset_opt.get('prefetch_mode')
    if mode != 'auto':
        return mode
    on_cuda = device is not None and device.type == 'cuda'
    return 'cuda' if on_cuda and _phase_group(dataset_opt.get('phase', 'train')) == 'train' else None


def _auto_or(value: bool | str, auto: bool) -> bool:
    return auto if value == 'auto' else bool(value)


def build_dataloader(
    dataset: Dataset,
    dataset_opt: Mapping[str, Any],
    dist: bool = False,
    sampler: Sampler | None = None,
    seed: int | None = None,
    rank: int = 0,
    device: torch.device | None = None,
) -> DataLoader:
    """A DataLoader for ``dataset`` following the loader keys of ``dataset_opt``.

    * ``phase`` train: batch ``batch_size_per_gpu`` and ``num_worker_per_gpu`` workers per process,
      ``drop_last``; shuffled unless ``sampler`` is given (and ``use_shuffle`` is true); workers seeded by
      :func:`worker_init_fn` when ``seed`` is given, and the loader's own generator seeded too, so iterating it
      leaves the global generators alone.
    * ``phase`` val / test: batch 1, in order (of ``sampler`` when given, e.g. this rank's share under
      torch.distributed), loaded in the main process.
    * ``prefetch_mode`` cpu: a :class:`PrefetchDataLoader` with ``num_prefetch_queue`` batches ahead (auto never
      chooses it, see :func:`resolve_prefetch_mode`).
    * ``pin_memory``: auto is on for a CUDA ``device``; ``persistent_workers`` (only with workers): auto is on.

    Args:
        dataset: the data set.
        dataset_opt: its options, with ``phase`` resolved (train, val or test).
        dist: distributed training (one process per GPU).
        sampler: e.g. an :class:`EnlargedSampler` for training.
        seed: base seed of the workers (``manual_seed + rank``); None leaves them to torch's defaults.
        rank: this process's rank.
        device: where the batches go (for the ``auto`` values); None: the CPU.
    """
    phase = _phase_group(dataset_opt.get('phase', 'train'))
    kwargs: dict[str, Any] = {'dataset': dataset}
    if phase == 'train':
        num_workers = dataset_opt.get('num_worker_per_gpu', 0)
        kwargs.update(
            batch_size=dataset_opt.get('batch_size_per_gpu', 1),
            shuffle=sampler is None and dataset_opt.get('use_shuffle', True),
            num_workers=num_workers,
            sampler=sampler,
            drop_last=True,
        )
        if seed is not None:
            # the loader draws its workers' base seed from this generator, not from the main process's global one,
            # so starting a pass never shifts the random draws of training (exact resume)
            kwargs['generator'] = torch.Generator().manual_seed(seed + rank)
        if seed is not None and num_workers > 0:
            kwargs['worker_init_fn'] = functools.partial(worker_init_fn, num_workers=num_workers, rank=rank, seed=seed)
    else:
        num_workers = 0
        # an own generator (unused otherwise): starting a pass would draw from the global one (exact resume)
        kwargs.update(batch_size=1, shuffle=False, num_workers=0, sampler=sampler, generator=torch.Generator())
    on_cuda = device is not None and device.type == 'cuda'
    kwargs['pin_memory'] = _auto_or(dataset_opt.get('pin_memory', False), on_cuda)
    kwargs['persistent_workers'] = _auto_or(dataset_opt.get('persistent_workers', False), True) and num_workers > 0
    if resolve_prefetch_mode(dataset_opt, device) == 'cpu':
        num_prefetch_queue = dataset_opt.get('num_prefetch_queue', 1)
        logger.info('Using PrefetchDataLoader with num_prefetch_queue = %d.', num_prefetch_queue)
        return PrefetchDataLoader(num_prefetch_queue=num_prefetch_queue, **kwargs)
    return DataLoader(**kwargs)
