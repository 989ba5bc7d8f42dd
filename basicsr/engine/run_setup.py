"""Start-of-run chores shared by training and testing: folders, logs, seeds, data sets, loaders, the model."""

from __future__ import annotations

import logging
import logging.handlers
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from basicsr.data import build_dataloader
from basicsr.engine.context import RunContext
from basicsr.engine.options import dump_options
from basicsr.models.base_model import BaseModel
from basicsr.utils.dist_util import choose_run_seed
from basicsr.utils.file_io import make_folder, remove_stale_temporaries, write_errors_named
from basicsr.utils.logger import close_file_handlers, get_env_info, get_root_logger
from basicsr.utils.misc import get_time_str, set_random_seed
from basicsr.utils.option_schema import FrozenDict
from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY, build

logger = logging.getLogger(__name__)


def archive_folders(folders: list[Path]) -> None:
    """Rename the existing ``folders`` to ``<name>_archived_<time>``, all with the same suffix (never deleted)."""
    existing = [folder for folder in folders if folder.exists()]
    if not existing:
        return
    stamp, suffix = get_time_str(), ''
    attempt = 0
    while any(folder.with_name(f'{folder.name}_archived_{stamp}{suffix}').exists() for folder in existing):
        attempt += 1
        suffix = f'_{attempt}'
    for folder in existing:
        archived = folder.with_name(f'{folder.name}_archived_{stamp}{suffix}')
        folder.rename(archived)
        logger.info("Archived the previous run's folder '%s' as '%s'.", folder, archived.name)


def prepare_run_folders(opt: FrozenDict, ctx: RunContext, resuming: bool) -> None:
    """Create the run's folders on rank 0 and copy the option file there (after the options and data are checked).

    A *new* run renames an existing experiment (or results) folder, and the TensorBoard folder
    ``tb_logger/<name>`` of training, to ``<name>_archived_<time>`` (one suffix for both), never overwritten. A
    resumed run keeps its folders. Temporaries left by interrupted checkpoint writes are removed. Resuming with
    the experiment folder's own copy of the option file keeps it as it is.
    """
    if not ctx.is_main:
        return
    paths = ctx.paths
    run_root = paths.experiments_root if ctx.is_train else paths.results_root
    if not resuming:
        archive_folders([run_root, paths.tb_logger] if ctx.is_train else [run_root])
    folders = [paths.models, paths.training_states, paths.visualization] if ctx.is_train else [paths.visualization]
    for folder in folders:
        make_folder(folder)
    if ctx.is_train:
        for folder in (paths.models, paths.training_states):
            remove_stale_temporaries(folder)
    copy = run_root / ctx.opt_path.name
    if copy.resolve() == ctx.opt_path.resolve():
        return
    with write_errors_named(copy):
        shutil.copyfile(ctx.opt_path, copy)
        if ctx.overrides:
            with open(copy, 'a', encoding='utf-8') as handle:
                handle.write('\n# command-line overrides (--force_yml): ' + ' '.join(ctx.overrides) + '\n')


def start_logging(opt: FrozenDict, ctx: RunContext) -> logging.Logger:
    """The root logger on the console; what it logs is also kept until :func:`attach_log_file` (the run's folder
    is made only after the options and the data are checked, so that a failed start leaves nothing)."""
    logger = get_root_logger()
    if ctx.is_main:
        logger.addHandler(logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1))
    logger.info(get_env_info())
    logger.info('Command: %s', ' '.join(sys.argv))
    logger.info('Launcher %s, rank %d of %d, device %s', ctx.launcher, ctx.rank, ctx.world_size, ctx.device)
    if ctx.backend is not None:
        logger.info(
            'Distributed: backend %s, %d processes, timeout %s s',
            ctx.backend,
            ctx.world_size,
            opt['dist_params']['timeout'],
        )
    logger.info('Options (%s, resolved):\n%s', ctx.opt_path, dump_options(opt))
    return logger


def close_logging() -> None:
    """Close the log file and drop what :func:`start_logging` kept for a log file that never started."""
    root = get_root_logger()
    for buffer in [h for h in root.handlers if isinstance(h, logging.handlers.MemoryHandler)]:
        root.removeHandler(buffer)
        buffer.setTarget(None)
        buffer.close()
    close_file_handlers()


def attach_log_file(opt: FrozenDict, ctx: RunContext) -> None:
    """Start the log file in the run's folder (rank 0), beginning with everything logged so far."""
    if not ctx.is_main:
        return
    phase = 'train' if ctx.is_train else 'test'
    log_file = ctx.paths.log / f'{phase}_{opt["name"]}_{get_time_str()}.log'
    root = get_root_logger(log_file=log_file)
    file_handler = next(h for h in root.handlers if isinstance(h, logging.FileHandler))
    for buffer in [h for h in root.handlers if isinstance(h, logging.handlers.MemoryHandler)]:
        buffer.setTarget(file_handler)
        buffer.flush()
        root.removeHandler(buffer)
        buffer.close()


