"""The training loop: set-up, resume, the iteration, the log/save/validate schedule and the end.

:class:`Trainer` owns iterations, timing, the schedule and resume; the model owns the data feeding, the
step and its state. :meth:`Trainer.save_checkpoint` writes every checkpoint and training state,
:meth:`Trainer.resume` restores one, :meth:`Trainer.train_iteration` is the loop body.

Exact resume: a training state holds the run seed, the sampler position (``epoch``, ``consumed``: items of the
epoch the loop has trained on) and every rank's random-number states, captured after the update; on resume the
model's state, then the sampler position, and LAST the random-number states are restored, right before the first
iteration. Data augmentation draws depend on (seed, epoch, position) only, so the continuation repeats the
uninterrupted run bit for bit on the CPU.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from basicsr.data import build_dataloader, resolve_prefetch_mode
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.engine.context import RunContext
from basicsr.engine.resume import check_compatible, find_resume_state, run_signature
from basicsr.engine.run_setup import (
    attach_log_file,
    build_dataset,
    build_eval_loaders,
    build_model,
    check_event_channels,
    close_logging,
    cores_per_process,
    fit_loader_workers,
    prepare_run_folders,
    seed_run,
    size_compute_threads,
    start_logging,
)
from basicsr.engine.signals import GracefulStop
from basicsr.engine.testing import log_validation
from basicsr.utils.dist_util import (
    RankWatchdog,
    barrier,
    destroy_dist,
    gather_from_ranks,
    this_rank_part,
)
from basicsr.utils.errors import InvalidInputError, UserError
from basicsr.utils.logger import MessageLogger, init_tb_logger, init_wandb_logger
from basicsr.utils.misc import capture_rng_state, restore_rng_state
from basicsr.utils.option_schema import FrozenDict


class NonFiniteTrainingError(UserError):
    """Too many consecutive updates were skipped for a NaN or inf loss or gradient."""


def make_prefetcher(loader, dataset_opt: FrozenDict, device: torch.device):
    if resolve_prefetch_mode(dataset_opt, device) == 'cuda':
        return CUDAPrefetcher(loader, device=device)
    return CPUPrefetcher(loader)


def describe_batch(batch: dict) -> str:
    """``seq/index`` of every item of a batch, for the NaN guard's log line."""
    return ', '.join(f'{seq}/{int(index)}' for seq, index in zip(batch.get('seq', []), batch.get('index', [])))


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
        self.consumed = 0
        self.current_iter = 0
        self.resume_path: Path | None = None
        self.resume_state: dict | None = None
        self.nonfinite_steps = 0

    # ------------------------------------------------------------------ set-up
    def setup(self) -> bool:
        """Logs, seed, data, model and the event-channel check; then the run's folders, TensorBoard and resume.

        Returns:
            False when there is nothing to do: the state resumed from already reached ``train.total_iter``.
        """
        opt, ctx = self.opt, self.ctx
        self.logger = start_logging(opt, ctx)
        found = find_resume_state(opt, ctx)
        if found is not None:
            self.resume_path, self.resume_state = found
            if self.resume_state['iter'] >= opt['train']['total_iter']:
                self.logger.info(
                    "Training '%s' has already finished: its training state '%s' is at iteration %d and "
                    'train.total_iter is %d; nothing to do (raise train.total_iter to continue it).',
                    opt['name'],
                    self.resume_path,
                    self.resume_state['iter'],
                    opt['train']['total_iter'],
                )
                return False
        source = str(self.resume_path)  # for messages about the state resumed from
        self.seed = seed_run(opt, ctx, self.resume_state.get('seed') if found else None, source=source)
        self.build_train_loader()
        self.val_loaders = build_eval_loaders(opt, ctx, phases=('val',), seed=self.seed)
        self.model = build_model(opt, ctx)
        datasets = {opt['datasets']['train']['name']: self.train_loader.dataset}
        datasets.update({dataset_opt['name']: loader.dataset for dataset_opt, loader in self.val_loaders})
        check_event_channels(self.model, datasets)
        scheduler_changed = found is not None and check_compatible(self.resume_state, opt, ctx.world_size, source)
        prepare_run_folders(opt, ctx, resuming=found is not None)
        attach_log_file(opt, ctx)
        self.start_visual_loggers()
        if found is not None:
            self.resume(scheduler_changed)
        return True

    def start_visual_loggers(self) -> None:
        """TensorBoard (and wandb when ``logger.wandb.project`` is set and wandb is installed), rank 0."""
        opt = self.opt
        if not (opt['logger']['use_tb_logger'] and self.ctx.is_main):
            return
        if opt['logger']['wandb']['project'] is not None:
            try:
                init_wandb_logger(opt, self.ctx.paths.log)
            except ImportError as error:
                self.logger.warning('%s; going on with TensorBoard only.', error)
        self.tb_logger = init_tb_logger(self.ctx.paths.tb_logger)

    def build_train_loader(self) -> None:
        """The training loader and its sampler (seeded per item), its workers and the compute threads sized for
        this process's cores; logs the epoch count needed for ``train.total_iter``."""
        opt, ctx = self.opt, self.ctx
        dataset_opt = opt['datasets']['train']
        train_set = build_dataset(dataset_opt)
        ratio = dataset_opt['dataset_enlarge_ratio']
        self.train_sampler = EnlargedSampler(
            train_set, ctx.world_size, ctx.rank, ratio, seed=self.seed, item_seeds=True
        )
        cores = cores_per_process(ctx)
        workers = fit_loader_workers(dataset_opt['num_worker_per_gpu'], cores, 'datasets.train.num_worker_per_gpu')
        size_compute_threads(cores, workers)
        self.train_loader = build_dataloader(
            train_set,
            {**dataset_opt, 'num_worker_per_gpu': workers},
            dist=ctx.dist,
            sampler=self.train_sampler,
            seed=self.seed,
            rank=ctx.rank,
            device=ctx.device,
        )
        iters_per_epoch = math.ceil(len(train_set) * ratio / (dataset_opt['batch_size_per_gpu'] * ctx.world_size))
        if iters_per_epoch == 0 or len(self.train_loader) == 0:
            raise InvalidInputError(
                f'datasets.train has {len(train_set)} samples, fewer than batch_size_per_gpu x processes '
                f'({dataset_opt["batch_size_per_gpu"]} x {ctx.world_size}); lower the batch size or add data.'
            )
        total_iter = opt['train']['total_iter']
        self.logger.info(
            'Training statistics: %d images, enlarge ratio %d, batch %d per process, %d processes, '
            '%d iterations per epoch, %d iterations = %d epochs.',
            len(train_set),
            ratio,
            dataset_opt['batch_size_per_gpu'],
            ctx.world_size,
            iters_per_epoch,
            total_iter,
            math.ceil(total_iter / iters_per_epoch),
        )

    # ------------------------------------------------------------------ resume and checkpoints
    def resume(self, scheduler_changed: bool) -> None:
        """Restore the model's state (optimizers, schedulers, scaler, weights, EMA) and the loop position; the
        random-number states are restored last, in :meth:`train_loop`."""
        state, path = self.resume_state, self.resume_path
        self.model.resume_training(state, scheduler_changed=scheduler_changed)
        if 'sampler' in state:
            self.train_sampler.load_state_dict(state['sampler'], source=str(path))
            self.epoch, self.consumed = self.train_sampler.epoch, self.train_sampler.start
        else:
            self.epoch = state['epoch']
        self.current_iter = state['iter']
        self.logger.info('Resuming training from epoch %d, iteration %d (%s).', self.epoch, self.current_iter, path)

    def restore_rng_states(self) -> None:
        """The resumed state's random-number states of this rank (called right before the first iteration)."""
        if self.resume_state is not None and 'rng' in self.resume_state:
            restore_rng_state(this_rank_part(self.resume_state['rng'], 'random-number states', str(self.resume_path)))

    def save_checkpoint(self, latest: bool = False) -> None:
        """Write ``net_g_<iter>.pth`` and ``training_states/<iter>.state`` (``latest``: ``net_g_latest.pth``).

        A collective under torch.distributed (the random-number states of every rank are gathered).
        """
        if latest:
            self.model.save(epoch=-1, current_iter='latest')
            return
        rng = gather_from_ranks(capture_rng_state())
        extra_state = {
            'seed': self.seed,
            'sampler': self.train_sampler.state_dict(self.consumed),
            'rng': rng,
            'signature': run_signature(self.opt, self.ctx.world_size),
        }
        self.model.save(self.epoch, self.current_iter, extra_state=extra_state)
        self.last_saved_iter = self.current_iter
        if self.ctx.is_main and self.opt['logger']['keep_checkpoints'] is not None:
            self.remove_old_checkpoints(self.opt['logger']['keep_checkpoints'])

    def remove_old_checkpoints(self, keep: int) -> None:
        """Keep the newest ``keep`` ``net_g_<iter>.pth`` and states (and the state resumed from)."""
        paths = self.ctx.paths
        states = sorted((int(p.stem) for p in paths.training_states.glob('*.state') if p.stem.isdigit()), reverse=True)
        protected = {self.resume_state['iter']} if self.resume_state is not None else set()
        for iteration in states[keep:]:
            if iteration in protected:
                continue
            for old in (paths.training_states / f'{iteration}.state', paths.models / f'net_g_{iteration}.pth'):
                old.unlink(missing_ok=True)
            self.logger.info('Removed the checkpoint of iteration %d (logger.keep_checkpoints: %d).', iteration, keep)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Set up, iterate until ``train.total_iter`` or a stop signal, then finish."""
        try:
            if not self.setup():
                return
            dist_opt = self.opt['dist_params']
            with RankWatchdog(silence_s=dist_opt['timeout'] / 2), GracefulStop() as stop:
                self.train_loop(stop)
                self.finish()
            barrier()
        finally:
            self.close()

    def train_loop(self, stop: GracefulStop) -> None:
        total_iter = self.opt['train']['total_iter']
        self.last_saved_iter = self.current_iter
        self.msg_logger = MessageLogger(self.opt['name'], total_iter, self.current_iter, self.tb_logger)
        prefetcher = make_prefetcher(self.train_loader, self.opt['datasets']['train'], self.ctx.device)
        self.logger.info('Start training from epoch %d, iteration %d.', self.epoch, self.current_iter + 1)
        self.restore_rng_states()  # last: nothing may draw random numbers between this and the first iteration
        while self.current_iter < total_iter:
            self.train_sampler.set_epoch(self.epoch, self.consumed)
            prefetcher.reset()
            data_start = time.time()
            batch = prefetcher.next()
            while batch is not None and self.current_iter < total_iter:
                data_time = time.time() - data_start
                self.train_iteration(batch, data_time, stop)
                data_start = time.time()
                batch = prefetcher.next()
            if batch is None:  # the epoch ran out (not ended by total_iter)
                self.epoch, self.consumed = self.epoch + 1, 0

    def train_iteration(self, batch: dict, data_time: float, stop: GracefulStop) -> None:
        """One iteration: learning rate, step (NaN guard), then the stop check and the log/save/validate
        schedule."""
        iter_start = time.time()
        self.current_iter += 1
        self.consumed += self.train_loader.batch_size
        model, train_opt = self.model, self.opt['train']
        model.update_learning_rate(self.current_iter, warmup_iter=train_opt['warmup_iter'])
        model.feed_data(batch)
        if model.optimize_parameters(self.current_iter):
            self.nonfinite_steps = 0
        else:
            self.skipped_update(batch)
        self.after_iteration(time.time() - iter_start + data_time, data_time, stop)

    def skipped_update(self, batch: dict) -> None:
        """Log a step skipped by the NaN guard; stop after ``train.max_nonfinite_steps`` in a row."""
        self.nonfinite_steps += 1
        limit = self.opt['train']['max_nonfinite_steps']
        values = {name: float(value) for name, value in self.model.log_dict.items()}  # this rank's: no collective
        self.logger.warning(
            'Iteration %d: non-finite loss or gradient (l_pix %s, grad_norm %s); the update is '
            'skipped (%d in a row of at most %d). Batch items (sequence/index): %s.',
            self.current_iter,
            values.get('l_pix'),
            values.get('grad_norm'),
            self.nonfinite_steps,
            limit,
            describe_batch(batch),
        )
        if self.nonfinite_steps >= limit:
            lrs = ', '.join(f'{lr:.3g}' for lr in self.model.get_current_learning_rate())
            raise NonFiniteTrainingError(
                f'Training stopped at iteration {self.current_iter}: the loss or the gradient was NaN or inf in '
                f'{self.nonfinite_steps} consecutive iterations (train.max_nonfinite_steps: {limit}), so every '
                f'update was skipped. Suspects: the learning rate ({lrs}; lower train.optim_g.lr), or the data of '
                f'the logged batches (the last: {describe_batch(batch)}; check those items for NaN/inf or extreme '
                f'values). The checkpoints in {self.ctx.paths.models} hold only finite weights; resume from the '
                'last with --auto_resume after the fix.'
            )

    def after_iteration(self, iter_time: float, data_time: float, stop: GracefulStop) -> None:
        """The schedule: log every ``print_freq``; save every ``save_checkpoint_freq`` or on a stop signal (then
        exit 130/143); validate every ``val_freq`` iterations."""
        logger_opt, current_iter = self.opt['logger'], self.current_iter
        if current_iter % logger_opt['print_freq'] == 0:
            self.msg_logger(
                {
                    'epoch': self.epoch,
                    'iter': current_iter,
                    'lrs': self.model.get_current_learning_rate(),
                    'time': iter_time,
                    'data_time': data_time,
                    **self.model.get_current_log(),
                }
            )
        stopping = stop.should_stop()  # every iteration, on every rank (a collective)
        if stopping or current_iter % logger_opt['save_checkpoint_freq'] == 0:
            self.logger.info('Saving models and training states.')
            self.save_checkpoint()
        if stopping:
            self.logger.info(stop.describe(current_iter))
            barrier()
            raise SystemExit(stop.exit_code)
        if self.val_loaders and current_iter % self.opt['val']['val_freq'] == 0:
            self.validate()

    def validate(self) -> None:
        """Evaluate every validation set and log the metrics (TensorBoard too)."""
        for dataset_opt, loader in self.val_loaders:
            save_dir = self.ctx.paths.visualization / str(self.current_iter) if self.opt['val']['save_img'] else None
            result = self.model.validation(
                loader, dataset_opt, self.current_iter, tb_logger=self.tb_logger, save_dir=save_dir
            )
            log_validation(self.logger, dataset_opt['name'], self.current_iter, result)

    # ------------------------------------------------------------------ the end
    def finish(self) -> None:
        """Save the final state and the latest model, and validate it unless that iteration was validated."""
        self.logger.info('End of training. Saving the latest model and the final training state.')
        if self.last_saved_iter != self.current_iter:
            self.save_checkpoint()
        self.save_checkpoint(latest=True)
        if self.val_loaders and self.current_iter % self.opt['val']['val_freq'] != 0:
            self.validate()

    def close(self) -> None:
        """Close the loggers and leave torch.distributed."""
        if self.tb_logger is not None:
            self.tb_logger.close()
        close_logging()
        destroy_dist()


def train_pipeline(opt: FrozenDict, ctx: RunContext) -> None:
    """Train with the validated options and run context (what ``train.py`` runs)."""
    Trainer(opt, ctx).run()
