"""SCER throughput: ``basicsr.events.events_to_scer`` against the reference's per-bin way of computing it.

The per-bin baselines do what EFNet's reference does: for each of the B channels, two binary searches give the
channel's slice of events and an event image is accumulated over that slice (B passes over overlapping slices).
They are checked to give the same tensor as ``events_to_scer`` before anything is timed.

Usage::

    python scripts/benchmark/bench_scer.py [--events 1e6 5e6] [--runs 5] [--threads 1]
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
    channels += [event_image(mid, int(np.searchsorted(ts, t0 + (span / NUM_BINS) * (k + 1))))
                 for k in range(NUM_BINS // 2, NUM_BINS)]
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
    return (rng.integers(0, WIDTH, n), rng.integers(0, HEIGHT, n),
            np.sort(rng.uniform(0.0, 0.05, n)).astype(np.float32), rng.integers(0, 2, n))


def timing_cases(arrays: tuple[np.ndarray, ...],
                 tensors: list[torch.Tensor]) -> list[tuple[str, Callable[[], object], int | None]]:
    """(name, function, index of the per-bin case it is compared with: the faster baseline of its library)."""
    return [
        ('numpy per-bin (np.add.at)', lambda: per_bin_scer_numpy(*arrays, 'add.at'), None),
        ('numpy per-bin (bincount per slice)', lambda: per_bin_scer_numpy(*arrays, 'bincount'), None),
        ('numpy events_to_scer', lambda: events_to_scer(*arrays, NUM_BINS, (HEIGHT, WIDTH)), 1),
        ('torch per-bin (index_put_)', lambda: per_bin_scer_torch(*tensors), None),
        ('torch events_to_scer', lambda: events_to_scer(*tensors, NUM_BINS, (HEIGHT, WIDTH)), 3),
    ]


def median_seconds(function: Callable[[], object], runs: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--events', type=float, nargs='+', default=[1e6, 5e6], help='numbers of events')
    parser.add_argument('--runs', type=int, default=5, help='timed runs per case (after one warm-up)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(f'SCER, {NUM_BINS} bins, {HEIGHT}x{WIDTH}, float32 timestamps, median of {args.runs} runs, '
          f'torch threads {torch.get_num_threads()}')
    print(f'{"events":>9} | {"implementation":<34} | {"median s":>9} | {"Mevents/s":>9} | {"speed-up":>8}')
    print('-' * 82)
    for n in (int(e) for e in args.events):
        arrays = random_events(n)
        tensors = [torch.from_numpy(a) for a in arrays]
        fast_numpy = events_to_scer(*arrays, NUM_BINS, (HEIGHT, WIDTH))
        for accumulate in ('add.at', 'bincount'):
            np.testing.assert_array_equal(per_bin_scer_numpy(*arrays, accumulate), fast_numpy)
        np.testing.assert_array_equal(per_bin_scer_torch(*tensors).numpy(), fast_numpy)
        np.testing.assert_array_equal(events_to_scer(*tensors, NUM_BINS, (HEIGHT, WIDTH)).numpy(), fast_numpy)

        cases = timing_cases(arrays, tensors)
        seconds = [median_seconds(function, args.runs) for _, function, _ in cases]
        for (name, _, baseline), elapsed in zip(cases, seconds, strict=True):
            speed_up = '' if baseline is None else f'{seconds[baseline] / elapsed:.1f}x'
            print(f'{n:>9,} | {name:<34} | {elapsed:>9.3f} | {n / elapsed / 1e6:>9.2f} | {speed_up:>8}')
    print('speed-up: against the per-bin baseline of the same library (numpy: the bincount one, the faster)')


if __name__ == '__main__':
    main()
