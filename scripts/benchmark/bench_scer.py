"""SCER throughput: ``basicsr.events.events_to_scer`` against the original implementation's per-bin way of computing it.

The original (EFNet's reference code), in its torch version, cuts the time-sorted events by binary search and
accumulates each bin separately with ``index_put_``: for each of the B channels, two binary searches give the
channel's slice of events and an event image is accumulated over that slice (B passes over overlapping slices).
``per_bin_scer_torch`` below does exactly that; ``per_bin_scer_numpy`` is the same in numpy. ``events_to_scer``
makes one pass over the events (each elementary interval accumulated once) and a cumulative sum over the bins.
All are checked to give the same tensor before anything is timed. The table's last column is the original (torch
per-bin) time over the row's time, from the same run.

Usage::

    python scripts/benchmark/bench_scer.py [--events 1e6 5e6] [--runs 5] [--threads 1] [--clock cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from basicsr.events import events_to_scer

HEIGHT, WIDTH, NUM_BINS = 720, 1280, 6


def per_bin_scer_numpy(xs, ys, ts, ps, accumulate: str) -> np.ndarray:
    """SCER channel by channel; ``accumulate`` is 'add.at' (the literal way) or 'bincount' (one bincount a slice)."""
    t0, span = ts[0], ts[-1] - ts[0]
    mid = int(np.searchsorted(ts, t0 + span / 2))
    polarity = np.where(ps > 0, 1.0, -1.0)
    pixel = ys.astype(np.int64) * WIDTH + xs

    def event_image(begin: int, end: int) -> np.ndarray:
        if accumulate == 'add.at':
            image = np.zeros(HEIGHT * WIDTH)
            np.add.at(image, pixel[begin:end], polarity[begin:end])
        else:
            image = np.bincount(pixel[begin:end], weights=polarity[begin:end], minlength=HEIGHT * WIDTH)
        return image.reshape(HEIGHT, WIDTH)

    channels = [-event_image(int(np.searchsorted(ts, t0 + (span / NUM_BINS) * k)), mid) for k in range(NUM_BINS // 2)]
    channels += [
        event_image(mid, int(np.searchsorted(ts, t0 + (span / NUM_BINS) * (k + 1))))
        for k in range(NUM_BINS // 2, NUM_BINS)
    ]
    return np.stack(channels).astype(np.float32)


def per_bin_scer_torch(xs, ys, ts, ps) -> torch.Tensor:
    """SCER channel by channel with ``index_put_(accumulate=True)``, as the reference builds its event images."""
    t0, span = ts[0], ts[-1] - ts[0]

    def idx(tau: torch.Tensor) -> int:
        return int(torch.searchsorted(ts, tau.reshape(1)))

    mid = idx(t0 + span / 2)
    polarity = torch.where(ps > 0, 1.0, -1.0)

    def event_image(begin: int, end: int) -> torch.Tensor:
        image = torch.zeros(HEIGHT, WIDTH)
        return image.index_put_((ys[begin:end], xs[begin:end]), polarity[begin:end], accumulate=True)

    channels = [-event_image(idx(t0 + (span / NUM_BINS) * k), mid) for k in range(NUM_BINS // 2)]
    channels += [event_image(mid, idx(t0 + (span / NUM_BINS) * (k + 1))) for k in range(NUM_BINS // 2, NUM_BINS)]
    return torch.stack(channels)


def random_events(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """n events uniform over a 720x1280 sensor and a 50 ms window; float32 timestamps as in the reference."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, WIDTH, n),
        rng.integers(0, HEIGHT, n),
        np.sort(rng.uniform(0.0, 0.05, n)).astype(np.float32),
        rng.integers(0, 2, n),
    )


ORIGINAL = 'torch per-bin (original, index_put_)'


def timing_cases(arrays: tuple[np.ndarray, ...], tensors: list[torch.Tensor]) -> dict[str, Callable[[], object]]:
    return {
        'numpy per-bin (np.add.at)': lambda: per_bin_scer_numpy(*arrays, 'add.at'),
        'numpy per-bin (bincount per slice)': lambda: per_bin_scer_numpy(*arrays, 'bincount'),
        'numpy events_to_scer': lambda: events_to_scer(*arrays, NUM_BINS, (HEIGHT, WIDTH)),
        ORIGINAL: lambda: per_bin_scer_torch(*tensors),
        'torch events_to_scer': lambda: events_to_scer(*tensors, NUM_BINS, (HEIGHT, WIDTH)),
    }


def median_seconds(cases: dict[str, Callable[[], object]], runs: int, clock: Callable[[], float]) -> dict[str, float]:
    """Median seconds per case after one warm-up each; the cases take turns run by run."""
    times = {name: [] for name in cases}
    for function in cases.values():
        function()
    for _ in range(runs):
        for name, function in cases.items():
            start = clock()
            function()
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--events', type=float, nargs='+', default=[1e6, 5e6], help='numbers of events')
    parser.add_argument('--runs', type=int, default=5, help='timed runs per case (after one warm-up)')
    parser.add_argument('--threads', type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        '--clock',
        choices=('wall', 'cpu'),
        default='wall',
        help='wall time, or the CPU time of the process (steadier on a shared machine with 1 thread)',
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == 'wall' else time.process_time
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(
        f'SCER, {NUM_BINS} bins, {HEIGHT}x{WIDTH}, float32 timestamps, median of {args.runs} runs, '
        f'torch threads {torch.get_num_threads()}, clock {args.clock}'
    )
    print(f'{"events":>9} | {"implementation":<36} | {"median s":>9} | {"Mevents/s":>9} | {"vs original":>11}')
    print('-' * 87)
    for n in (int(e) for e in args.events):
        arrays = random_events(n)
        tensors = [torch.from_numpy(a) for a in arrays]
        fast_numpy = events_to_scer(*arrays, NUM_BINS, (HEIGHT, WIDTH))
        for accumulate in ('add.at', 'bincount'):
            np.testing.assert_array_equal(per_bin_scer_numpy(*arrays, accumulate), fast_numpy)
        np.testing.assert_array_equal(per_bin_scer_torch(*tensors).numpy(), fast_numpy)
        np.testing.assert_array_equal(events_to_scer(*tensors, NUM_BINS, (HEIGHT, WIDTH)).numpy(), fast_numpy)

        seconds = median_seconds(timing_cases(arrays, tensors), args.runs, clock)
        for name, elapsed in seconds.items():
            print(
                f'{n:>9,} | {name:<36} | {elapsed:>9.4f} | {n / elapsed / 1e6:>9.2f} | '
                f'{seconds[ORIGINAL] / elapsed:>10.2f}x'
            )


if __name__ == '__main__':
    main()
