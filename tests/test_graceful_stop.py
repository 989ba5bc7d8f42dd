"""GracefulStop: real signals end a running loop after its iteration, with a saved state and the exit status."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from basicsr.data import _ignore_stop_signals
from basicsr.engine.signals import EXIT_CODES, GracefulStop

LOOP = textwrap.dedent("""
    import functools, sys, time
    import torch
    from torch.utils.data import DataLoader
    from basicsr.data import worker_init_fn
    from basicsr.engine.signals import GracefulStop

    state_path, workers = sys.argv[1], int(sys.argv[2])
    loader = DataLoader(torch.arange(10**6), batch_size=4, num_workers=workers, persistent_workers=workers > 0,
                        worker_init_fn=functools.partial(worker_init_fn, num_workers=workers, rank=0, seed=0))
    weight = torch.zeros(4)
    with GracefulStop() as stop:
        for iteration, batch in enumerate(loader, 1):
            weight += batch.float()  # the "update": a stop must never cut one in half
            if iteration == 3:
                print('running', flush=True)
            time.sleep(0.01)
            if stop.should_stop():
                torch.save({'iter': iteration, 'weight': weight}, state_path)
                print(stop.describe(iteration), flush=True)
                raise SystemExit(stop.exit_code)
    """)


def run_until_signalled(tmp_path, signum, workers=0, process_group=False):
    """Start the loop, send ``signum`` once it runs (to its whole process group, as a terminal or SLURM does, when
    ``process_group``), and return (exit status, stdout, stderr, saved state)."""
    import torch

    script = tmp_path / 'loop.py'
    script.write_text(LOOP)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(os.getcwd()), os.environ.get('PYTHONPATH', '')])}
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / 'state.pt'), str(workers)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout.readline() == 'running\n'
        if process_group:
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    state = torch.load(tmp_path / 'state.pt', weights_only=True) if (tmp_path / 'state.pt').exists() else None
    return process.returncode, stdout, stderr, state


def assert_complete_updates(state):
    """The saved weight is the sum of exactly the first ``iter`` batches: no half-done or extra update."""
    import torch

    batches = torch.arange(state['iter'] * 4).float().reshape(-1, 4)
    assert torch.equal(state['weight'], batches.sum(0))


def test_sigterm_stops_the_loop_after_its_iteration_with_a_saved_state(tmp_path):
    signum = signal.SIGTERM
    returncode, stdout, stderr, state = run_until_signalled(tmp_path, signum)
    assert returncode == 143, stderr
    assert 'Traceback' not in stderr and stderr == ''
    assert state is not None and state['iter'] >= 3
    assert_complete_updates(state)
    assert stdout.endswith(
        f'{signal.Signals(signum).name} received: stopped after iteration {state["iter"]}; resume with --auto_resume\n'
    )


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_process_group_spares_the_loader_workers(tmp_path, signum):
    returncode, stdout, stderr, state = run_until_signalled(tmp_path, signum, workers=1, process_group=True)
    assert returncode == EXIT_CODES[signum], stderr
    assert 'Traceback' not in stderr
    assert_complete_updates(state)
    assert stdout.endswith(
        f'{signal.Signals(signum).name} received: stopped after iteration {state["iter"]}; resume with --auto_resume\n'
    )


def _shielded_sleep():
    _ignore_stop_signals()
    time.sleep(30)


def test_a_shielded_worker_ends_on_sigterm_from_its_parent_only():
    worker = multiprocessing.get_context('fork').Process(target=_shielded_sleep, daemon=True)
    worker.start()
    try:
        time.sleep(0.3)  # let it install the shield
        for signum in (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM):  # SIGTERM sent by another process
            subprocess.run(['kill', f'-{signal.Signals(signum).name[3:]}', str(worker.pid)], check=True)
        time.sleep(0.3)
        assert worker.is_alive()
        worker.terminate()  # SIGTERM from the parent, as the DataLoader ends a stuck worker
        worker.join(5)
        assert worker.exitcode == 0
    finally:
        if worker.is_alive():
            worker.kill()


def test_handlers_only_flag_and_are_put_back_on_exit():
    previous = {signum: signal.getsignal(signum) for signum in EXIT_CODES}
    with GracefulStop() as stop:
        assert not stop.should_stop()
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # the first signal decides the exit status
        assert stop.requested and stop.should_stop() and stop.exit_code == 143
        assert stop.signum == signal.SIGUSR1
    assert {signum: signal.getsignal(signum) for signum in EXIT_CODES} == previous


def test_a_second_ctrl_c_gives_up_on_saving():
    with pytest.raises(KeyboardInterrupt), GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.should_stop() and stop.exit_code == 130
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_exit_code_without_a_signal_is_an_error():
    with GracefulStop() as stop, pytest.raises(RuntimeError, match='no stop signal was received'):
        stop.exit_code  # noqa: B018
