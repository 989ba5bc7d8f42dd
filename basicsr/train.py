"""Train a model from a YAML option file.

    python basicsr/train.py -opt options/train/GoPro/EFNet.yml
    torchrun --nproc_per_node=4 basicsr/train.py -opt options/train/GoPro/EFNet.yml --launcher pytorch
    python -m torch.distributed.launch --nproc_per_node=4 --master_port=4321 basicsr/train.py -opt ... \
        --launcher pytorch

The loop owns iterations, timing, the log/validate/checkpoint schedule and resume; the model owns
the data feeding, the step and its state.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

if __package__ in (None, ''):  # run as a script: make the package importable without installing it
    sys.path[:] = [str(Path(__file__).resolve().parents[1]) if p == str(Path(__file__).resolve().parent) else p
                   for p in sys.path]

import torch

from basicsr.data import build_dataloader, build_dataset
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.models import build_model
from basicsr.utils.dist_util import destroy_dist
from basicsr.utils.logger import MessageLogger, close_file_handlers, init_tb_logger, init_wandb_logger
from basicsr.utils.misc import newest_training_state
from basicsr.utils.options import parse_options
from basicsr.utils.run_setup import build_eval_loaders, prepare_run_folders, seed_everything, start_logging


def find_resume_state(opt, ctx) -> Path | None:
    """``path.resume_state``, else with ``--auto_resume`` the newest ``training_states/<iter>.state``."""
    if opt['path']['resume_state'] is not None:
        path = Path(opt['path']['resume_state'])
        if not path.is_file():
            raise FileNotFoundError(f"path.resume_state '{path}' does not exist.")
        return path
    if ctx.auto_resume:
        return newest_training_state(ctx.paths.training_states)
    return None


def load_resume_state(path: Path, device: torch.device) -> dict:
    state = torch.load(path, map_location=device, weights_only=True)
    for key in ('epoch', 'iter', 'optimizers', 'schedulers'):
        if key not in state:
            raise ValueError(f"Training state '{path}' has no '{key}' entry; it was not written by this train.py.")
    return state


def build_train_loader(opt, ctx, logger):
    """The training loader, its sampler, and the epoch count needed for ``train.total_iter``."""
    dataset_opt = opt['datasets']['train']
    train_set = build_dataset(dataset_opt)
    ratio = dataset_opt['dataset_enlarge_ratio']
    sampler = EnlargedSampler(train_set, ctx.world_size, ctx.rank, ratio)
    loader = build_dataloader(train_set, dataset_opt, dist=ctx.dist, sampler=sampler, seed=opt['manual_seed'],
                              rank=ctx.rank)
    iters_per_epoch = math.ceil(len(train_set) * ratio / (dataset_opt['batch_size_per_gpu'] * ctx.world_size))
    if iters_per_epoch == 0 or len(loader) == 0:
        raise ValueError(
            f"datasets.train has {len(train_set)} samples, fewer than batch_size_per_gpu x processes "
            f"({dataset_opt['batch_size_per_gpu']} x {ctx.world_size}); lower the batch size or add data."
        )
    total_iter = opt['train']['total_iter']
    total_epochs = math.ceil(total_iter / iters_per_epoch)
    logger.info('Training statistics: %d images, enlarge ratio %d, batch %d per process, %d processes, '
                '%d iterations per epoch, %d iterations = %d epochs.', len(train_set), ratio,
                dataset_opt['batch_size_per_gpu'], ctx.world_size, iters_per_epoch, total_iter, total_epochs)
    return loader, sampler


def make_prefetcher(loader, dataset_opt, device):
    if dataset_opt['prefetch_mode'] == 'cuda':
        return CUDAPrefetcher(loader, device=device)
    return CPUPrefetcher(loader)


def validate(model, val_loaders, current_iter, tb_logger, logger):
    for dataset_opt, loader in val_loaders:
        save_dir = model.ctx.paths.visualization / str(current_iter) if model.opt['val']['save_img'] else None
        result = model.validation(loader, dataset_opt, current_iter, tb_logger=tb_logger, save_dir=save_dir)
        if result is not None:
            summary = result['summary']
            text = ' '.join(f'# {k}: {v:.4f}' for k, v in summary['output'].items())
            gain = ' '.join(f'{k} {v:.4f}' for k, v in summary['input'].items())
            logger.info('Validation %s, iter %d, %s (blurry input: %s)', dataset_opt['name'], current_iter, text,
                        gain or '-')


def train_pipeline(argv: list[str] | None = None) -> None:
    opt, ctx = parse_options(is_train=True, argv=argv)
    resume_path = find_resume_state(opt, ctx)
    prepare_run_folders(opt, ctx, resuming=resume_path is not None)
    logger = start_logging(opt, ctx)
    seed_everything(opt, ctx)
    tb_logger = None
    if opt['logger']['use_tb_logger'] and ctx.is_main:
        if opt['logger']['wandb']['project'] is not None:
            init_wandb_logger(opt, ctx.paths.log)
        tb_logger = init_tb_logger(ctx.paths.tb_logger)

    train_loader, train_sampler = build_train_loader(opt, ctx, logger)
    val_loaders = build_eval_loaders(opt, ctx, phases=('val',))
    model = build_model(opt, ctx)

    start_epoch, current_iter = 0, 0
    if resume_path is not None:
        state = load_resume_state(resume_path, ctx.device)
        model.resume_training(state)
        start_epoch, current_iter = state['epoch'], state['iter']
        logger.info('Resuming training from epoch %d, iteration %d (%s).', start_epoch, current_iter, resume_path)

    train_opt, logger_opt, val_opt = opt['train'], opt['logger'], opt['val']
    total_iter = train_opt['total_iter']
    msg_logger = MessageLogger(opt['name'], total_iter, current_iter, tb_logger)
    prefetcher = make_prefetcher(train_loader, opt['datasets']['train'], ctx.device)
    logger.info('Start training from epoch %d, iteration %d.', start_epoch, current_iter + 1)
    epoch = start_epoch
    data_start = iter_start = time.time()
    while current_iter < total_iter:
        train_sampler.set_epoch(epoch)
        prefetcher.reset()
        batch = prefetcher.next()
        while batch is not None and current_iter < total_iter:
            data_time = time.time() - data_start
            current_iter += 1
            model.update_learning_rate(current_iter, warmup_iter=train_opt['warmup_iter'])
            model.feed_data(batch)
            model.optimize_parameters(current_iter)
            iter_time = time.time() - iter_start
            if current_iter % logger_opt['print_freq'] == 0:
                log_vars = {'epoch': epoch, 'iter': current_iter, 'lrs': model.get_current_learning_rate(),
                            'time': iter_time, 'data_time': data_time, **model.get_current_log()}
                msg_logger(log_vars)
            if current_iter % logger_opt['save_checkpoint_freq'] == 0:
                logger.info('Saving models and training states.')
                model.save(epoch, current_iter)
            if val_loaders and current_iter % val_opt['val_freq'] == 0:
                validate(model, val_loaders, current_iter, tb_logger, logger)
            data_start = time.time()
            iter_start = time.time()
            batch = prefetcher.next()
        epoch += 1

    logger.info('End of training. Saving the latest model.')
    model.save(epoch=-1, current_iter='latest')
    if val_loaders and current_iter % val_opt['val_freq'] != 0:  # not validated at this iteration yet
        validate(model, val_loaders, current_iter, tb_logger, logger)
    if tb_logger is not None:
        tb_logger.close()
    close_file_handlers()
    destroy_dist()


if __name__ == '__main__':
    train_pipeline()
