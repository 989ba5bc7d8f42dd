"""torch.distributed set-up: ``init_dist`` for torch.distributed.launch / torchrun and slurm."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as torch_dist


def init_dist(launcher: str, backend: str = 'nccl', port: int = 29500) -> None:
    """Join the process group of this launch.

    Args:
        launcher: ``'pytorch'`` (``python -m torch.distributed.launch`` or ``torchrun``; both set
            RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT) or ``'slurm'`` (``srun``).
        backend: the backend wanted with CUDA (``nccl``); without CUDA ``gloo`` is used, since
            NCCL needs GPUs.
        port: MASTER_PORT for slurm when the environment does not set it.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        return
    if not torch.cuda.is_available():
        backend = 'gloo'
    if launcher == 'pytorch':
        _init_dist_pytorch(backend)
    elif launcher == 'slurm':
        _init_dist_slurm(backend, port)
    else:
        raise ValueError(f"launcher must be 'pytorch' or 'slurm' to start torch.distributed, got {launcher!r}")


def _require_env(launcher: str, names: tuple[str, ...], how: str) -> None:
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise RuntimeError(f"--launcher {launcher} needs the environment variables {', '.join(missing)}; {how}")


def _init_dist_pytorch(backend: str) -> None:
    _require_env('pytorch', ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                 "start the program with 'torchrun --nproc_per_node=N basicsr/train.py ...' or "
                 "'python -m torch.distributed.launch ...', or use --launcher none for a single process.")
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if backend == 'nccl':
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    torch_dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))


def _init_dist_slurm(backend: str, port: int) -> None:
    _require_env('slurm', ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
                 'start the program with srun, or use --launcher pytorch / none.')
    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    node_list = os.environ['SLURM_NODELIST']
    addr = subprocess.run(['scontrol', 'show', 'hostname', node_list], check=True, capture_output=True,
                          text=True).stdout.splitlines()[0]
    os.environ.setdefault('MASTER_PORT', str(port))
    os.environ.setdefault('MASTER_ADDR', addr)
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['RANK'] = str(proc_id)
    local_rank = int(os.environ.get('SLURM_LOCALID', proc_id % max(torch.cuda.device_count(), 1)))
    os.environ['LOCAL_RANK'] = str(local_rank)
    if backend == 'nccl':
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    torch_dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))


def get_dist_info() -> tuple[int, int]:
    """(rank, world_size) of this process; (0, 1) without torch.distributed."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def master_only(func: Callable) -> Callable:
    """Run ``func`` on rank 0 only; other ranks get None."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        rank, _ = get_dist_info()
        if rank == 0:
            return func(*args, **kwargs)
        return None

    return wrapper


def barrier() -> None:
    """Wait for all processes (no-op without torch.distributed)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def destroy_dist() -> None:
    """Leave the process group, if any (avoids a warning at exit)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
