"""Issue 9 on the engine, with tiny CPU runs of train.py: exact resume after SIGINT / SIGKILL / SIGTERM
(bit-identical weights), SIGUSR1 and a second Ctrl-C, the finished-run check, corrupt states, write errors,
keep_checkpoints, resume compatibility, the NaN guard, run folders, and a stalled rank under a 2-process gloo run."""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_engine import free_port, write_sequence

from basicsr.models.base_model import NonFiniteWeightsError
from basicsr.models.image_event_restoration_model import ImageEventRestorationModel
from basicsr.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = str(ROOT / 'basicsr/train.py')
ITER_LINE = re.compile(r'iter:\s+(\d+),')


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('data')
    for split, seqs in (('train', ('seq_a', 'seq_b')), ('val', ('seq_c',))):
        for k, seq in enumerate(seqs):
            write_sequence(root / split / f'{seq}.h5', num_items=3, height=36, width=40, seed=k)
    return root


def options(data: Path, workdir: Path, name: str = 'run', total_iter: int = 8, workers: int = 0, **train) -> dict:
    dataset = {
        'type': 'H5ImageDataset',
        'norm_voxel': True,
        'return_voxel': True,
        'return_mask': True,
        'use_mask': True,
    }
    return {
        'name': name,
        'model_type': 'ImageEventRestorationModel',
        'num_gpu': 0,
        'manual_seed': 10,
        'datasets': {
            'train': {
                **dataset,
                'name': 'train',
                'dataroot': str(data / 'train'),
                'crop_size': 32,
                'use_flip': True,
                'batch_size_per_gpu': 2,
                'num_worker_per_gpu': workers,
            },
            'val': {**dataset, 'name': 'val', 'dataroot': str(data / 'val'), 'crop_size': None, 'use_flip': False},
        },
        'network_g': {'type': 'EFNet', 'wf': 8},
        'path': {'root': str(workdir)},
        'train': {
            'optim_g': {'type': 'AdamW', 'lr': 1e-3},
            'scheduler': {'type': 'TrueCosineAnnealingLR', 'T_max': 32, 'eta_min': 1e-6},
            'total_iter': total_iter,
            'pixel_opt': {'type': 'PSNRLoss', 'loss_weight': 0.5},
            'ema_decay': 0.9,
            **train,
        },
        'val': {'val_freq': 8, 'pbar': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 4, 'use_tb_logger': False},
    }


def write_yaml(path: Path, opt: dict) -> Path:
    path.write_text(yaml.safe_dump(opt))
    return path


