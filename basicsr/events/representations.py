"""Dense event tensors: SCER (EFNet's Symmetric Cumulative Event Representation) and the classic voxel grid.

Every function accepts numpy arrays or torch tensors (all four event arrays of one kind, on one device) and returns
the same kind. Events are four 1-D arrays of equal length N:

* ``xs``, ``ys``: pixel column and row, integers (floats are truncated toward zero, like the reference's ``int()``),
  0 <= x < W and 0 <= y < H;
* ``ts``: timestamps, sorted ascending (ties allowed), any unit;
* ``ps``: polarity, either {0, 1} (0 means OFF) or {-1, +1}; bool is read as {0, 1}.

Timestamps must be precise in their dtype: absolute camera clocks (e.g. 1.6e9 s from an AEDAT4 file) lose all
sub-second resolution in float32; subtract a reference time before converting such timestamps to float32.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from basicsr.events._array_ops import ArrayOps, array_ops_for

Array = Any  # numpy.ndarray or torch.Tensor

def events_to_scer(
    xs: Array,
    ys: Array,
    ts: Array,
    ps: Array,
    num_bins: int = 6,
    sensor_size: tuple[int, int] | None = None,
    keep_middle: bool = False,
) -> Array:
    """SCER of one window of events, with exactly the semantics of EFNet's reference implementation.

    With t0 = ts[0], t1 = ts[-1], Δ = t1 - t0, t_mid = t0 + Δ/2, B = ``num_bins`` and the interval boundaries
    b_k = t0 + (Δ/B)·k, all computed in the dtype of ``ts`` (float32 timestamps give float32 boundaries, like the
    reference; integer timestamps are converted to float64 first), and idx(τ) = the first index with ts >= τ:

    * channel k < B/2 is -EI(idx(b_k), idx(t_mid)): minus the polarity sum of the events in [b_k, t_mid);
    * channel k >= B/2 is +EI(idx(t_mid), idx(b_{k+1})): the polarity sum of the events in [t_mid, b_{k+1});
    * with ``keep_middle`` an all-zero channel is inserted between the two halves (B + 1 channels).

    EI sums polarities per pixel without interpolation. Slices are half-open and b_B = t1 (up to rounding in the dtype
    of ``ts``), so the events at the very last timestamp are not counted, as in the reference. An empty slice
    (idx(b_k) > idx(t_mid)) gives a zero channel.

    Duplicated timestamps: idx is numpy's ``searchsorted(side='left')``, so all events whose timestamp equals a
    boundary fall on the later side of it. The reference's hand-written bisection returns whichever equal element it
    meets first and may split such a group; both agree whenever no event timestamp equals a boundary exactly.

    Cost: O(N + B·H·W) time: B + 1 binary searches split the events into B elementary intervals (contiguous runs,
    since events are sorted), each run is accumulated once into its own event image (bincount/index_add), and the
    channels are running sums of those images outward from t_mid.

    Args:
        xs, ys, ts, ps: (N,) event arrays, numpy or torch (see the module docstring); ``ts`` sorted ascending.
        num_bins: B, an even number >= 2.
        sensor_size: (H, W) of the sensor in pixels. Required.
        keep_middle: insert the zero middle channel (the reference's default; EFNet's 6-channel data omit it).

    Returns:
        (B, H, W), or (B + 1, H, W) with ``keep_middle``, float32 signed event counts, numpy array or torch tensor on
        the device of the inputs. All zeros when N == 0.

    Raises:
        ValueError: odd or non-positive ``num_bins``, missing/invalid ``sensor_size``, unsorted timestamps, x/y
            outside the sensor, polarity values other than {0, 1} / {-1, +1}, or arrays of different lengths.
        TypeError: inputs that mix numpy and torch.
    """
    if not isinstance(num_bins, int) or num_bins < 2 or num_bins % 2:
        raise ValueError(f'events_to_scer: num_bins must be an even integer >= 2 (SCER splits the window into two '
                         f'symmetric halves), got {num_bins!r}')
    ops, ts = _validated_events('events_to_scer', xs, ys, ts, ps, sensor_size)
    height, width = int(sensor_size[0]), int(sensor_size[1])
    if ts is None:
        return ops.zeros((num_bins + 1 if keep_middle else num_bins, height, width))

    # Events are sorted, so each elementary interval is a contiguous run of events: one scatter per run into its
    # own (H·W) image touches every event once, and per-run temporaries stay small (large fresh allocations cost
    # page faults that dominate at millions of events).
    cuts = _scer_cuts(ops, ts, num_bins)
    images = ops.zeros((num_bins, height * width))
    for j in range(num_bins):
        run = slice(cuts[j], cuts[j + 1])
        if run.stop > run.start:
            ops.accumulate_into(images[j], _pixel_index(ops, xs[run], ys[run], width),
                                _polarity_weights(ops, ps[run], ops.float32))
    images = images.reshape(num_bins, height, width)

    # Running sums outward from t_mid, in place: channel k of the left half sums intervals k..B/2-1 (negated),
    # channel k of the right half sums intervals B/2..k.
    half = num_bins // 2
    for k in range(half - 2, -1, -1):
        images[k] += images[k + 1]
    for k in range(half + 1, num_bins):
        images[k] += images[k - 1]
    images[:half] *= -1
    if keep_middle:
        return ops.concatenate([images[:half], ops.zeros((1, height, width)), images[half:]])
    return images


def _scer_cuts(ops: ArrayOps, ts: Array, num_bins: int) -> list[int]:
    """The B + 1 event indices that delimit SCER's B elementary intervals.

    They are idx(b_0) <= ... <= idx(b_{B/2-1}) <= idx(t_mid) <= idx(b_{B/2+1}) <= ... <= idx(b_B), each clamped towards
    idx(t_mid) so that slices the reference finds empty (idx(b_k) > idx(t_mid)) stay empty. Elementary interval j
    holds events cuts[j]..cuts[j+1]-1.
    """
    half = num_bins // 2
    t0 = ts[0]
    span = ts[-1] - t0
    bounds = t0 + (span / num_bins) * ops.arange(num_bins + 1, dtype=ts.dtype)
    mid_index = ops.searchsorted_left(ts, (t0 + span / 2).reshape(1))
    left_cuts = ops.minimum(ops.searchsorted_left(ts, bounds[:half]), mid_index)
    right_cuts = ops.maximum(ops.searchsorted_left(ts, bounds[half + 1:]), mid_index)
    return [int(i) for i in ops.concatenate([left_cuts, mid_index, right_cuts])]


def events_to_voxel_grid(xs: Array, ys: Array, ts: Array, ps: Array, num_bins: int,
                         sensor_size: tuple[int, int] | None = None) -> Array:
    """Classic voxel grid with bilinear splitting in time (EFNet's 2025 HighREV datasets).

    Timestamps are rescaled to τ = (B - 1)·(t - t0)/(t1 - t0) in [0, B - 1] (t0, t1: first and last event; a zero
    span counts as 1), in float64. Each event adds p·(1 - (τ - ⌊τ⌋)) to bin ⌊τ⌋ and p·(τ - ⌊τ⌋) to bin ⌊τ⌋ + 1 (when
    that bin exists) at its pixel; p is +1 for ON and -1 for OFF.

    Args:
        xs, ys, ts, ps: (N,) event arrays, numpy or torch (see the module docstring); ``ts`` sorted ascending.
        num_bins: B >= 1.
        sensor_size: (H, W) in pixels. Required.

    Returns:
        (B, H, W) float32, numpy array or torch tensor on the device of the inputs; zeros when N == 0.

    Raises:
        ValueError / TypeError: as :func:`events_to_scer` (any ``num_bins`` >= 1 is allowed).
    """
    if not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f'events_to_voxel_grid: num_bins must be an integer >= 1, got {num_bins!r}')
    ops, ts = _validated_events('events_to_voxel_grid', xs, ys, ts, ps, sensor_size)
    height, width = int(sensor_size[0]), int(sensor_size[1])
    if ts is None:
        return ops.zeros((num_bins, height, width))
    pixel = _pixel_index(ops, xs, ys, width)
    polarity = _polarity_weights(ops, ps, ops.float64)
    ts = ops.cast(ts, ops.float64)
    span = ts[-1] - ts[0]
    tau = (num_bins - 1) * (ts - ts[0]) / (span if float(span) > 0 else 1.0)
    lower = ops.floor(tau)
    fraction = tau - lower
    lower = ops.as_index(lower)
    upper_exists = (lower + 1) < num_bins
    plane = height * width
    voxel = ops.zeros((num_bins * plane,), dtype=ops.float64)
    ops.accumulate_into(voxel, lower * plane + pixel, polarity * (1 - fraction))
    ops.accumulate_into(voxel, (lower + upper_exists) * plane + pixel, polarity * fraction * upper_exists)
    return ops.cast(voxel.reshape(num_bins, height, width), ops.float32)


def _validated_events(caller: str, xs: Array, ys: Array, ts: Array, ps: Array,
                      sensor_size: tuple[int, int] | None) -> tuple[ArrayOps, Array | None]:
    """Check one window of events (kinds, shapes, sorting, coordinates, polarities).

    Returns:
        (ops, None) for N == 0, else (ops, ts): ts (N,) float32/float64 (kept if it is one of them, else converted
        to float64).
    """
    ops = array_ops_for(xs, ys, ts, ps, names=('xs', 'ys', 'ts', 'ps'))
    _check_sensor_size(caller, sensor_size)
    shapes = {name: tuple(a.shape) for name, a in zip(('xs', 'ys', 'ts', 'ps'), (xs, ys, ts, ps))}
    if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f'{caller}: xs, ys, ts, ps must be 1-D arrays of equal length, got shapes {shapes}')
    if ops.numel(ts) == 0:
        return ops, None
    height, width = sensor_size
    _check_sorted(caller, ts)
    _check_coordinate(caller, 'xs', xs, width, 'W')
    _check_coordinate(caller, 'ys', ys, height, 'H')
    _check_polarity(ops, caller, ps)
    return ops, ts if ts.dtype in (ops.float32, ops.float64) else ops.cast(ts, ops.float64)


def _pixel_index(ops: ArrayOps, xs: Array, ys: Array, width: int) -> Array:
    """(N,) int64 flat pixel index y·W + x of validated coordinates (floats truncated toward zero)."""
    pixel = ops.as_index(ys) * width  # a fresh array, so the in-place add never touches the caller's data
    pixel += ops.as_index(xs)
    return pixel


def _polarity_weights(ops: ArrayOps, ps: Array, dtype: Any) -> Array:
    """(N,) ``dtype`` polarity in {-1, +1} of validated polarities."""
    weights = ops.cast(ps > 0, dtype)
    weights *= 2
    weights -= 1
    return weights


def signed_polarity(ps: Array, caller: str = 'signed_polarity') -> Array:
    """Polarities in {0, 1}, {-1, +1} or bool mapped to {-1, +1} (0 and False mean OFF).

    Args:
        ps: (N,) numpy array or torch tensor.
        caller: names the caller in error messages.

    Returns:
        (N,) int8 in {-1, +1}, same kind and device.

    Raises:
        ValueError: values other than 0, 1, -1, or a mix of the two conventions (both 0 and -1 present).
    """
    ops = array_ops_for(ps, names=('ps',))
    _check_polarity(ops, caller, ps)
    return _polarity_weights(ops, ps, ops.int8)


def _check_polarity(ops: ArrayOps, caller: str, ps: Array) -> None:
    if ps.dtype in (np.bool_, torch.bool) or ops.numel(ps) == 0:
        return
    low, high = float(ps.min()), float(ps.max())
    is_float = ps.dtype.is_floating_point if isinstance(ps, torch.Tensor) else np.issubdtype(ps.dtype, np.floating)
    # Integers within [-1, 1] can only be -1, 0 or 1; floats need the exact test.
    valid = low >= -1 and high <= 1 and (not is_float or bool(((ps == 1) | (ps == 0) | (ps == -1)).all()))
    if not valid:
        bad = ps[(ps != 1) & (ps != 0) & (ps != -1)][:5]
        raise ValueError(f'{caller}: polarities must be in {{0, 1}} or {{-1, +1}}, found values such as '
                         f'{[float(v) for v in bad]}')
    if low < 0 and bool((ps == 0).any()):
        raise ValueError(f'{caller}: polarities mix the {{0, 1}} and {{-1, +1}} conventions (both 0 and -1 occur); '
                         'use one of them')


def _check_sensor_size(caller: str, sensor_size: Any) -> None:
    valid = (isinstance(sensor_size, (tuple, list)) and len(sensor_size) == 2
             and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in sensor_size))
    if not valid:
        raise ValueError(f'{caller}: sensor_size must be (H, W), two positive ints, got {sensor_size!r}')


def _check_sorted(caller: str, ts: Array) -> None:
    decreasing = ts[1:] < ts[:-1]
    if bool(decreasing.any()):
        i = int(decreasing.nonzero()[0][0])
        raise ValueError(f'{caller}: events must be sorted by time, but ts[{i}] = {float(ts[i])!r} > '
                         f'ts[{i + 1}] = {float(ts[i + 1])!r}; sort all four arrays by a stable argsort of ts')


def _check_coordinate(caller: str, name: str, values: Array, size: int, size_name: str) -> None:
    low, high = float(values.min()), float(values.max())
    if not (low >= 0 and high < size):  # written so that NaN fails
        raise ValueError(f'{caller}: {name} must lie in [0, {size_name}) = [0, {size}) for sensor_size, '
                         f'found values in [{low:g}, {high:g}]; check sensor_size=(H, W) and that x/y are not swapped')
