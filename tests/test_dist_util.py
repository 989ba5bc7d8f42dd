"""torch.distributed set-up: rank info, master_only, init_dist with gloo, launcher errors."""

from __future__ import annotations

import socket
import textwrap

import pytest

from basicsr.utils import dist_util
from basicsr.utils.dist_util import barrier, destroy_dist, get_dist_info, init_dist, master_only

DIST_ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_get_dist_info_without_a_process_group():
    assert get_dist_info() == (0, 1)


def test_barrier_and_destroy_are_no_ops_without_a_process_group():
    barrier()
    destroy_dist()
    assert get_dist_info() == (0, 1)


def test_master_only_runs_on_rank_0():
    calls = []

    @master_only
    def save(value, *, twice=False):
        """Save something."""
        calls.append(value)
        return value * (2 if twice else 1)

    assert save(3, twice=True) == 6 and calls == [3]
    assert save.__name__ == 'save' and save.__doc__ == 'Save something.'


def test_master_only_skips_other_ranks(monkeypatch):
    monkeypatch.setattr(dist_util, 'get_dist_info', lambda: (1, 2))
    calls = []

    @master_only
    def save():
        calls.append(1)
        return 'saved'

    assert save() is None and calls == []


def test_init_dist_rejects_an_unknown_launcher():
    with pytest.raises(ValueError, match="launcher must be 'pytorch' or 'slurm' to start torch.distributed, got 'mpi'"):
        init_dist('mpi')


def test_init_dist_pytorch_names_the_missing_environment_variables(monkeypatch):
    for name in DIST_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('RANK', '0')
    with pytest.raises(RuntimeError) as info:
        init_dist('pytorch', backend='gloo')
    assert str(info.value) == (
        '--launcher pytorch needs the environment variables WORLD_SIZE, MASTER_ADDR, MASTER_PORT; start the program '
        "with 'torchrun --nproc_per_node=N basicsr/train.py ...' or 'python -m torch.distributed.launch ...', "
        'or use --launcher none for a single process.'
    )
    assert get_dist_info() == (0, 1)


def test_init_dist_pytorch_with_gloo_in_a_world_of_one(run_python):
    """A real process group (gloo, one process), as torchrun would set it up."""
    script = textwrap.dedent("""
        import torch.distributed as dist
        from basicsr.utils.dist_util import destroy_dist, get_dist_info, init_dist, master_only

        init_dist('pytorch', backend='nccl')  # without CUDA, gloo is used instead
        print(dist.is_initialized(), dist.get_backend(), get_dist_info(), master_only(lambda: 'main')())
        init_dist('pytorch')  # a second call keeps the group
        destroy_dist()
        print(dist.is_initialized(), get_dist_info())
    """)
    env = {
        'MASTER_ADDR': '127.0.0.1',
        'MASTER_PORT': str(free_port()),
        'RANK': '0',
        'WORLD_SIZE': '1',
        'LOCAL_RANK': '0',
        'CUDA_VISIBLE_DEVICES': '',
    }
    result = run_python('-c', script, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['True gloo (0, 1) main', 'False (0, 1)']