def environment(**extra: str) -> dict:
    return {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', **extra}


class Logs(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return '\n'.join(self.lines)


@pytest.fixture
def train(capsys):
    """Run train.py's main in this process: (exit status, logged text, stderr)."""

    def run(opt_file: Path, *args: str) -> tuple[int, str, str]:
        logs = Logs()
        logging.getLogger('basicsr').addHandler(logs)
        try:
            with pytest.raises(SystemExit) as exit_info:
                train_main(['-opt', str(opt_file), *args])
        finally:
            logging.getLogger('basicsr').removeHandler(logs)
        return exit_info.value.code, logs.text, capsys.readouterr().err

    return run


def weights(path: Path) -> dict:
    checkpoint = torch.load(path, weights_only=True)
    return {f'{key}.{name}': value for key in ('params', 'params_ema') for name, value in checkpoint[key].items()}


def assert_bit_identical(path: Path, reference: dict) -> None:
    resumed = weights(path)
    assert resumed.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(resumed[name], value), name


# ---------------------------------------------------------------------------------------------------- exact resume
def run_until(args: list[str], cwd: Path, stop_at: int, how: signal.Signals) -> tuple[int, str]:
    """Start train.py, send ``how`` once it logged iteration ``stop_at``; (exit status, stderr)."""
    process = subprocess.Popen(
        [sys.executable, TRAIN_PY, *args],
        cwd=cwd,
        env=environment(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines = []
    for line in process.stderr:
        lines.append(line)
        match = ITER_LINE.search(line)
        if match and int(match[1]) >= stop_at:
            process.send_signal(how)
            break
    rest = process.communicate(timeout=120)[1]
    return process.returncode, ''.join(lines) + rest


def test_stopped_killed_and_resumed_runs_end_bit_identical_to_an_uninterrupted_run(data, tmp_path):
    """SIGINT, SIGKILL (after a checkpoint) and SIGTERM at random iterations, each resumed with --auto_resume:
    net_g_latest.pth (params and params_ema) equals the uninterrupted run's bit for bit."""
    total = 16
    whole = write_yaml(tmp_path / 'whole.yml', options(data, tmp_path, 'whole', total, workers=1))
    uninterrupted = subprocess.Popen(
        [sys.executable, TRAIN_PY, '-opt', str(whole)],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    opt_file = write_yaml(tmp_path / 'parts.yml', options(data, tmp_path, 'parts', total, workers=1))
    rng = random.Random()
    k1 = rng.randint(2, 4)
    k2 = k1 + rng.randint(5, 6)  # a checkpoint (every 4 iterations) lies between k1 and k2
    k3 = k2 + rng.randint(1, 3)
    resume = ['-opt', str(opt_file), '--auto_resume']
    for stop_at, how, status in ((k1, signal.SIGINT, 130), (k2, signal.SIGKILL, -9), (k3, signal.SIGTERM, 143)):
        code, log = run_until(resume, tmp_path, stop_at, how)
        assert code == status, f'{how.name} at {stop_at}: {log[-3000:]}'
        assert 'Traceback' not in log
        if how != signal.SIGKILL:
            stopped = int(
                re.search(rf'{how.name} received: stopped after iteration (\d+); resume with --auto_resume', log)[1]
            )
            assert (tmp_path / f'experiments/parts/training_states/{stopped}.state').is_file()
    last = subprocess.run(
        [sys.executable, TRAIN_PY, *resume],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert last.returncode == 0, last.stderr[-3000:]
    assert 'Resuming training from epoch' in last.stderr
    assert (tmp_path / f'experiments/parts/training_states/{total}.state').is_file()  # the final state
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()[-3000:]
    reference = weights(tmp_path / 'experiments/whole/models/net_g_latest.pth')
    assert_bit_identical(tmp_path / 'experiments/parts/models/net_g_latest.pth', reference)


def signal_at(monkeypatch, iteration: int, *signals: signal.Signals) -> None:
    """Send ``signals`` to this process during the training step of ``iteration``."""
    step = ImageEventRestorationModel.optimize_parameters

    def optimize_parameters(self, current_iter):
        updated = step(self, current_iter)
        if current_iter == iteration:
            for signum in signals:
                os.kill(os.getpid(), signum)
        return updated

    monkeypatch.setattr(ImageEventRestorationModel, 'optimize_parameters', optimize_parameters)


def test_sigusr1_finishes_the_iteration_saves_and_exits_143(data, tmp_path, train, monkeypatch):
    opt_file = write_yaml(tmp_path / 'run.yml', options(data, tmp_path, total_iter=6))
    signal_at(monkeypatch, 3, signal.SIGUSR1)
    code, log, err = train(opt_file)
    assert code == 143 and 'Traceback' not in err
    assert 'SIGUSR1 received: stopped after iteration 3; resume with --auto_resume' in log
    assert torch.load(tmp_path / 'experiments/run/training_states/3.state', weights_only=True)['iter'] == 3
    assert (tmp_path / 'experiments/run/models/net_g_3.pth').is_file()
    monkeypatch.undo()
    code, log, _ = train(opt_file, '--auto_resume')
    assert code == 0 and 'Start training from epoch 0, iteration 4.' in log  # epoch 0 ran out at 3


def test_a_second_ctrl_c_stops_at_once_without_saving(data, tmp_path, train, monkeypatch):
    signal_at(monkeypatch, 3, signal.SIGINT, signal.SIGINT)
    code, _, err = train(write_yaml(tmp_path / 'run.yml', options(data, tmp_path, total_iter=6)))
    assert code == 130 and err.strip() == 'interrupted (Ctrl-C)'
    assert not list((tmp_path / 'experiments/run/training_states').iterdir())


# ---------------------------------------------------------------------------------------------------- in-process runs
def test_a_finished_run_is_left_alone_and_a_larger_total_iter_continues_it(data, tmp_path, train):
    opt = options(data, tmp_path, total_iter=6)
    opt_file = write_yaml(tmp_path / 'run.yml', opt)
    assert train(opt_file)[0] == 0
    models = tmp_path / 'experiments/run/models'
    assert (tmp_path / 'experiments/run/training_states/6.state').is_file()  # final state, beside the one at 4
    latest = (models / 'net_g_latest.pth').read_bytes()
    mtime = (models / 'net_g_latest.pth').stat().st_mtime_ns

    code, log, _ = train(opt_file, '--auto_resume')
    assert code == 0
    assert re.search(
        r"Training 'run' has already finished: its training state '.*6\.state' is at iteration 6 and "
        r'train\.total_iter is 6; nothing to do \(raise train\.total_iter to continue it\)',
        log,
    )
    assert (models / 'net_g_latest.pth').read_bytes() == latest
    assert (models / 'net_g_latest.pth').stat().st_mtime_ns == mtime

    code, log, _ = train(opt_file, '--auto_resume', '--force_yml', 'train:total_iter=9')
    assert code == 0, log
    assert 'Resuming training from epoch' in log and 'iteration 6' in log
    assert (models / 'net_g_9.pth').is_file()
    assert torch.load(tmp_path / 'experiments/run/training_states/9.state', weights_only=True)['iter'] == 9


def test_a_corrupt_newest_state_or_its_unreadable_weights_fall_back_to_the_previous_state(data, tmp_path, train):
    opt_file = write_yaml(tmp_path / 'run.yml', options(data, tmp_path, total_iter=12))
    assert train(opt_file)[0] == 0
    states, models = tmp_path / 'experiments/run/training_states', tmp_path / 'experiments/run/models'
    (states / '12.state').write_bytes((states / '12.state').read_bytes()[:200])  # a kill during the write
    (models / 'net_g_8.pth').write_bytes(b'')  # the weights of the previous state are gone
    (models / '.net_g_4.pth.tmp-999999-abcdef01').write_bytes(b'half')  # left by an interrupted write
    code, log, err = train(opt_file, '--auto_resume', '--force_yml', 'train:total_iter=14')
    assert code == 0, err
    assert re.search(r"Skipping training state 12\.state: Training state file '.*12\.state'", log)
    assert re.search(r"Skipping training state '.*8\.state': its weights '.*net_g_8\.pth' cannot be read", log)
    assert 'Resuming training from epoch' in log and 'iteration 4 (' in log
    assert not list(models.glob('.*tmp*'))
    assert re.search(r"Removed '.*\.net_g_4\.pth\.tmp-999999-abcdef01', left behind by an interrupted write", log)

    for name in ('4.state', '8.state', '12.state', '14.state'):
        (states / name).write_bytes(b'garbage')
    code, _, err = train(opt_file, '--auto_resume', '--force_yml', 'train:total_iter=16')
    assert code == 2
    assert re.search(
        r"error: None of the training states in '.*training_states' can be resumed from "
        r'\(14\.state, 12\.state, 8\.state, 4\.state',
        err,
    )


def test_a_missing_resume_state_is_named(data, tmp_path, train):
    opt = options(data, tmp_path)
    opt['path']['resume_state'] = str(tmp_path / 'nope.state')
    code, _, err = train(write_yaml(tmp_path / 'run.yml', opt))
    assert code == 2 and f"error: path.resume_state '{tmp_path / 'nope.state'}' does not exist" in err
    assert not (tmp_path / 'experiments').exists()


def test_a_full_disk_ends_the_run_naming_the_path_and_keeps_the_previous_checkpoints(
    data, tmp_path, train, monkeypatch
):
    opt_file = write_yaml(tmp_path / 'run.yml', options(data, tmp_path, total_iter=8))
    save = torch.save

    def full_disk(obj, path, *args, **kwargs):
        if '8.state' in str(path):
            with open(path, 'wb') as handle:
                handle.write(b'partial')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', full_disk)
    code, _, err = train(opt_file)
    states = tmp_path / 'experiments/run/training_states'
    assert code == 2
    assert re.search(
        r"error: cannot write '.*training_states/8\.state': No space left on device \[ENOSPC\] "
        r'\([\d,]+ bytes free on its disk\); the previous file of that name, if any, is intact',
        err,
    )
    assert 'Traceback' not in err
    assert sorted(p.name for p in states.iterdir()) == ['4.state']
    assert torch.load(states / '4.state', weights_only=True)['iter'] == 4


def test_keep_checkpoints_keeps_the_newest_and_the_state_resumed_from(data, tmp_path, train):
    opt = options(data, tmp_path, total_iter=8)
    opt['logger'].update(save_checkpoint_freq=2, keep_checkpoints=2)
    opt_file = write_yaml(tmp_path / 'run.yml', opt)
    code, log, _ = train(opt_file)
    assert code == 0
    exp = tmp_path / 'experiments/run'
    assert sorted(p.name for p in (exp / 'training_states').iterdir()) == ['6.state', '8.state']
    assert sorted(p.name for p in (exp / 'models').iterdir()) == ['net_g_6.pth', 'net_g_8.pth', 'net_g_latest.pth']
    assert 'Removed the checkpoint of iteration 2 (logger.keep_checkpoints: 2).' in log

    opt['logger']['keep_checkpoints'] = 1
    opt['path']['resume_state'] = str(exp / 'training_states/6.state')
    opt['train']['total_iter'] = 12
    assert train(write_yaml(tmp_path / 'run.yml', opt))[0] == 0
    assert sorted(p.name for p in (exp / 'training_states').iterdir()) == ['12.state', '6.state']


def test_resuming_with_the_experiment_folders_copy_of_the_option_file(data, tmp_path, train):
    opt_file = write_yaml(tmp_path / 'run.yml', options(data, tmp_path, total_iter=4))
    assert train(opt_file)[0] == 0
    copy_file = tmp_path / 'experiments/run/run.yml'
    text = copy_file.read_text()
    code, log, err = train(copy_file, '--auto_resume', '--force_yml', 'train:total_iter=6')
    assert code == 0, err
    assert 'Resuming training from epoch' in log
    assert copy_file.read_text() == text


@pytest.mark.parametrize(
    ('override', 'expected'),
    [
        ('network_g:wf=16', 'network_g.wf: 8 in the state, 16 in the option file'),
        ('train:optim_g={type: SGD, lr: 0.001}', 'train.optim_g.type: AdamW in the state, SGD in the option file'),
        (
            'datasets:train:batch_size_per_gpu=3',
            'datasets.train.batch_size_per_gpu: 2 in the state, 3 in the option file',
        ),
    ],
)
def test_a_changed_network_optimizer_or_batch_layout_is_named(data, tmp_path, train, override, expected):
    opt_file = write_yaml(tmp_path / 'run.yml', options(data, tmp_path, total_iter=4))
    assert train(opt_file)[0] == 0
    models = sorted(p.name for p in (tmp_path / 'experiments/run/models').iterdir())
    code, _, err = train(opt_file, '--auto_resume', '--force_yml', 'train:total_iter=6', override)
    assert code == 2 and 'Traceback' not in err
    assert re.search(r"error: Training state '.*4\.state' cannot be continued with these options: " + expected, err)
    assert 'Resume with the option file it was trained with' in err
    assert sorted(p.name for p in (tmp_path / 'experiments/run/models').iterdir()) == models


def test_a_changed_scheduler_continues_as_if_used_from_the_start(data, tmp_path, train):
    opt_file = write_yaml(tmp_path / 'run.yml', options(data, tmp_path, total_iter=4))
    assert train(opt_file)[0] == 0
    code, log, _ = train(opt_file, '--auto_resume', '--force_yml', 'train:total_iter=6', 'train:scheduler:T_max=10')
    assert code == 0
    assert (
        'train.scheduler changed' in log and 'continues from iteration 4 as if it had been used from the start' in log
    )
    state = torch.load(tmp_path / 'experiments/run/training_states/6.state', weights_only=True)
    # during iteration k: lr = eta_min + (lr0 - eta_min) (1 + cos(pi (k - 1) / T_max)) / 2, with the new T_max
    expected = 1e-6 + (1e-3 - 1e-6) * (1 + np.cos(np.pi * 5 / 10)) / 2
    assert state['optimizers'][0]['param_groups'][0]['lr'] == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------------- NaN guard
def poison(monkeypatch, iterations: set[int] | None) -> None:
    """Make the ground truth NaN in the given iterations (None: in all)."""
    feed = ImageEventRestorationModel.feed_data
    calls = {'n': 0}

    def feed_data(self, batch):
        feed(self, batch)
        if self.net_g.training:
            calls['n'] += 1
            if iterations is None or calls['n'] in iterations:
                self.frame_gt = self.frame_gt * float('nan')

    monkeypatch.setattr(ImageEventRestorationModel, 'feed_data', feed_data)


@pytest.mark.filterwarnings('ignore:Detected call of .lr_scheduler.step:UserWarning')
def test_a_non_finite_loss_skips_the_update_and_logs_the_batch(data, tmp_path, train, monkeypatch):
    opt = options(data, tmp_path, total_iter=6)
    opt['logger']['save_checkpoint_freq'] = 2
    poison(monkeypatch, {3, 4})
    code, log, _ = train(write_yaml(tmp_path / 'run.yml', opt))
    assert code == 0
    for iteration, count in ((3, 1), (4, 2)):
        assert re.search(
            rf'Iteration {iteration}: non-finite loss or gradient \(l_pix nan, grad_norm nan\); the '
            rf'update is skipped \({count} in a row of at most 10\)\. Batch items \(sequence/index\): '
            r'seq_[ab]/\d, seq_[ab]/\d\.',
            log,
        ), log
    models = tmp_path / 'experiments/run/models'
    before, after = weights(models / 'net_g_2.pth'), weights(models / 'net_g_4.pth')
    assert all(torch.equal(before[name], after[name]) for name in before)  # no step, no EMA update
    assert not all(torch.equal(before[name], value) for name, value in weights(models / 'net_g_6.pth').items())


@pytest.mark.filterwarnings('ignore:Detected call of .lr_scheduler.step:UserWarning')
def test_consecutive_non_finite_steps_stop_the_run_naming_suspects(data, tmp_path, train, monkeypatch):
    opt = options(data, tmp_path, total_iter=8, max_nonfinite_steps=3)
    poison(monkeypatch, None)
    code, _, err = train(write_yaml(tmp_path / 'run.yml', opt))
    assert code == 2 and 'Traceback' not in err
    assert re.search(
        r'error: Training stopped at iteration 3: the loss or the gradient was NaN or inf in 3 '
        r'consecutive iterations \(train\.max_nonfinite_steps: 3\), so every update was skipped\. '
        r'Suspects: the learning rate \([\d.e-]+; lower train\.optim_g\.lr\), or the data of the logged '
        r'batches \(the last: seq_[ab]/\d, seq_[ab]/\d;',
        err,
    )


def test_non_finite_weights_are_never_saved(data, tmp_path):
    from basicsr.engine.cli import parse_options
    from basicsr.engine.training import Trainer

    trainer = Trainer(*parse_options(True, ['-opt', str(write_yaml(tmp_path / 'run.yml', options(data, tmp_path)))]))
    try:
        assert trainer.setup()
        with torch.no_grad():
            next(trainer.model.net_g.parameters())[0].fill_(float('inf'))
        with pytest.raises(NonFiniteWeightsError, match=r"Not saving net_g_0\.pth: params '.*' holds NaN or inf"):
            trainer.save_checkpoint()
    finally:
        trainer.close()
    assert not list((tmp_path / 'experiments/run/models').iterdir())


# ---------------------------------------------------------------------------------------------------- run folders
def test_a_failed_start_leaves_no_folders_and_keeps_the_old_run(data, tmp_path, train):
    opt = options(data, tmp_path)
    opt['network_g']['ev_chn'] = 4  # the data has 6 voxel channels
    (tmp_path / 'experiments/run').mkdir(parents=True)
    code, _, err = train(write_yaml(tmp_path / 'run.yml', opt))
    assert code == 2 and 'network_g.ev_chn is 4' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['experiments', 'run.yml']
    assert [p.name for p in (tmp_path / 'experiments').iterdir()] == ['run']


def test_a_new_run_archives_the_experiment_and_its_tensorboard_folder_and_goes_on_without_wandb(data, tmp_path, train):
    opt = options(data, tmp_path, total_iter=2)
    opt['logger'].update(use_tb_logger=True, wandb={'project': 'efnet'})
    opt_file = write_yaml(tmp_path / 'run.yml', opt)
    code, log, _ = train(opt_file)
    assert code == 0
    assert 'Archived' not in log
    assert 'logger.wandb.project is set but the wandb package is not installed' in log
    assert 'going on with TensorBoard only' in log
    assert list((tmp_path / 'tb_logger/run').glob('events.out.tfevents.*'))
    code, log, _ = train(opt_file)
    assert code == 0
    assert re.search(r"Archived the previous run's folder '.*experiments/run' as 'run_archived_\d{8}_\d{6}'\.", log)
    assert re.search(r"Archived the previous run's folder '.*tb_logger/run' as 'run_archived_\d{8}_\d{6}'\.", log)
    experiments = [p.name for p in (tmp_path / 'experiments').glob('run_archived_*')]
    boards = [p.name for p in (tmp_path / 'tb_logger').glob('run_archived_*')]
    assert len(experiments) == 1 and experiments == boards  # the same suffix


# ---------------------------------------------------------------------------------------------------- distributed
def test_torchrun_without_launcher_pytorch_is_an_error(data, tmp_path, train, monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')
    code, _, err = train(write_yaml(tmp_path / 'run.yml', options(data, tmp_path)))
    assert code == 2 and 'WORLD_SIZE=2' in err and 'add --launcher pytorch' in err
    assert not (tmp_path / 'experiments').exists()


def test_a_stalled_rank_ends_a_two_process_training_naming_it(data, tmp_path):
    opt = options(data, tmp_path, 'dist', total_iter=100000)
    opt['dist_params'] = {'backend': 'gloo', 'timeout': 4}
    opt['val']['val_freq'] = 100000
    opt_file = write_yaml(tmp_path / 'dist.yml', opt)
    port = str(free_port())
    processes = []
    for rank in range(2):
        env = environment(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT=port
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, TRAIN_PY, '-opt', str(opt_file), '--launcher', 'pytorch'],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    rank0, rank1 = processes
    try:
        lines = []
        for line in rank0.stderr:
            lines.append(line)
            match = ITER_LINE.search(line)
            if match and int(match[1]) >= 3:
                break
        os.kill(rank1.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        rest = rank0.communicate(timeout=60)[1]
        elapsed = time.monotonic() - stopped
    finally:
        for process in processes:
            process.kill()
            process.wait()
    log = ''.join(lines) + rest
    assert 'Distributed: backend gloo, 2 processes, timeout 4.0 s' in log
    assert rank0.returncode == 2, log[-3000:]
    assert elapsed < 4 + 2, elapsed
    assert re.search(r'rank 1 showed no sign of life for [\d.]+ s', log), log[-3000:]
    assert 'Traceback' not in log


@pytest.mark.parametrize(
    ('override', 'key'),
    [
        ('logger:keep_checkpoints=0', 'logger.keep_checkpoints'),
        ('dist_params:timeout=0', 'dist_params.timeout'),
        ('train:max_nonfinite_steps=0', 'train.max_nonfinite_steps'),
    ],
)
def test_the_new_option_keys_are_checked(data, tmp_path, train, override, key):
    code, _, err = train(write_yaml(tmp_path / 'run.yml', options(data, tmp_path)), '--force_yml', override)
    assert code == 2 and key in err and 'must be > 0, got 0' in err


def test_a_state_from_an_older_version_resumes_with_a_warning(data, tmp_path, train):
    opt_file = write_yaml(tmp_path / 'run.yml', options(data, tmp_path, total_iter=4))
    assert train(opt_file)[0] == 0
    path = tmp_path / 'experiments/run/training_states/4.state'
    state = torch.load(path, weights_only=True)
    torch.save({key: state[key] for key in ('epoch', 'iter', 'optimizers', 'schedulers', 'scaler')}, path)
    code, log, _ = train(opt_file, '--auto_resume', '--force_yml', 'train:total_iter=6')
    assert code == 0
    assert re.search(
        r"Training state '.*4\.state' was written by an older version \(no run signature, seed or "
        r'random-number states\): the network and optimizer are not checked and the resume is not '
        r'exact\.',
        log,
    )


def test_a_failed_test_start_leaves_no_results_folder(data, tmp_path, capsys):
    from basicsr.test import main as test_main

    opt = options(data, tmp_path)
    opt['network_g']['ev_chn'] = 4
    opt['datasets'] = {'test': opt['datasets']['val']}
    del opt['train']
    with pytest.raises(SystemExit) as exit_info:
        test_main(['-opt', str(write_yaml(tmp_path / 'test.yml', opt))])
    assert exit_info.value.code == 2 and 'network_g.ev_chn is 4' in capsys.readouterr().err
    assert not (tmp_path / 'results').exists()
