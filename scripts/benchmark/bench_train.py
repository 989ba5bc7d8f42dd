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

With ``--loop`` the table gets a second row per setting: seconds per iteration of ``train.py``'s own
loop (:class:`~basicsr.engine.training.Trainer`: the prefetcher, data loading from the option file's
training set, learning rate, step, logging every ``print_freq``, the stop check), with the threads and
loader workers the Trainer chooses, against the bare step of the same model, rounds alternating. The
option file's data must exist (the demo's: ``make_synthetic_gopro.py``); checkpoints and validation
are pushed beyond the timed iterations.

Examples::

    python scripts/benchmark/bench_train.py --threads 2 --batch 2 --size 128 --rounds 3
    python scripts/benchmark/bench_train.py --device cuda --batch 8 --size 256 --steps 10 --rounds 3
    # on a busy machine, one thread and CPU time instead of wall time:
    python scripts/benchmark/bench_train.py --threads 1 --clock cpu --settings fp32 auto
    # the loop of train.py against the bare step, on the demo's data:
    python scripts/benchmark/bench_train.py --options options/train/Synthetic/EFNet_demo.yml --batch 4 \
        --size 96 --settings fp32 auto --loop
    # the default EFNet in train.py's loop against the original network's bare step (--baseline):
    python scripts/benchmark/bench_train.py --loop --baseline --batch 2 --size 128 --settings fp32 auto \
        --options options/train/Synthetic/EFNet_demo.yml --set network_g:wf=64
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
from bench_efnet import make_baseline

from basicsr.engine.cli import parse_options
from basicsr.engine.run_setup import build_model
from basicsr.engine.signals import GracefulStop
from basicsr.engine.training import Trainer, make_prefetcher

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
    overrides.append(f'num_gpu={0 if device == "cpu" else 1}')
    opt, ctx = parse_options(is_train=True, argv=['-opt', str(option_file), '--force_yml', *overrides])
    return build_model(opt, ctx)


class LoopRunner:
    """Iterations of ``train.py``'s loop body (prefetcher, ``Trainer.train_iteration``) with ``setting``, and bare
    steps of the same model on a fixed batch of its own data."""

    def __init__(
        self,
        option_file: Path,
        setting: str,
        device: str,
        batch: int,
        size: int,
        dataroot: Path | None = None,
        extra: tuple[str, ...] = (),
    ):
        overrides = [f'performance:{key}={value}' for key, value in SETTINGS[setting].items()]
        overrides += [f'datasets:train:dataroot={dataroot}'] if dataroot is not None else []
        overrides += list(extra)
        overrides += [
            f'num_gpu={0 if device == "cpu" else 1}',
            f'name=bench_train_loop_{setting}',
            'logger:save_checkpoint_freq=100000000',
            'val:val_freq=100000000',
            'logger:use_tb_logger=false',
            'train:total_iter=100000000',
            f'datasets:train:batch_size_per_gpu={batch}',
            f'datasets:train:crop_size={size}',
        ]
        opt, ctx = parse_options(is_train=True, argv=['-opt', str(option_file), '--force_yml', *overrides])
        self.trainer = Trainer(opt, ctx)
        self.trainer.setup()
        self.trainer.last_saved_iter = 0
        self.trainer.msg_logger = _quiet_message_logger
        self.prefetcher = make_prefetcher(self.trainer.train_loader, opt['datasets']['train'], ctx.device)
        self.fixed_batch = self.next_batch()
        self.threads = torch.get_num_threads()

    def use_original_network(self) -> None:
        """Train the original network instead (``bench_efnet.make_baseline``: the blocks written the
        straightforward way, same weights), with its own optimiser."""
        model = self.trainer.model
        model.net_g = make_baseline(model.net_g)
        model.setup_optimizer(model.net_g)

    def next_batch(self) -> dict:
        batch = self.prefetcher.next()
        if batch is None:
            self.prefetcher.reset()
            batch = self.prefetcher.next()
        return batch

    def loop(self, iterations: int, stop: GracefulStop) -> None:
        for _ in range(iterations):
            self.trainer.train_iteration(self.next_batch(), 0.0, stop)

    def bare(self, steps: int) -> None:
        model = self.trainer.model
        for i in range(steps):
            model.feed_data(self.fixed_batch)
            model.optimize_parameters(i + 1)


