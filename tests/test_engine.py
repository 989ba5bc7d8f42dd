"""End-to-end tests of train.py and test.py on a tiny configuration (CPU, seconds each)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from basicsr.data.h5_layout import TrainingH5Writer

ROOT = Path(__file__).resolve().parents[1]


def write_sequence(path: Path, num_items: int, height: int, width: int, seed: int) -> None:
    """A small training HDF5 file: sharp = smooth random image, blurry = sharp + noise."""
    rng = np.random.default_rng(seed)
    with TrainingH5Writer(path) as writer:
        for _ in range(num_items):
            sharp = rng.integers(0, 256, size=(3, height, width), dtype=np.uint8)
            blurry = np.clip(sharp.astype(np.int16) + rng.integers(-20, 21, sharp.shape), 0, 255).astype(np.uint8)
            voxel = rng.normal(size=(6, height, width)).astype(np.float32) * (rng.random((6, height, width)) < 0.3)
            mask = ((np.abs(voxel).sum(0, keepdims=True) > 0) * 255).astype(np.uint8)
            writer.add(blurry, voxel=voxel, mask=mask, sharp=sharp)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('data')
    for split, seqs in (('train', ('seq_a', 'seq_b')), ('test', ('seq_c', 'seq_d'))):
        for k, seq in enumerate(seqs):
            write_sequence(root / split / f'{seq}.h5', num_items=3, height=30, width=38, seed=k)
    return root


def tiny_options(data: Path, workdir: Path, name: str = 'tiny', total_iter: int = 4) -> dict:
    dataset = {
        'type': 'H5ImageDataset',
        'norm_voxel': True,
        'return_voxel': True,
        'return_mask': True,
        'use_mask': True,
        'use_flip': False,
    }
    return {
        'name': name,
        'model_type': 'ImageEventRestorationModel',
        'num_gpu': 0,
        'manual_seed': 3,
        'datasets': {
            'train': {
                **dataset,
                'name': 'tiny-train',
                'dataroot': str(data / 'train'),
                'crop_size': 16,
                'use_flip': True,
                'batch_size_per_gpu': 2,
                'num_worker_per_gpu': 0,
            },
            'val': {**dataset, 'name': 'tiny-val', 'dataroot': str(data / 'test'), 'crop_size': None},
        },
        'network_g': {'type': 'EFNet', 'wf': 8},
        'path': {'root': str(workdir)},
        'train': {
            'optim_g': {'type': 'AdamW', 'lr': 1e-3},
            'scheduler': {'type': 'TrueCosineAnnealingLR', 'T_max': 8, 'eta_min': 1e-6},
            'total_iter': total_iter,
            'pixel_opt': {'type': 'PSNRLoss', 'loss_weight': 0.5},
        },
        'val': {
            'val_freq': 2,
            'save_img': True,
            'rgb2bgr': False,
            'pbar': False,
            'metrics': {
                'psnr': {'type': 'calculate_psnr', 'crop_border': 0},
                'ssim': {'type': 'calculate_ssim', 'crop_border': 0},
            },
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': True},
    }


def write_yaml(path: Path, options: dict) -> Path:
    path.write_text(yaml.safe_dump(options))
    return path


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    full_env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', **(env or {})}
    result = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f'command failed: {args}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}'
    )
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_train_checkpoints_validation_and_auto_resume(tiny_data, tmp_path):
    opt_file = write_yaml(tmp_path / 'tiny.yml', tiny_options(tiny_data, tmp_path))
    first = run([sys.executable, str(ROOT / 'basicsr/train.py'), '-opt', str(opt_file)], cwd=tmp_path)
    log = first.stderr
    exp = tmp_path / 'experiments' / 'tiny'
    for name in ('net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth'):
        checkpoint = torch.load(exp / 'models' / name, weights_only=True)
        assert set(checkpoint) >= {'params'}
        assert 'down_path_1.0.conv_1.weight' in checkpoint['params']
    assert (exp / 'training_states' / '4.state').is_file()
    assert (exp / 'tiny.yml').is_file()
    assert list((tmp_path / 'tb_logger' / 'tiny').glob('events.out.tfevents.*'))
    assert list(exp.glob('train_tiny_*.log'))
    assert re.search(
        r'\[tiny\.\.\]\[epoch:\s*\d+, iter:\s+4, lr:\([\d.e+-]+,\)\] \[eta: [\d:]+, time \(data\): '
        r'[\d.]+ \([\d.]+\)\] grad_norm: \S+ l_pix: -?[\d.e+-]+ l_pix_1: \S+ l_pix_2: \S+',
        log,
    ), log
    assert 'Validation tiny-val, iter 2' in log
    assert list((exp / 'visualization' / '2' / 'seq_c').glob('*.png'))

    resumed_opt = write_yaml(tmp_path / 'tiny.yml', tiny_options(tiny_data, tmp_path, total_iter=6))
    second = run(
        [sys.executable, str(ROOT / 'basicsr/train.py'), '-opt', str(resumed_opt), '--auto_resume'], cwd=tmp_path
    )
    assert 'Resuming training from epoch' in second.stderr and 'iteration 4' in second.stderr
    assert 'iter:       5' in second.stderr and 'iter:       3' not in second.stderr
    assert (exp / 'models' / 'net_g_6.pth').is_file()
    assert not list(tmp_path.glob('experiments/tiny_archived_*')), 'a resumed run must keep its folder'
    state = torch.load(exp / 'training_states' / '6.state', weights_only=True)
    assert state['iter'] == 6
    # TrueCosineAnnealingLR: lr_k = eta_min + (lr0 - eta_min) (1 + cos(pi (k - 1) / T_max)) / 2
    expected = 1e-6 + (1e-3 - 1e-6) * (1 + np.cos(np.pi * 5 / 8)) / 2
    assert state['optimizers'][0]['param_groups'][0]['lr'] == pytest.approx(expected, rel=1e-6)

    third = run([sys.executable, str(ROOT / 'basicsr/train.py'), '-opt', str(resumed_opt)], cwd=tmp_path)
    assert 'iter:       1' in third.stderr
    assert list(tmp_path.glob('experiments/tiny_archived_*')), 'a new run must archive the old folder'


@pytest.mark.parametrize('launcher', ['torch.distributed.launch', 'torchrun'])
def test_distributed_training_two_processes_gloo(tiny_data, tmp_path, launcher):
    options = tiny_options(tiny_data, tmp_path, name=f'dist_{launcher.split(".")[-1]}', total_iter=2)
    opt_file = write_yaml(tmp_path / 'dist.yml', options)
    prefix = (
        [sys.executable, '-m', 'torch.distributed.launch']
        if launcher != 'torchrun'
        else [sys.executable, '-m', 'torch.distributed.run']
    )
    result = run(
        prefix
        + [
            '--nproc_per_node=2',
            f'--master_port={free_port()}',
            str(ROOT / 'basicsr/train.py'),
            '-opt',
            str(opt_file),
            '--launcher',
            'pytorch',
        ],
        cwd=tmp_path,
    )
    log = result.stdout + result.stderr
    assert 'rank 0 of 2' in log
    assert 'Evaluated 6 images of tiny-val.' in log  # each rank took its share, none twice
    models = tmp_path / 'experiments' / options['name'] / 'models'
    assert (models / 'net_g_2.pth').is_file() and (models / 'net_g_latest.pth').is_file()
    # 6 validation images split over 2 ranks, gathered on rank 0: seq_c and seq_d, 3 items each
    assert len(list((tmp_path / 'experiments' / options['name'] / 'visualization' / '2').rglob('*.png'))) == 6 + 6


def test_test_py_writes_metrics_json(tiny_data, tmp_path):
    train_opt = write_yaml(tmp_path / 'train.yml', tiny_options(tiny_data, tmp_path, total_iter=2))
    run([sys.executable, str(ROOT / 'basicsr/train.py'), '-opt', str(train_opt)], cwd=tmp_path)
    test_options = tiny_options(tiny_data, tmp_path, name='tiny_test')
    test_options['model_type'] = 'TestImageEventRestorationModel'
    test_options['datasets'] = {'test': {**test_options['datasets']['val'], 'name': 'tiny-test'}}
    test_options['path']['pretrain_network_g'] = str(tmp_path / 'experiments/tiny/models/net_g_latest.pth')
    test_options['val']['metrics']['ssim_3d'] = {'type': 'calculate_ssim_3d', 'crop_border': 0}
    del test_options['train']
    test_opt = write_yaml(tmp_path / 'test.yml', test_options)
    result = run([sys.executable, str(ROOT / 'basicsr/test.py'), '-opt', str(test_opt)], cwd=tmp_path)
    metrics = json.loads((tmp_path / 'results' / 'tiny_test' / 'metrics.json').read_text())
    assert set(metrics) == {'tiny-test'}
    entry = metrics['tiny-test']
    assert set(entry) == {'output', 'input', 'per_sequence'}
    assert set(entry['output']) == set(entry['input']) == {'psnr', 'ssim', 'ssim_3d'}
    assert set(entry['per_sequence']) == {'seq_c', 'seq_d'}
    per_seq_psnr = [v['input']['psnr'] for v in entry['per_sequence'].values()]
    assert entry['input']['psnr'] == pytest.approx(np.mean(per_seq_psnr))  # equal-sized sequences
    assert 20 < entry['input']['psnr'] < 40  # blurry = sharp + uniform noise of +-20 grey levels
    images = sorted(p.name for p in (tmp_path / 'results/tiny_test/visualization/tiny-test/seq_c').glob('*.png'))
    assert images == ['0000.png', '0000_gt.png', '0001.png', '0001_gt.png', '0002.png', '0002_gt.png']
    assert 'Test set tiny-test' in result.stderr and 'ALL' in result.stderr
