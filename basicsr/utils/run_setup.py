"""Start-of-run chores shared by train.py and test.py: folders, logs, seeds, evaluation loaders."""

from __future__ import annotations

import logging
import random
import shutil
import sys

import torch

from basicsr.utils.logger import get_env_info, get_root_logger
from basicsr.utils.misc import get_time_str, mkdir_and_rename, set_random_seed
from basicsr.utils.option_schema import FrozenDict
from basicsr.utils.options import RunContext, dump_options


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
    logging.getLogger(__name__).info('Random seed: %d (+ rank %d)', seed, ctx.rank)
    set_random_seed(seed + ctx.rank)
    return seed


def build_eval_loaders(opt: FrozenDict, ctx: RunContext, phases: tuple[str, ...]) -> list:
    """(dataset options, loader) for every data set whose phase is in ``phases``.

    Under torch.distributed each rank reads every ``world_size``-th image, so the set is split
    without padding or duplicates.
    """
    from basicsr.data import build_dataloader, build_dataset

    loaders = []
    for dataset_opt in opt['datasets'].values():
        if dataset_opt['phase'] not in phases:
            continue
        dataset = build_dataset(dataset_opt)
        sampler = list(range(ctx.rank, len(dataset), ctx.world_size)) if ctx.dist else None
        loader = build_dataloader(dataset, dataset_opt, dist=ctx.dist, sampler=sampler, seed=opt['manual_seed'],
                                  rank=ctx.rank)
        logging.getLogger(__name__).info("Number of %s images in %s: %d", dataset_opt['phase'], dataset_opt['name'],
                                         len(dataset))
        loaders.append((dataset_opt, loader))
    return loaders
