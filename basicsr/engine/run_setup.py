"""Start-of-run chores shared by training and testing: folders, logs, seeds, data sets, loaders, the model."""

from __future__ import annotations

import logging
import random
import shutil
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

from basicsr.data import build_dataloader
from basicsr.engine.context import RunContext
from basicsr.engine.options import dump_options
from basicsr.models.base_model import BaseModel
from basicsr.utils.logger import get_env_info, get_root_logger
from basicsr.utils.misc import get_time_str, mkdir_and_rename, set_random_seed
from basicsr.utils.option_schema import FrozenDict
from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY, build

logger = logging.getLogger(__name__)


def prepare_run_folders(opt: FrozenDict, ctx: RunContext, resuming: bool) -> None:
    """Create the run's folders on rank 0 and copy the option file there.

    An existing experiment (or results) folder of a *new* run is renamed to
    ``<name>_archived_<time>``, never overwritten. A resumed run keeps its folder.
    """
    if not ctx.is_main:
        return
    paths = ctx.paths
    run_root = paths.experiments_root if ctx.is_train else paths.results_root
    if not resuming:
        mkdir_and_rename(run_root)
    folders = [paths.models, paths.training_states, paths.visualization] if ctx.is_train else [paths.visualization]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    copy = run_root / ctx.opt_path.name
    shutil.copyfile(ctx.opt_path, copy)
    if ctx.overrides:
        with open(copy, 'a', encoding='utf-8') as handle:
            handle.write('\n# command-line overrides (--force_yml): ' + ' '.join(ctx.overrides) + '\n')


def start_logging(opt: FrozenDict, ctx: RunContext) -> logging.Logger:
    """The root logger with the run's log file; logs the environment and the resolved options."""
    phase = 'train' if ctx.is_train else 'test'
    log_file = ctx.paths.log / f"{phase}_{opt['name']}_{get_time_str()}.log" if ctx.is_main else None
    logger = get_root_logger(log_file=log_file)
    logger.info(get_env_info())
    logger.info('Command: %s', ' '.join(sys.argv))
    logger.info('Launcher %s, rank %d of %d, device %s', ctx.launcher, ctx.rank, ctx.world_size, ctx.device)
    logger.info('Options (%s, resolved):\n%s', ctx.opt_path, dump_options(opt))
    return logger


def seed_everything(opt: FrozenDict, ctx: RunContext) -> int:
    """Seed this process with ``manual_seed + rank`` (a random seed, logged, when it is null)."""
    seed = opt['manual_seed']
    if seed is None:
        seed = random.randint(1, 10000)
        if ctx.dist:
            shared = torch.tensor([seed])
            torch.distributed.broadcast(shared, src=0)
            seed = int(shared.item())
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


def build_eval_loaders(opt: FrozenDict, ctx: RunContext, phases: tuple[str, ...]) -> list:
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
        loader = build_dataloader(dataset, dataset_opt, dist=ctx.dist, sampler=sampler, seed=opt['manual_seed'],
                                  rank=ctx.rank)
        loaders.append((dataset_opt, loader))
    return loaders