def _quiet_message_logger(log: dict) -> None:
    """Stands for the MessageLogger: the values are still gathered (``get_current_log``), not printed."""


def time_loop(args: argparse.Namespace) -> None:
    """The loop of train.py against the bare step, per setting, rounds alternating (medians)."""

    def runner(setting: str) -> LoopRunner:
        return LoopRunner(args.options, setting, args.device, args.batch, args.size, args.dataroot, tuple(args.set))

    runners = {setting: runner(setting) for setting in args.settings}
    if args.baseline:
        runners['original fp32'] = runner('fp32')
        runners['original fp32'].use_original_network()
    seconds = {(setting, kind): [] for setting in runners for kind in ('loop', 'bare')}
    with GracefulStop() as stop:
        for runner in runners.values():
            runner.loop(args.warmup, stop)
            runner.bare(args.warmup)
        for _ in range(args.rounds):
            for setting, runner in runners.items():
                for kind in ('loop', 'bare'):
                    start = clock(args.clock)
                    runner.loop(args.steps, stop) if kind == 'loop' else runner.bare(args.steps)
                    seconds[setting, kind].append((clock(args.clock) - start) / args.steps)
    threads = ', '.join(f'{setting} {runner.threads}' for setting, runner in runners.items())
    print(
        f'\ntrain.py loop against the bare step, {args.options.name}: batch {args.batch} at {args.size}x'
        f'{args.size}, compute threads as the Trainer sizes them ({threads}), clock {args.clock}, '
        f'load average {os.getloadavg()[0]:.2f}'
    )
    reference = 'original fp32' if args.baseline else 'fp32'
    baseline = statistics.median(seconds[reference, 'bare']) if reference in runners else None
    print(
        f'{"setting":<16} | {"bare s/it":>9} | {"loop s/it":>9} | {"loop/bare":>9} | '
        f'{"loop vs " + reference + " bare":>26}'
    )
    print('-' * 82)
    for setting in runners:
        bare, loop = statistics.median(seconds[setting, 'bare']), statistics.median(seconds[setting, 'loop'])
        ratio = f'{baseline / loop:.2f}x' if baseline else ''
        print(f'{setting:<16} | {bare:>9.3f} | {loop:>9.3f} | {loop / bare:>9.2f} | {ratio:>26}')


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
    command = [
        sys.executable,
        __file__,
        '--child-memory',
        setting,
        '--options',
        str(args.options),
        '--batch',
        str(args.batch),
        '--size',
        str(args.size),
        '--ev-chn',
        str(args.ev_chn),
        '--threads',
        str(args.threads),
        '--device',
        args.device,
    ]
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
    parser.add_argument(
        '--clock',
        choices=('wall', 'cpu'),
        default='wall',
        help='wall time, or the CPU time of the process (steadier on a shared machine with 1 thread)',
    )
    parser.add_argument('--memory', action='store_true', help='CPU: also measure peak memory (one process each)')
    parser.add_argument(
        '--loop', action='store_true', help="time train.py's loop (data loading included) against the bare step instead"
    )
    parser.add_argument('--dataroot', type=Path, help="--loop: training data folder instead of the option file's")
    parser.add_argument(
        '--baseline',
        action='store_true',
        help='--loop: also the original network (bench_efnet.py), float32; the ratios are against it',
    )
    parser.add_argument(
        '--set',
        nargs='+',
        default=[],
        metavar='a:b=value',
        help='--loop: more option overrides (as --force_yml), e.g. network_g:wf=64',
    )
    parser.add_argument('--child-memory', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.loop:
        time_loop(args)
        return
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
    print(
        f'Training step of {args.options.name}: batch {args.batch}x3x{args.size}x{args.size}, device {device}, '
        f'threads {torch.get_num_threads()}, torch {torch.__version__}, clock {args.clock}, '
        f'load average {os.getloadavg()[0]:.2f}'
    )

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
        print(
            f'{setting:<16} | {median:>8.3f} | {args.batch / median:>9.2f} | {ratio:>7} | '
            f'{start_seconds[setting]:>9.1f} | {peak_text:>14}'
        )
    print(f'load average at the end: {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
    main()
