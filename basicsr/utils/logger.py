"""Logging: the ``basicsr`` root logger, the BasicSR-style training line, TensorBoard, env info."""

from __future__ import annotations

import datetime
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

from basicsr.utils.dist_util import get_dist_info, master_only

ROOT_LOGGER_NAME = 'basicsr'
_FORMAT = '%(asctime)s %(levelname)s: %(message)s'


def get_root_logger(log_level: int = logging.INFO, log_file: str | Path | None = None) -> logging.Logger:
    """The ``basicsr`` logger: console, plus a file on rank 0 when ``log_file`` is given.

    Rank 0 logs at ``log_level``; other ranks only errors, so distributed logs are not repeated.
    Calling it again only adds a file handler that is not there yet.
    """
    logger = logging.getLogger(ROOT_LOGGER_NAME)
    rank, _ = get_dist_info()
    if not logger.handlers:
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(console)
        logger.propagate = False
    logger.setLevel(log_level if rank == 0 else logging.ERROR)
    if log_file is not None and rank == 0:
        log_file = str(Path(log_file).resolve())
        if not any(getattr(h, 'baseFilename', None) == log_file for h in logger.handlers):
            file_handler = logging.FileHandler(log_file, 'w')
            file_handler.setFormatter(logging.Formatter(_FORMAT))
            logger.addHandler(file_handler)
    return logger


def close_file_handlers() -> None:
    """Close and remove the file handlers of the root logger (end of a run, tests)."""
    logger = logging.getLogger(ROOT_LOGGER_NAME)
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)


def format_eta(seconds: float) -> str:
    """Seconds as ``H:MM:SS`` (``1 day, H:MM:SS`` past a day)."""
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class MessageLogger:
    """Writes the training line every ``print_freq`` iterations, and the scalars to TensorBoard.

    Line format (BasicSR)::

        [EFNet..][epoch:  3, iter:   1,200, lr:(2.000e-04,)] [eta: 1:02:03, time (data): 0.412 (0.003)] l_pix: ...

    Args:
        name: experiment name (its first 5 characters start the line).
        total_iter: last iteration, for the ETA.
        start_iter: the iteration the run (re)started from.
        tb_logger: a SummaryWriter or None.
    """

    def __init__(self, name: str, total_iter: int, start_iter: int = 0, tb_logger: Any = None):
        self.exp_name = name
        self.total_iter = total_iter
        self.start_iter = start_iter
        self.tb_logger = tb_logger
        self.start_time = time.time()
        self.logger = get_root_logger()

    def format_line(self, log_vars: dict[str, Any]) -> str:
        """The log line for a dict with epoch, iter, lrs, time, data_time and loss values."""
        current_iter = log_vars['iter']
        lrs = ','.join(f'{lr:.3e}' for lr in log_vars['lrs'])
        line = f'[{self.exp_name[:5]}..][epoch:{log_vars["epoch"]:3d}, iter:{current_iter:8,d}, lr:({lrs},)] '
        if 'time' in log_vars:
            done = max(current_iter - self.start_iter, 1)
            seconds_per_iter = (time.time() - self.start_time) / done
            eta = format_eta(seconds_per_iter * (self.total_iter - current_iter))
            line += f'[eta: {eta}, time (data): {log_vars["time"]:.3f} ({log_vars["data_time"]:.3f})] '
        skip = {'epoch', 'iter', 'lrs', 'time', 'data_time'}
        line += ' '.join(f'{key}: {value:.4e}' for key, value in log_vars.items() if key not in skip)
        return line

    @master_only
    def __call__(self, log_vars: dict[str, Any]) -> None:
        self.logger.info(self.format_line(log_vars))
        if self.tb_logger is not None:
            for key, value in log_vars.items():
                if key in {'epoch', 'iter', 'lrs', 'time', 'data_time'}:
                    continue
                tag = f'losses/{key}' if key.startswith('l_') else key
                self.tb_logger.add_scalar(tag, value, log_vars['iter'])
            self.tb_logger.add_scalar('lr', log_vars['lrs'][0], log_vars['iter'])


@master_only
def init_tb_logger(log_dir: str | Path) -> Any:
    """A TensorBoard SummaryWriter in ``log_dir`` (rank 0 only; tensorboard imported here)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ImportError(
            f'logger.use_tb_logger is true but TensorBoard cannot be imported ({error}); '
            'pip install tensorboard, or set logger.use_tb_logger: false'
        ) from None
    return SummaryWriter(log_dir=str(log_dir))


@master_only
def init_wandb_logger(opt: Any, log_dir: str | Path) -> Any:
    """Start a Weights & Biases run when ``logger.wandb.project`` is set (optional dependency)."""
    try:
        import wandb
    except ImportError:
        raise ImportError(
            'logger.wandb.project is set but the wandb package is not installed; '
            'pip install wandb, or set logger.wandb.project: ~'
        ) from None
    wandb_opt = opt['logger']['wandb']
    resume_id = wandb_opt['resume_id']
    return wandb.init(
        id=resume_id or wandb.util.generate_id(),
        resume='allow' if resume_id else 'never',
        name=opt['name'],
        config=opt.to_dict(),
        project=wandb_opt['project'],
        sync_tensorboard=True,
        dir=str(log_dir),
    )


def git_revision(folder: str | Path | None = None) -> str:
    """Short git revision of ``folder`` (default: this package's checkout), or 'unknown'."""
    folder = Path(folder) if folder else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], cwd=folder, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return 'unknown'
    return out.stdout.strip() if out.returncode == 0 else 'unknown'


def get_env_info() -> str:
    """Versions of the stack and the git revision, for the head of each log."""
    import numpy
    import torch

    from basicsr.version import __version__

    cuda = torch.version.cuda if torch.cuda.is_available() else 'not available'
    return (
        f'basicsr (EFNet framework) {__version__}, git {git_revision()}\n'
        f'    PyTorch {torch.__version__}, NumPy {numpy.__version__}, CUDA {cuda}, '
        f'GPUs {torch.cuda.device_count()}'
    )
