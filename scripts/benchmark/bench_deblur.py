"""Frames per second of the Deblurrer (basicsr/deblur.py) on a whole frame: SCER, mask, network, uint8 output.

Times the default EFNet (wf=64, random weights: the speed does not depend on them) at DAVIS346 (346x260) and
720p (1280x720) with synthetic events, for several precision settings taking turns run by run (A B A B ...), so
a change in machine load affects all alike; reports medians. The load average is printed before and after.

Example::

    python scripts/benchmark/bench_deblur.py --runs 5 --variants fp32 bf16+channels_last
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from basicsr.archs.efnet_arch import EFNet
from basicsr.engine.deblurring import Deblurrer
from basicsr.utils.checkpoint import save_network

VARIANTS = {
    'fp32': {'amp': 'none', 'channels_last': 'off'},
    'fp32+channels_last': {'amp': 'none', 'channels_last': 'on'},
    'bf16': {'amp': 'bf16', 'channels_last': 'off'},
    'bf16+channels_last': {'amp': 'bf16', 'channels_last': 'on'},
    'fp16+channels_last': {'amp': 'fp16', 'channels_last': 'on'},
}
SIZES = {'346x260': (260, 346), '1280x720': (720, 1280)}


def synthetic_frame(height: int, width: int, events_per_pixel: float, seed: int = 0):
    """A random BGR frame and sorted random events over 25 ms (seconds), about ``events_per_pixel`` per pixel."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    n = int(events_per_pixel * height * width)
    events = {
        'xs': rng.integers(0, width, n, dtype=np.int32),
        'ys': rng.integers(0, height, n, dtype=np.int32),
        'ts': np.sort(rng.uniform(0.0, 0.025, n)),
        'ps': rng.choice(np.array([-1, 1], np.int8), n),
    }
    return frame, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', nargs='+', choices=tuple(SIZES), default=list(SIZES))
    parser.add_argument('--variants', nargs='+', choices=tuple(VARIANTS), default=['fp32', 'bf16+channels_last'])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads (CPU)')
    parser.add_argument('--events_per_pixel', type=float, default=0.5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}')
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / 'efnet_default.pth'
        save_network(EFNet(), weights)
        deblurrers = {name: Deblurrer(weights, device=args.device, **VARIANTS[name]) for name in args.variants}
    device = next(iter(deblurrers.values())).device
    print(f'device {device}; default EFNet (wf=64, depth 3); {args.runs} timed runs after {args.warmup} warm-up')

    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    for size_name in args.sizes:
        frame, events = synthetic_frame(*SIZES[size_name], args.events_per_pixel)
        for deblurrer in deblurrers.values():
            for _ in range(args.warmup):
                deblurrer(frame, events)
        times: dict[str, list[float]] = {name: [] for name in deblurrers}
        for _ in range(args.runs):
            for name, deblurrer in deblurrers.items():
                sync()
                start = time.perf_counter()
                deblurrer(frame, events)
                sync()
                times[name].append(time.perf_counter() - start)
        baseline = statistics.median(times[args.variants[0]])
        for name, values in times.items():
            median = statistics.median(values)
            print(
                f'{size_name:>9} {name:<20} median {median * 1e3:9.1f} ms  {1 / median:7.2f} frames/s  '
                f'x{baseline / median:.2f} vs {args.variants[0]}  (runs: '
                f'{", ".join(f"{v * 1e3:.0f}" for v in values)} ms)'
            )
    print(f'load average after: {os.getloadavg()}')


if __name__ == '__main__':
    main()
