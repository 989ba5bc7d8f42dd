"""Dense event tensors: SCER (EFNet's Symmetric Cumulative Event Representation) and its normalisation.

Every function accepts numpy arrays or torch tensors (all four event arrays of one kind, on one device) and returns
the same kind. Events are four 1-D arrays of equal length N (checked by :mod:`basicsr.events.checks`):

* ``xs``, ``ys``: pixel column and row, integers (floats are truncated toward zero, like the reference's ``int()``),
  0 <= x < W and 0 <= y < H;
* ``ts``: timestamps, finite and sorted ascending (ties allowed), any unit;
* ``ps``: polarity, either {0, 1} (0 means OFF) or {-1, +1}; bool is read as {0, 1}.

Timestamps must be precise in their dtype: absolute camera clocks (e.g. 1.6e9 s from an AEDAT4 file) lose all
sub-second resolution in float32; subtract a reference time before converting such timestamps to float32.
"""

from __future__ import annotations

from typing import Any

from basicsr.events._array_ops import ArrayOps
from basicsr.events.checks import polarity_weights, validated_events

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
    since events are sorted), and each run is accumulated once (scatter-add) into a running image that walks outward
    from t_mid, so that it holds each channel in turn (a cumulative sum over the bins).

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
        raise ValueError(
            f'events_to_scer: num_bins must be an even integer >= 2 (SCER splits the window into two '
            f'symmetric halves), got {num_bins!r}'
        )
    ops, ts = validated_events('events_to_scer', xs, ys, ts, ps, sensor_size)
    height, width = int(sensor_size[0]), int(sensor_size[1])
    if ts is None:
        return ops.zeros((num_bins + 1 if keep_middle else num_bins, height, width))

    # Events are sorted, so each elementary interval is a contiguous run of events. Each run is accumulated once
    # (one pass over the events) into a running image, which walks outward from t_mid: after interval j it holds
    # channel j (a cumulative sum over the bins, with the left half's polarities negated as they are added).
    half = num_bins // 2
    cuts = _scer_cuts(ops, ts, num_bins)
    middle = int(keep_middle)
    channel_of = list(range(half)) + [k + middle for k in range(half, num_bins)]
    scer = ops.empty((num_bins + middle, height * width))
    running = ops.empty((height * width,))
    for intervals, sign in ((range(half, num_bins), 1), (range(half - 1, -1, -1), -1)):
        running[:] = 0
        for j in intervals:
            run = slice(cuts[j], cuts[j + 1])
            if run.stop > run.start:
                ops.accumulate_into(
                    running,
                    _pixel_index(ops, xs[run], ys[run], width),
                    polarity_weights(ops, ps[run], ops.float32, sign),
                )
            scer[channel_of[j]] = running
    if keep_middle:
        scer[half] = 0
    return scer.reshape(num_bins + middle, height, width)


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
    right_cuts = ops.maximum(ops.searchsorted_left(ts, bounds[half + 1 :]), mid_index)
    return [int(i) for i in ops.concatenate([left_cuts, mid_index, right_cuts])]


def _pixel_index(ops: ArrayOps, xs: Array, ys: Array, width: int) -> Array:
    """(N,) int64 flat pixel index y·W + x of validated coordinates (floats truncated toward zero)."""
    pixel = ops.as_index(ys) * width  # a fresh array, so the in-place add never touches the caller's data
    pixel += ops.as_index(xs)
    return pixel
