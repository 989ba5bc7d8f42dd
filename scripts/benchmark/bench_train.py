"""Training throughput of the step as ``train.py`` runs it, per ``performance`` setting.

The model is built from an option file the way ``train.py`` builds it (``parse_options``, then
``build_model``: network, loss, optimiser, gradient clipping and EMA as the file says), and each
step is ``model.feed_data(batch)`` followed by ``model.optimize_parameters(iteration)`` on a fixed
synthetic batch (no data loading: ``bench_dataset.py`` measures that). The settings take turns
round by round; the table gives samples/s (median over rounds), the ratio to float32 eager from
the same run, and peak memory (CUDA: max allocated; CPU: peak resident set of a separate process
that builds the model and runs two steps of that setting, ``--memory``).

Settings: fp32 (``amp: ~, channels_last: false, compile: false``, the plain path), bf16, bf16 +
channels_last, bf16 + channels_last + compile, auto (the defaults).

Examples::

    python scripts/benchmark/bench_train.py --threads 2 --batch 2 --size 128 --rounds 3
    python scripts/benchmark/bench_train.py --device cuda --batch 8 --size 256 --steps 10 --rounds 3
    # on a busy machine, one thread and CPU time instead of wall time:
    python scripts/benchmark/bench_train.py --threads 1 --clock cpu --settings fp32 auto
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from basicsr.engine.cli import parse_options
from basicsr.engine.run_setup import build_model

ROOT = Path(__file__).resolve().parents[2]

SETTINGS = {
    'fp32': {'amp': '~', 'channels_last': 'false', 'compile': 'false'},
    'bf16': {'amp': 'bf16', 'channels_last': 'false', 'compile': 'false'},
    'bf16+cl': {'amp': 'bf16', 'channels_last': 'true', 'compile': 'false'},
    'bf16+cl+compile': {'amp': 'bf16', 'channels_last': 'true', 'compile': 'true'},
    'auto': {'amp': 'auto', 'channels_last': 'auto', 'compile': 'auto'},
}
DEFAULT_OPTIONS = ROOT / 'options' / 'train' / 'GoPro' / 'EFNet.yml'


def build(option_file: Path, setting: str, device: str):
    """The model of ``option_file`` with the performance keys of ``setting``, as train.py builds it."""
    overrides = [f'performance:{key}={value}' for key, value in SETTINGS[setting].items()]
    overrides.append(f"num_gpu={0 if device == 'cpu' else 1}")
    opt, ctx = parse_options(is_train=True, argv=['-opt', str(option_file), '--force_yml', *overrides])
    return build_model(opt, ctx)


def synthetic_batch(batch: int, size: int, ev_chn: int) -> dict[str, torch.Tensor]:
    """A training batch in the data's ranges: frames in [0, 1], voxel in [-1, 1], mask in {0, 1}."""
    generator = torch.Generator().manual_seed(0)
    frame_gt = torch.rand(batch, 3, size, size, generator=generator)
    return {
        'frame': (frame_gt + 0.05 * torch.randn(batch, 3, size, size, generator=generator)).clamp(0, 1),
        'frame_gt': frame_gt,
        'voxel': torch.rand(batch, ev_chn, size, size, generator=generator) * 2 - 1,
        'mask': (torch.rand(batch, 1, size, size, generator=generator) > 0.5).float(),
    }


def clock(kind: str) -> float:
    return time.perf_counter() if kind == 'wall' else time.process_time()


def run_steps(model, batch: dict, steps: int, first_iter: int, device: torch.device) -> None:
    for i in range(steps):
        model.feed_data(batch)
        model.optimize_parameters(first_iter + i)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def peak_rss_of_setting(args: argparse.Namespace, setting: str) -> float | None:
    """Peak resident memory (GiB) of a fresh process that builds ``setting`` and runs two steps."""
    command = [sys.executable, __file__, '--child-memory', setting, '--options', str(args.options), '--batch',
               str(args.batch), '--size', str(args.size), '--ev-chn', str(args.ev_chn), '--threads', str(args.threads),
               '--device', args.device]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])['peak_rss_gib']


def child_memory(args: argparse.Namespace) -> None:
    model = build(args.options, args.child_memory, args.device)
    batch = synthetic_batch(args.batch, args.size, args.ev_chn)
    run_steps(model, batch, 2, 1, torch.device(args.device))
    print(json.dumps({'peak_rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--options', type=Path, default=DEFAULT_OPTIONS, help='training option file')
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=128, help='square crop size')
    parser.add_argument('--ev-chn', type=int, default=6, help='event channels of the synthetic voxel')
    parser.add_argument('--steps', type=int, default=2, help='timed steps per setting and round')
    parser.add_argument('--rounds', type=int, default=3, help='rounds (the median is reported)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps per setting first (compile runs here)')
    parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads (CPU)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                        help='wall time, or the CPU time of the process (steadier on a shared machine with 1 thread)')
    parser.add_argument('--memory', action='store_true', help='CPU: also measure peak memory (one process each)')
    parser.add_argument('--child-memory', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child_memory:
        child_memory(args)
        return
    device = torch.device(args.device)
    batch = synthetic_batch(args.batch, args.size, args.ev_chn)
    models, start_seconds = {}, {}
    for setting in args.settings:
        try:
            models[setting] = build(args.options, setting, args.device)
        except SystemExit:
            print(f'{setting}: the option file or this torch rejects these performance settings; skipped')
            continue
        start = time.perf_counter()
        run_steps(models[setting], batch, args.warmup, 1, device)
        start_seconds[setting] = time.perf_counter() - start
    print(f'Training step of {args.options.name}: batch {args.batch}x3x{args.size}x{args.size}, device {device}, '
          f'threads {torch.get_num_threads()}, torch {torch.__version__}, clock {args.clock}, '
          f'load average {os.getloadavg()[0]:.2f}')

    seconds = {setting: [] for setting in models}
    peaks = {}
    for round_index in range(args.rounds):
        for setting, model in models.items():
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            start = clock(args.clock)
            run_steps(model, batch, args.steps, args.warmup + round_index * args.steps + 1, device)
            seconds[setting].append((clock(args.clock) - start) / args.steps)
            if device.type == 'cuda':
                peaks[setting] = torch.cuda.max_memory_allocated(device) / 2**30
    if device.type == 'cpu' and args.memory:
        peaks = {setting: peak_rss_of_setting(args, setting) for setting in models}

    baseline = statistics.median(seconds['fp32']) if 'fp32' in seconds else None
    memory_kind = 'peak alloc GiB' if device.type == 'cuda' else 'peak RSS GiB'
    print(f'{"setting":<16} | {"s/step":>8} | {"samples/s":>9} | {"vs fp32":>7} | {"warm-up s":>9} | {memory_kind:>14}')
    print('-' * 78)
    for setting, values in seconds.items():
        median = statistics.median(values)
        ratio = f'{baseline / median:.2f}x' if baseline else ''
        peak = peaks.get(setting)
        peak_text = f'{peak:.2f}' if peak is not None else ''
        print(f'{setting:<16} | {median:>8.3f} | {args.batch / median:>9.2f} | {ratio:>7} | '
              f'{start_seconds[setting]:>9.1f} | {peak_text:>14}')
    print(f'load average at the end: {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
    main()
