"""Distributed faults on real 2-process gloo groups: a stalled rank ends the job with a message naming it, all
ranks stop at the same iteration after a signal, the seed broadcast and per-rank states; the launcher check."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from basicsr.utils import dist_util
from basicsr.utils.dist_util import check_launcher, gather_from_ranks, init_dist, this_rank_part
from basicsr.utils.errors import InvalidInputError

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import torch, torch.distributed as dist
    from basicsr.engine.signals import GracefulStop
    from basicsr.utils.dist_util import RankWatchdog, broadcast_seed, gather_from_ranks, init_dist, this_rank_part

    timeout, stalling, how = float(sys.argv[1]), int(sys.argv[2]), getattr(signal, sys.argv[3])
    backend = init_dist('pytorch', backend='nccl', timeout_s=timeout)  # no CUDA here: gloo
    rank = dist.get_rank()
    seed = broadcast_seed(100 + rank)
    parts = gather_from_ranks({'rank': rank, 'state': torch.full((2,), rank)})
    mine = this_rank_part(parts, 'random-number states', 'x.state')
    with GracefulStop() as stop:  # rank 1 gets SIGUSR1; both ranks stop at the same iteration
        for iteration in range(1, 10**6 if stalling == 1 else 1):
            if rank == 1 and iteration == 7:
                os.kill(os.getpid(), signal.SIGUSR1)
            if stop.should_stop():
                print(backend, seed, mine['rank'], mine['state'].tolist(), iteration, stop.exit_code, flush=True)
                break
    with RankWatchdog(silence_s=timeout / 2, interval_s=0.2):  # then rank `stalling` stops
        for iteration in range(10**6):
            dist.all_reduce(torch.ones(1))
            if rank == stalling and iteration == 20:
                print('stopping', flush=True)
                os.kill(os.getpid(), how)
            time.sleep(0.01)
    """)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def start_ranks(tmp_path, source, *args):
    """Two processes of one gloo group, started as torchrun would start them (RANK, WORLD_SIZE, MASTER_*)."""
    script = tmp_path / 'script.py'
    script.write_text(source)
    port = str(free_port())
    processes = []
    for rank in range(2):
        env = {
            **os.environ,
            'RANK': str(rank),
            'LOCAL_RANK': str(rank),
            'WORLD_SIZE': '2',
            'MASTER_ADDR': '127.0.0.1',
            'MASTER_PORT': port,
            'PYTHONPATH': os.pathsep.join([os.getcwd(), os.environ.get('PYTHONPATH', '')]),
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return processes


def test_ranks_stop_together_share_a_seed_and_a_stalled_rank_ends_the_job_naming_it(tmp_path):
    timeout = 4.0
    healthy, stalled = start_ranks(tmp_path, SCRIPT, str(timeout), '1', 'SIGSTOP')
    try:
        for rank, process in enumerate((healthy, stalled)):
            assert process.stdout.readline() == f'gloo 100 {rank} [{rank}, {rank}] 7 143\n'
        assert stalled.stdout.readline() == 'stopping\n'
        stopped_at = time.monotonic()
        _, stderr = healthy.communicate(timeout=30)
        ended_after = time.monotonic() - stopped_at
    finally:
        for process in (healthy, stalled):
            process.kill()
            process.communicate()
    assert healthy.returncode == 2, stderr
    assert ended_after < timeout + 2  # silence of timeout / 2, beats every 0.2 s, plus slack for a loaded machine
    assert stderr.startswith(
        'error: rank 1 showed no sign of life for 2 s (the process is stopped, frozen or '
        'dead); rank 0 ends the job so that the launcher stops the other ranks.'
    )
    assert 'raise dist_params.timeout' in stderr and 'Traceback' not in stderr


def test_a_stalled_rank_0_hosting_the_store_ends_the_job_naming_the_store(tmp_path):
    """Under --launcher slurm rank 0 hosts the rendezvous store: the other ranks' store calls hang."""
    timeout = 4.0
    stalled, healthy = start_ranks(tmp_path, SCRIPT, str(timeout), '0', 'SIGSTOP')
    try:
        assert stalled.stdout.readline() == 'stopping\n'
        stopped_at = time.monotonic()
        _, stderr = healthy.communicate(timeout=30)
        ended_after = time.monotonic() - stopped_at
    finally:
        for process in (healthy, stalled):
            process.kill()
            process.communicate()
    assert healthy.returncode == 2, stderr
    assert ended_after < timeout + 2
    assert stderr.startswith('error: the rendezvous store at 127.0.0.1:')
    assert (
        '(hosted by rank 0, or by the launcher under torchrun) did not answer within 2 s; rank 1 ends the job' in stderr
    )
    assert 'Traceback' not in stderr


def test_a_dead_rank_is_named_instead_of_the_collective_traceback(tmp_path):
    """gloo fails the healthy rank's all-reduce at once (connection reset); the watchdog names the silent rank."""
    timeout = 20.0  # the silence limit is not reached: the collective's error comes first
    healthy, dead = start_ranks(tmp_path, SCRIPT, str(timeout), '1', 'SIGKILL')
    try:
        _, stderr = healthy.communicate(timeout=30)
    finally:
        for process in (healthy, dead):
            process.kill()
            process.communicate()
    assert healthy.returncode == 2, stderr
    assert stderr.startswith(
        'error: rank 1 stopped answering (it died, or is stopped or frozen) and a collective failed (RuntimeError: '
    )
    assert stderr.endswith(
        '); rank 0 ends the job so that the launcher stops the other ranks. Look at the log and '
        'the node of that rank.\n'
    )
    assert 'Traceback' not in stderr


def test_watchdog_in_a_single_process_does_nothing():
    with dist_util.RankWatchdog(silence_s=1.0, interval_s=0.1) as watchdog:
        assert not watchdog._thread.is_alive()


def test_watchdog_needs_a_silence_longer_than_its_beat():
    with pytest.raises(ValueError, match='silence_s > interval_s'):
        dist_util.RankWatchdog(silence_s=1.0, interval_s=1.0)


def test_per_rank_parts_of_another_world_size_are_refused(monkeypatch):
    assert gather_from_ranks('state') == ['state']
    assert this_rank_part(['state'], 'random-number states', 'exp/8.state') == 'state'
    monkeypatch.setattr(dist_util, 'get_dist_info', lambda: (1, 4))
    with pytest.raises(InvalidInputError) as info:
        this_rank_part(['a', 'b'], 'random-number states', 'exp/8.state')
    assert str(info.value) == (
        "'exp/8.state' holds the random-number states of 2 processes but this run has 4; an exact resume needs the "
        'same number of processes: start it with 2 (e.g. torchrun --nproc_per_node=2), or start a new run from its '
        'weights with path.pretrain_network_g'
    )


def test_broadcast_seed_without_a_process_group_keeps_the_seed():
    assert dist_util.broadcast_seed(1234) == 1234


@pytest.mark.parametrize('environ', [{}, {'WORLD_SIZE': '1'}, {'WORLD_SIZE': ''}])
def test_a_single_process_launch_passes_the_launcher_check(environ):
    check_launcher('none', environ)


def test_torchrun_without_launcher_pytorch_is_refused_with_the_fix():
    check_launcher('pytorch', {'WORLD_SIZE': '2'})
    with pytest.raises(InvalidInputError) as info:
        check_launcher('none', {'WORLD_SIZE': '2'})
    assert str(info.value) == (
        'the environment says WORLD_SIZE=2 (started by torchrun or torch.distributed.launch) but the program runs '
        'with --launcher none, so every process would train on its own into the same experiment folder; add '
        '--launcher pytorch to the command line (or start a single process without torchrun)'
    )


def test_init_dist_rejects_a_timeout_that_is_not_positive():
    with pytest.raises(InvalidInputError, match='dist_params.timeout must be a positive number of seconds, got 0'):
        init_dist('pytorch', backend='gloo', timeout_s=0)


def test_the_stop_signals_are_sigint_sigterm_and_sigusr1():
    from basicsr.engine.signals import EXIT_CODES

    assert set(EXIT_CODES) == {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (NCCL)')
def test_broadcast_seed_under_nccl_sends_a_cuda_tensor(tmp_path):
    script = tmp_path / 'nccl.py'
    script.write_text(
        textwrap.dedent("""
        from basicsr.utils.dist_util import broadcast_seed, destroy_dist, init_dist
        print(init_dist('pytorch', backend='nccl', timeout_s=60), broadcast_seed(1234))
        destroy_dist()
        """)
    )
    env = {
        **os.environ,
        'RANK': '0',
        'LOCAL_RANK': '0',
        'WORLD_SIZE': '1',
        'MASTER_ADDR': '127.0.0.1',
        'MASTER_PORT': str(free_port()),
        'PYTHONPATH': os.pathsep.join([os.getcwd(), os.environ.get('PYTHONPATH', '')]),
    }
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout == 'nccl 1234\n', result.stderr


def test_the_run_seed_comes_from_the_state_then_the_options_then_a_draw():
    assert dist_util.choose_run_seed(None, resumed_seed=17) == 17
    assert dist_util.choose_run_seed(17, resumed_seed=17) == 17
    assert dist_util.choose_run_seed(0) == 0  # 0 is a seed
    assert 1 <= dist_util.choose_run_seed(None) <= 10000


def test_a_changed_seed_on_resume_is_named():
    with pytest.raises(InvalidInputError) as info:
        dist_util.choose_run_seed(5, resumed_seed=17, source='exp/training_states/8.state')
    assert str(info.value) == (
        "manual_seed is 5 in the option file but 'exp/training_states/8.state' was trained with seed 17; set "
        'manual_seed: 17 (or ~) to continue it exactly, or start a new run from its weights with '
        'path.pretrain_network_g'
    )