def seed_run(opt: FrozenDict, ctx: RunContext, resumed_seed: int | None = None, source: str = '') -> int:
    """The run seed (the state's when resuming, else ``manual_seed``, else drawn on rank 0 and shared); this
    process is seeded with ``seed + rank``."""
    seed = choose_run_seed(opt['manual_seed'], resumed_seed, source=source)
    logger.info('Random seed: %d (+ rank %d)', seed, ctx.rank)
    set_random_seed(seed + ctx.rank)
    return seed


def build_dataset(dataset_opt: Mapping[str, Any]) -> Dataset:
    """The data set of one validated ``datasets:`` entry, with its size logged (per file and in all)."""
    dataset = build(DATASET_REGISTRY, dataset_opt)
    for path, count in getattr(dataset, 'samples_per_file', []):
        logger.info('Data set %s: %d samples in %s', dataset_opt['name'], count, path)
    logger.info('Data set %s (%s) built: %d samples.', dataset_opt['name'], dataset_opt['type'], len(dataset))
    return dataset


def build_model(opt: FrozenDict, ctx: RunContext) -> BaseModel:
    """The model class named by ``model_type``, built from the options and the run context."""
    model = build(MODEL_REGISTRY, opt, type_key='model_type', ctx=ctx)
    logger.info('Model %s is created.', type(model).__name__)
    return model


def check_event_channels(model: BaseModel, datasets: Mapping[str, Dataset]) -> None:
    """The event-channel contract, before the first iteration or test: every data set's voxel channels equal
    the network's ``ev_chn`` (``datasets``: name -> data set; raises InvalidInputError naming both)."""
    for name, dataset in datasets.items():
        model.check_event_channels(dataset, name)


def cores_per_process(ctx: RunContext) -> int:
    """The CPU cores this process may use: those of its affinity mask, shared evenly by the processes of this
    machine (``LOCAL_WORLD_SIZE``, set by torchrun; else the world size) under torch.distributed."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    local_processes = int(os.environ.get('LOCAL_WORLD_SIZE', ctx.world_size)) if ctx.dist else 1
    return max(1, cores // max(1, local_processes))


def fit_loader_workers(requested: int, cores: int, option: str) -> int:
    """Loader workers for ``cores`` cores: ``requested``, capped at ``cores - 1`` so one core is left for the
    compute (a warning names ``option`` when capped). Loading a training batch costs milliseconds against the
    step's tenths of a second on the CPU, so workers beyond that only steal cores from the compute."""
    fitted = min(requested, cores - 1)
    if fitted < requested:
        logger.warning(
            '%s: %d loader workers per process on %d CPU core(s) per process would leave no core for '
            'the compute; using %d (set %s: %d or less to silence this).',
            option,
            requested,
            cores,
            fitted,
            option,
            fitted,
        )
    return fitted


def size_compute_threads(cores: int, loader_workers: int) -> int:
    """Set torch's intra-op threads to the cores left by the loader workers (at least 1) and log the choice;
    an ``OMP_NUM_THREADS`` in the environment wins. Returns the threads in use."""
    if 'OMP_NUM_THREADS' in os.environ:
        threads = torch.get_num_threads()
        logger.info(
            'Threads: %d compute threads (OMP_NUM_THREADS), %d loader workers, %d CPU core(s) per process.',
            threads,
            loader_workers,
            cores,
        )
        return threads
    threads = max(1, cores - loader_workers)
    torch.set_num_threads(threads)
    logger.info(
        'Threads: %d compute threads + %d loader workers on %d CPU core(s) per process.', threads, loader_workers, cores
    )
    return threads


def build_eval_loaders(opt: FrozenDict, ctx: RunContext, phases: tuple[str, ...], seed: int) -> list:
    """(dataset options, loader) for every data set whose phase is in ``phases``.

    Under torch.distributed each rank reads every ``world_size``-th image, so the set is split
    without padding or duplicates.
    """
    loaders = []
    for dataset_opt in opt['datasets'].values():
        if dataset_opt['phase'] not in phases:
            continue
        dataset = build_dataset(dataset_opt)
        sampler = list(range(ctx.rank, len(dataset), ctx.world_size)) if ctx.dist else None
        loader = build_dataloader(
            dataset, dataset_opt, dist=ctx.dist, sampler=sampler, seed=seed, rank=ctx.rank, device=ctx.device
        )
        loaders.append((dataset_opt, loader))
    return loaders
