"""The fidelity budget of ``performance: auto`` on the demo (README, "Benchmarks").

1. Trains the demo configuration twice with ``train.py``: with the default settings (auto: bf16 and
   channels_last on a CPU with AVX512-BF16 or AMX; the run ``scripts/demo.py`` makes, reused when
   finished) and in plain float32 (``amp: ~, channels_last: false, compile: false``, experiment
   ``<name>_fp32``), then evaluates each with ``test.py`` in the settings it was trained with and
   prints both test PSNRs and their difference (budget: 0.1 dB).
2. Runs the auto-trained network over the test set in float32 and in auto, and prints the PSNR between
   the two outputs (clamped to [0, 1], peak 1), per image: mean and worst.

Run it after ``scripts/demo.py`` (or it trains the auto run too; 2 CPU cores: a few minutes per run)::

    python scripts/benchmark/fidelity.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from basicsr.data import build_dataloader
from basicsr.engine.cli import parse_options
from basicsr.engine.run_setup import build_dataset, build_model

ROOT = Path(__file__).resolve().parents[2]
FP32 = ['performance:amp=~', 'performance:channels_last=false', 'performance:compile=false']
AUTO = ['performance:amp=auto', 'performance:channels_last=auto', 'performance:compile=auto']


def run(script: str, option_file: str, overrides: list[str], extra: tuple[str, ...] = ()) -> None:
    command = [sys.executable, script, '-opt', option_file, *extra, '--force_yml', *overrides]
    print('$', ' '.join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def train_and_test(train_opt: str, test_opt: str, name: str, performance: list[str]) -> float:
    """Train ``train_opt`` as experiment ``name`` with ``performance`` (a finished run is reused), evaluate its
    latest network with ``test_opt`` in the same settings; returns the test set's output PSNR (dB)."""
    run('basicsr/train.py', train_opt, [f'name={name}', *performance], extra=('--auto_resume',))
    weights = ROOT / 'experiments' / name / 'models' / 'net_g_latest.pth'
    run(
        'basicsr/test.py',
        test_opt,
        [f'name={name}_test', f'path:pretrain_network_g={weights}', 'val:save_img=false', *performance],
    )
    metrics = json.loads((ROOT / 'results' / f'{name}_test' / 'metrics.json').read_text())
    (summary,) = metrics.values()
    return summary['output']['psnr']


def outputs(test_opt: str, weights: Path, performance: list[str]) -> list[torch.Tensor]:
    """The network's outputs on the test set, (1, 3, H, W) float32 clamped to [0, 1], one per image."""
    opt, ctx = parse_options(
        is_train=False, argv=['-opt', test_opt, '--force_yml', f'path:pretrain_network_g={weights}', *performance]
    )
    model = build_model(opt, ctx)
    dataset_opt = opt['datasets']['test']
    results = []
    for batch in build_dataloader(build_dataset(dataset_opt), dataset_opt):
        model.feed_data(batch)
        mask = model.mask if dataset_opt['use_mask'] else None
        results.append(model.test(model.frame, model.voxel, mask).clamp(0, 1))
    return results


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of ``a`` against ``b``, both in [0, 1] (peak 1)."""
    return float(-10 * torch.log10(torch.mean((a.double() - b.double()) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--train_opt', default='options/train/Synthetic/EFNet_demo.yml')
    parser.add_argument('--test_opt', default='options/test/Synthetic/EFNet_demo.yml')
    parser.add_argument('--name', default='EFNet_demo', help="experiment name of the auto run (the demo's)")
    args = parser.parse_args()
    psnr_auto = train_and_test(args.train_opt, args.test_opt, args.name, AUTO)
    psnr_fp32 = train_and_test(args.train_opt, args.test_opt, f'{args.name}_fp32', FP32)
    weights = ROOT / 'experiments' / args.name / 'models' / 'net_g_latest.pth'
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    pairs = [psnr(a, f) for a, f in zip(outputs(args.test_opt, weights, AUTO), outputs(args.test_opt, weights, FP32))]
    print(f'\nFidelity of performance: auto ({args.train_opt}, test set {args.test_opt}), torch {torch.__version__}')
    print(f'test PSNR, trained and tested with auto:    {psnr_auto:.4f} dB')
    print(f'test PSNR, trained and tested in float32:   {psnr_fp32:.4f} dB')
    print(f'difference (auto - float32):                {psnr_auto - psnr_fp32:+.4f} dB (budget: within 0.1 dB)')
    print(
        f'auto output against float32 output, same trained network, {len(pairs)} images: '
        f'PSNR mean {statistics.mean(pairs):.2f} dB, worst {min(pairs):.2f} dB'
    )


if __name__ == '__main__':
    main()
