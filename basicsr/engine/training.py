"""The training loop: set-up, resume, the iteration, the log/save/validate schedule and the end.

:class:`Trainer` owns iterations, timing, the schedule and resume; the model owns the data feeding, the
step and its state. Each concern has one method, so that additions (exact resume, signal handling, a
NaN guard) have one place to go: :meth:`Trainer.save_checkpoint` writes every checkpoint and training
state, :meth:`Trainer.resume` restores one, :meth:`Trainer.train_iteration` is the loop body.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from basicsr.data import build_dataloader
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.engine.context import RunContext
from basicsr.engine.run_setup import (
    build_dataset,
    build_eval_loaders,
    build_model,
    check_event_channels,
    prepare_run_folders,
    seed_everything,
    start_logging,
)
from basicsr.engine.testing import log_validation
from basicsr.utils.dist_util import destroy_dist
from basicsr.utils.errors import InvalidInputError, MissingInputError
from basicsr.utils.logger import MessageLogger, close_file_handlers, init_tb_logger, init_wandb_logger
from basicsr.utils.misc import newest_training_state
from basicsr.utils.option_schema import FrozenDict


def find_resume_state(opt: FrozenDict, ctx: RunContext) -> Path | None:
    """``path.resume_state``, else with ``--auto_resume`` the newest ``training_states/<iter>.state``."""
    if opt['path']['resume_state'] is not None:
        path = Path(opt['path']['resume_state'])
        if not path.is_file():
            raise MissingInputError(f"path.resume_state '{path}' does not exist.")
        return path
    if ctx.auto_resume:
        return newest_training_state(ctx.paths.training_states)
    return None


def load_resume_state(path: Path, device: torch.device) -> dict:
    """A training state dict (epoch, iter, optimizers, schedulers, scaler) read from ``path``."""
    state = torch.load(path, map_location=device, weights_only=True)
    for key in ('epoch', 'iter', 'optimizers', 'schedulers'):
        if key not in state:
            raise InvalidInputError(f"Training state '{path}' has no '{key}' entry; it was not written by this "
                                    'train.py.')
    return state


def make_prefetcher(loader, dataset_opt: FrozenDict, device: torch.device):
    if dataset_opt['prefetch_mode'] == 'cuda':
        return CUDAPrefetcher(loader, device=device)
    return CPUPrefetcher(loader)


class Trainer:
    """One training run: ``Trainer(opt, ctx).run()``.

    Args:
        opt: validated, read-only options (``datasets.train`` and ``train`` present).
        ctx: run context (rank, device, paths).
    """

    def __init__(self, opt: FrozenDict, ctx: RunContext):
        self.opt = opt
        self.ctx = ctx
        self.logger = logging.getLogger(__name__)
        self.tb_logger: Any = None
        self.epoch = 0
        self.current_iter = 0

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Folders, logs, seeds, loggers, data, model and the event-channel check; then resume if asked."""
        opt, ctx = self.opt, self.ctx
        resume_path = find_resume_state(opt, ctx)
        prepare_run_folders(opt, ctx, resuming=resume_path is not None)
        self.logger = start_logging(opt, ctx)
        seed_everything(opt, ctx)
        if opt['logger']['use_tb_logger'] and ctx.is_main:
            if opt['logger']['wandb']['project'] is not None:
                init_wandb_logger(opt, ctx.paths.log)
            self.tb_logger = init_tb_logger(ctx.paths.tb_logger)
        self.build_train_loader()
        self.val_loaders = build_eval_loaders(opt, ctx, phases=('val',))
        self.model = build_model(opt, ctx)
        datasets = {opt['datasets']['train']['name']: self.train_loader.dataset}
        datasets.update({dataset_opt['name']: loader.dataset for dataset_opt, loader in self.val_loaders})
        check_event_channels(self.model, datasets)
        if resume_path is not None:
            self.resume(resume_path)

    def build_train_loader(self) -> None:
        """The training loader and its sampler; logs the epoch count needed for ``train.total_iter``."""
        opt, ctx = self.opt, self.ctx
        dataset_opt = opt['datasets']['train']
        train_set = build_dataset(dataset_opt)
        ratio = dataset_opt['dataset_enlarge_ratio']
        self.train_sampler = EnlargedSampler(train_set, ctx.world_size, ctx.rank, ratio)
        self.train_loader = build_dataloader(train_set, dataset_opt, dist=ctx.dist, sampler=self.train_sampler,
                                             seed=opt['manual_seed'], rank=ctx.rank)
        iters_per_epoch = math.ceil(len(train_set) * ratio / (dataset_opt['batch_size_per_gpu'] * ctx.world_size))
        if iters_per_epoch == 0 or len(self.train_loader) == 0:
            raise InvalidInputError(
                f"datasets.train has {len(train_set)} samples, fewer than batch_size_per_gpu x processes "
                f"({dataset_opt['batch_size_per_gpu']} x {ctx.world_size}); lower the batch size or add data."
            )
        total_iter = opt['train']['total_iter']
        self.logger.info('Training statistics: %d images, enlarge ratio %d, batch %d per process, %d processes, '
                         '%d iterations per epoch, %d iterations = %d epochs.', len(train_set), ratio,
                         dataset_opt['batch_size_per_gpu'], ctx.world_size, iters_per_epoch, total_iter,
                         math.ceil(total_iter / iters_per_epoch))

    # ------------------------------------------------------------------ resume and checkpoints
    def resume(self, path: Path) -> None:
        """Restore the model's state (optimizers, schedulers, scaler, weights) and the loop position."""
        state = load_resume_state(path, self.ctx.device)
        self.model.resume_training(state)
        self.epoch, self.current_iter = state['epoch'], state['iter']
        self.logger.info('Resuming training from epoch %d, iteration %d (%s).', self.epoch, self.current_iter, path)

    def save_checkpoint(self, latest: bool = False) -> None:
        """Write ``net_g_<iter>.pth`` and ``training_states/<iter>.state`` (``latest``: ``net_g_latest.pth``)."""
        if latest:
            self.model.save(epoch=-1, current_iter='latest')
        else:
            self.model.save(self.epoch, self.current_iter)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Set up, iterate until ``train.total_iter``, then finish."""
        self.setup()
        try:
            self.train_loop()
            self.finish()
        finally:
            self.close()

    def train_loop(self) -> None:
        total_iter = self.opt['train']['total_iter']
        self.msg_logger = MessageLogger(self.opt['name'], total_iter, self.current_iter, self.tb_logger)
        prefetcher = make_prefetcher(self.train_loader, self.opt['datasets']['train'], self.ctx.device)
        self.logger.info('Start training from epoch %d, iteration %d.', self.epoch, self.current_iter + 1)
        while self.current_iter < total_iter:
            self.train_sampler.set_epoch(self.epoch)
            prefetcher.reset()
            data_start = time.time()
            batch = prefetcher.next()
            while batch is not None and self.current_iter < total_iter:
                data_time = time.time() - data_start
                self.train_iteration(batch, data_time)
                data_start = time.time()
                batch = prefetcher.next()
            if self.current_iter < total_iter:
                self.epoch += 1

    def train_iteration(self, batch: dict, data_time: float) -> None:
        """One iteration: learning rate, step, then the log/save/validate schedule."""
        iter_start = time.time()
        self.current_iter += 1
        model, train_opt = self.model, self.opt['train']
        model.update_learning_rate(self.current_iter, warmup_iter=train_opt['warmup_iter'])
        model.feed_data(batch)
        model.optimize_parameters(self.current_iter)
        self.after_iteration(time.time() - iter_start + data_time, data_time)

    def after_iteration(self, iter_time: float, data_time: float) -> None:
        """The schedule: log every ``print_freq``, save every ``save_checkpoint_freq``, validate every
        ``val_freq`` iterations."""
        logger_opt, current_iter = self.opt['logger'], self.current_iter
        if current_iter % logger_opt['print_freq'] == 0:
            self.msg_logger({'epoch': self.epoch, 'iter': current_iter, 'lrs': self.model.get_current_learning_rate(),
                             'time': iter_time, 'data_time': data_time, **self.model.get_current_log()})
        if current_iter % logger_opt['save_checkpoint_freq'] == 0:
            self.logger.info('Saving models and training states.')
            self.save_checkpoint()
        if self.val_loaders and current_iter % self.opt['val']['val_freq'] == 0:
            self.validate()

    def validate(self) -> None:
        """Evaluate every validation set and log the metrics (TensorBoard too)."""
        for dataset_opt, loader in self.val_loaders:
            save_dir = self.ctx.paths.visualization / str(self.current_iter) if self.opt['val']['save_img'] else None
            result = self.model.validation(loader, dataset_opt, self.current_iter, tb_logger=self.tb_logger,
                                           save_dir=save_dir)
            log_validation(self.logger, dataset_opt['name'], self.current_iter, result)

    # ------------------------------------------------------------------ the end
    def finish(self) -> None:
        """Save the latest model, and validate it unless that iteration was validated already."""
        self.logger.info('End of training. Saving the latest model.')
        self.save_checkpoint(latest=True)
        if self.val_loaders and self.current_iter % self.opt['val']['val_freq'] != 0:
            self.validate()

    def close(self) -> None:
        """Close the loggers and leave torch.distributed."""
        if self.tb_logger is not None:
            self.tb_logger.close()
        close_file_handlers()
        destroy_dist()


def train_pipeline(opt: FrozenDict, ctx: RunContext) -> None:
    """Train with the validated options and run context (what ``train.py`` runs)."""
    Trainer(opt, ctx).run()
