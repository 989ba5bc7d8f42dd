"""SCER against hand-made examples and plain per-bin references."""

from pathlib import Path

import numpy as np
import pytest
import torch

from basicsr.events import (
    events_to_scer,
    read_events,
    signed_polarity,
)

STREET = Path(__file__).parent / 'data' / 'davis346_street' / 'street.aedat4'


def per_bin_scer(xs, ys, ts, ps, num_bins, sensor_size, keep_middle):
    """The reference's way: one event image per channel over its own slice; idx(τ) = number of events before τ."""
    height, width = sensor_size
    t0, span = ts[0], ts[-1] - ts[0]

    def idx(tau):
        return int(sum(1 for t in ts if t < tau))

    def event_image(begin, end):
        image = np.zeros((height, width), dtype=np.float64)
        for i in range(begin, end):
            image[int(ys[i]), int(xs[i])] += 1 if ps[i] > 0 else -1
        return image

    mid = idx(t0 + span / 2)
    channels = [-event_image(idx(t0 + (span / num_bins) * k), mid) for k in range(num_bins // 2)]
    channels += [np.zeros((height, width))] if keep_middle else []
    channels += [event_image(mid, idx(t0 + (span / num_bins) * (k + 1))) for k in range(num_bins // 2, num_bins)]
    return np.stack(channels).astype(np.float32)


def random_stream(rng, n, sensor_size, ts_dtype, signed, duplicated):
    height, width = sensor_size
    if duplicated:  # few distinct times, so boundaries often hit event timestamps exactly
        ts = np.sort(rng.integers(0, 13, n)).astype(ts_dtype)
    else:
        ts = np.sort(rng.uniform(0.0, 0.05, n)).astype(ts_dtype)
    ps = rng.integers(0, 2, n)
    ps = ps * 2 - 1 if signed else ps
    return rng.integers(0, width, n), rng.integers(0, height, n), ts, ps


def as_torch(*arrays):
    return [torch.from_numpy(np.asarray(a)) for a in arrays]


def test_scer_toy_stream_of_the_spec():
    # 10 events at t = 0..9 on one pixel, all ON: Δ = 9, boundaries 0, 1.5, 3, 4.5 (mid), 6, 7.5, 9.
    ts = np.arange(10, dtype=np.float32)
    xs = ys = np.zeros(10, dtype=np.int64)
    ps = np.ones(10)
    scer = events_to_scer(xs, ys, ts, ps, num_bins=6, sensor_size=(1, 1))
    # ch0 -[0, 4.5): t=0..4; ch1 -[1.5, 4.5): t=2..4; ch2 -[3, 4.5): t=3,4;
    # ch3 [4.5, 6): t=5; ch4 [4.5, 7.5): t=5..7; ch5 [4.5, 9): t=5..8 (the last event is not counted).
    assert scer.dtype == np.float32 and scer.shape == (6, 1, 1)
    np.testing.assert_array_equal(scer.ravel(), [-5, -3, -2, 1, 3, 4])
    with_middle = events_to_scer(xs, ys, ts, ps, num_bins=6, sensor_size=(1, 1), keep_middle=True)
    np.testing.assert_array_equal(with_middle.ravel(), [-5, -3, -2, 0, 1, 3, 4])


def test_scer_toy_stream_with_mixed_polarity_and_pixels():
    ts = np.arange(10, dtype=np.float64)
    xs = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    ys = np.zeros(10, dtype=np.int64)
    ps = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1, 1])  # {0, 1}: 0 -> -1
    scer = events_to_scer(xs, ys, ts, ps, num_bins=6, sensor_size=(1, 2))
    # pixel 0 holds t = 0 (+), 2 (+), 4 (-), 6 (+), 8 (+); pixel 1 holds t = 1 (-), 3 (+), 5 (-), 7 (+), 9 (+).
    expected = np.array(
        [
            [[-(1 + 1 - 1), -(-1 + 1)]],  # [0, 4.5)
            [[-(1 - 1), -1]],  # [1.5, 4.5): t = 2, 3, 4
            [[1, -1]],  # [3, 4.5): t = 3, 4 -> pixel 0: -(-1), pixel 1: -(+1)
            [[0, -1]],  # [4.5, 6): t = 5
            [[1, 0]],  # [4.5, 7.5): t = 5, 6, 7
            [[2, 0]],  # [4.5, 9): t = 5..8
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(scer, expected)


@pytest.mark.parametrize('ts_dtype', [np.float32, np.float64])
@pytest.mark.parametrize('signed', [False, True])
@pytest.mark.parametrize('duplicated', [False, True])
@pytest.mark.parametrize('keep_middle', [False, True])
def test_scer_matches_per_bin_reference(ts_dtype, signed, duplicated, keep_middle):
    rng = np.random.default_rng([np.dtype(ts_dtype).itemsize, signed, duplicated, keep_middle])
    for trial in range(6):
        sensor_size = (int(rng.integers(1, 5)), int(rng.integers(1, 6)))
        num_bins = int(rng.choice([2, 4, 6, 8]))
        stream = random_stream(rng, int(rng.integers(1, 60)), sensor_size, ts_dtype, signed, duplicated)
        expected = per_bin_scer(*stream, num_bins, sensor_size, keep_middle)
        got = events_to_scer(*stream, num_bins=num_bins, sensor_size=sensor_size, keep_middle=keep_middle)
        np.testing.assert_array_equal(got, expected, err_msg=f'trial {trial}')
        got_torch = events_to_scer(*as_torch(*stream), num_bins, sensor_size, keep_middle)
        assert isinstance(got_torch, torch.Tensor) and got_torch.dtype == torch.float32
        np.testing.assert_array_equal(got_torch.numpy(), expected, err_msg=f'trial {trial} (torch)')


def test_scer_of_a_long_stream_matches_per_bin_masks_by_time():
    # 20k events on a 40x56 sensor, with a burst (many events in one interval) and a gap (empty intervals);
    # the reference selects each channel's events with boolean masks on the timestamps, not binary searches.
    rng = np.random.default_rng(7)
    ts = np.sort(np.concatenate([rng.uniform(0, 1, 15000), rng.uniform(0.61, 0.62, 5000), [0.0, 3.0]]))
    n = ts.size
    xs, ys, ps = rng.integers(0, 56, n), rng.integers(0, 40, n), rng.integers(0, 2, n)
    t0, span, num_bins = ts[0], ts[-1] - ts[0], 6
    bounds = [t0 + (span / num_bins) * k for k in range(num_bins + 1)]
    mid = t0 + span / 2
    expected = np.zeros((num_bins, 40, 56), dtype=np.float32)
    polarity = np.where(ps > 0, 1.0, -1.0)
    for k in range(num_bins):
        lo, hi, sign = (bounds[k], mid, -1) if k < num_bins // 2 else (mid, bounds[k + 1], 1)
        chosen = (ts >= lo) & (ts < hi)
        np.add.at(expected[k], (ys[chosen], xs[chosen]), sign * polarity[chosen])
    np.testing.assert_array_equal(events_to_scer(xs, ys, ts, ps, num_bins, (40, 56)), expected)
    np.testing.assert_array_equal(events_to_scer(*as_torch(xs, ys, ts, ps), num_bins, (40, 56)).numpy(), expected)


def test_scer_boundaries_are_computed_in_float32_for_float32_timestamps():
    # For Δ = float32(0.9) the float32 boundary t0 + Δ/6 lies below the exact one: an event sitting on the float32
    # boundary is inside [b_1, t_mid) only when the boundary is computed in float32, as the reference does.
    t_end = np.float32(0.9)
    boundary32 = np.float32(0) + (t_end / 6) * 1
    assert float(boundary32) < float(t_end) / 6
    ts = np.array([0, boundary32, t_end], dtype=np.float32)
    stream = (np.zeros(3, np.int64), np.zeros(3, np.int64), ts, np.ones(3))
    scer = events_to_scer(*stream, num_bins=6, sensor_size=(1, 1))
    np.testing.assert_array_equal(scer.ravel(), per_bin_scer(*stream, 6, (1, 1), False).ravel())
    assert scer[1, 0, 0] == -1  # [b_1, t_mid) holds the boundary event


def test_scer_with_duplicated_boundary_timestamps_puts_the_group_after_the_boundary():
    # t_mid = 1 is hit by three events: all of them belong to the right half (first index with ts >= τ).
    ts = np.array([0, 1, 1, 1, 2], dtype=np.float64)
    scer = events_to_scer(np.zeros(5, np.int64), np.zeros(5, np.int64), ts, np.ones(5), 2, (1, 1))
    np.testing.assert_array_equal(scer.ravel(), [-1, 3])


def test_scer_empty_and_single_event_give_zeros():
    empty = [np.zeros(0, dtype) for dtype in (np.int64, np.int64, np.float64, np.int64)]
    np.testing.assert_array_equal(events_to_scer(*empty, 4, (2, 3)), np.zeros((4, 2, 3), np.float32))
    assert events_to_scer(*as_torch(*empty), 4, (2, 3), keep_middle=True).shape == (5, 2, 3)
    one = (np.array([1]), np.array([0]), np.array([0.5]), np.array([1]))
    np.testing.assert_array_equal(events_to_scer(*one, 6, (1, 2)), np.zeros((6, 1, 2)))


def test_scer_accepts_bool_polarity_and_float_coordinates():
    ts = np.arange(4, dtype=np.float64)
    xs, ys = np.array([0.0, 1.7, 0.2, 1.0]), np.array([0, 0, 0, 0])  # floats truncate like int()
    scer = events_to_scer(xs, ys, ts, np.array([True, False, True, True]), 2, (1, 2))
    np.testing.assert_array_equal(scer, [[[-1, 1]], [[1, 0]]])


def test_scer_input_errors():
    good = (np.array([0, 1]), np.array([0, 0]), np.array([0.0, 1.0]), np.array([1, 0]))
    cases = [
        ({'num_bins': 5}, ValueError, 'num_bins must be an even integer'),
        ({'num_bins': 0}, ValueError, 'num_bins must be an even integer'),
        ({'sensor_size': None}, ValueError, r'sensor_size must be \(H, W\)'),
        ({'sensor_size': (2, 0)}, ValueError, r'sensor_size must be \(H, W\)'),
        ({'xs': np.array([0, 2])}, ValueError, r'xs must lie in \[0, W\) = \[0, 2\).*found values in \[0, 2\]'),
        ({'ys': np.array([-1, 0])}, ValueError, r'ys must lie in \[0, H\) = \[0, 1\)'),
        ({'ts': np.array([1.0, 0.5])}, ValueError, r'sorted by time, but ts\[0\] = 1.0 > ts\[1\] = 0.5'),
        ({'ts': np.array([0.0, np.nan])}, ValueError, r'timestamps must be finite numbers, found ts\[1\] = nan'),
        ({'ps': np.array([1, 2])}, ValueError, r'polarities must be in \{0, 1\} or \{-1, \+1\}.*2.0'),
        ({'ps': np.array([0, -1])}, ValueError, 'mix the'),
        ({'ts': np.array([0.0, 1.0, 2.0])}, ValueError, 'equal length'),
        ({'xs': torch.tensor([0, 1])}, TypeError, 'all numpy arrays or all torch tensors.*xs: torch'),
        ({'xs': [0, 1]}, TypeError, 'xs: list'),
    ]
    for change, error, message in cases:
        kwargs = dict(zip(('xs', 'ys', 'ts', 'ps'), good), num_bins=2, sensor_size=(1, 2)) | change
        with pytest.raises(error, match=message):
            events_to_scer(**kwargs)


def test_tensors_on_different_devices_are_rejected():
    xs = torch.zeros(2, dtype=torch.int64, device='meta')
    rest = [torch.zeros(2, dtype=torch.int64), torch.tensor([0.0, 1.0]), torch.ones(2)]
    with pytest.raises(ValueError, match=r"tensors are on different devices \['cpu', 'meta'\]"):
        events_to_scer(xs, *rest, 2, (1, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_scer_on_cuda_matches_numpy():
    rng = np.random.default_rng(9)
    for ts_dtype in (np.float32, np.float64):
        stream = random_stream(rng, 5000, (30, 40), ts_dtype, False, False)
        on_cuda = [t.cuda() for t in as_torch(*stream)]
        scer = events_to_scer(*on_cuda, 6, (30, 40))
        assert scer.is_cuda
        np.testing.assert_array_equal(scer.cpu().numpy(), events_to_scer(*stream, 6, (30, 40)))


def test_signed_polarity():
    np.testing.assert_array_equal(signed_polarity(np.array([0, 1, 1, 0])), [-1, 1, 1, -1])
    np.testing.assert_array_equal(signed_polarity(np.array([-1, 1])), [-1, 1])
    assert signed_polarity(torch.tensor([0.0, 1.0])).tolist() == [-1, 1]


def test_scer_on_a_frame_centred_window_of_the_real_recording():
    pytest.importorskip('aedat')
    whole = read_events(STREET, load_frames=True)
    middle = whole.frame_timestamps.size // 2
    t_begin = (whole.frame_timestamps[middle - 1] + whole.frame_timestamps[middle]) / 2
    t_end = (whole.frame_timestamps[middle] + whole.frame_timestamps[middle + 1]) / 2
    window = read_events(STREET, t_start=t_begin, t_end=t_end, load_frames=False)
    assert window.num_events > 500
    assert window.ts.min() >= t_begin and window.ts.max() < t_end
    inside = (whole.ts >= t_begin) & (whole.ts < t_end)
    assert window.num_events == int(inside.sum())

    scer = events_to_scer(window.xs, window.ys, window.ts, window.ps, 6, window.sensor_size)
    assert scer.shape == (6, 260, 346) and scer.dtype == np.float32
    np.testing.assert_array_equal(
        scer, per_bin_scer(window.xs, window.ys, window.ts, window.ps, 6, window.sensor_size, False)
    )
    # The widest channels together hold the net polarity of every event but those at the very last timestamp.
    counted = window.ts < window.ts[-1]
    net = np.zeros(window.sensor_size)
    np.add.at(net, (window.ys[counted], window.xs[counted]), window.ps[counted])
    np.testing.assert_array_equal(scer[5] - scer[0], net)
    torch_scer = events_to_scer(*as_torch(window.xs, window.ys, window.ts, window.ps), 6, window.sensor_size)
    np.testing.assert_array_equal(torch_scer.numpy(), scer)
