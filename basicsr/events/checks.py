"""The checks of event arrays, one set shared by the representations (numpy or torch) and the readers and writers.

Events are four 1-D arrays of equal length N: ``xs``, ``ys`` pixel column and row (0 <= x < W, 0 <= y < H),
``ts`` timestamps (finite, sorted ascending, ties allowed), ``ps`` polarity in {0, 1} or {-1, +1} (bool read as
{0, 1}). Every error is an :class:`~basicsr.utils.errors.InvalidInputError` (a ValueError) that starts with
``where`` (the function, or ``events file '<path>'``) and says what was found.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from basicsr.events._array_ops import ArrayOps, array_ops_for
from basicsr.utils.errors import InvalidInputError

Array = Any  # numpy.ndarray or torch.Tensor
EVENT_KEYS = ('xs', 'ys', 'ts', 'ps')


def check_sensor_size(where: str, sensor_size: Any) -> None:
    """``sensor_size`` must be (H, W), two positive ints."""
    valid = (
        isinstance(sensor_size, (tuple, list))
        and len(sensor_size) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in sensor_size)
    )
    if not valid:
        raise InvalidInputError(f'{where}: sensor_size must be (H, W), two positive ints, got {sensor_size!r}')


def check_equal_lengths(where: str, xs: Array, ys: Array, ts: Array, ps: Array) -> None:
    """The four arrays must be 1-D of one length."""
    shapes = {name: tuple(np.shape(a)) for name, a in zip(EVENT_KEYS, (xs, ys, ts, ps))}
    if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) != 1:
        raise InvalidInputError(f'{where}: xs, ys, ts, ps must be 1-D arrays of equal length, got shapes {shapes}')


def _is_floating(values: Array) -> bool:
    if isinstance(values, torch.Tensor):
        return values.dtype.is_floating_point
    return np.issubdtype(values.dtype, np.floating)


def _min_max(values: Array) -> tuple[float, float]:
    """(min, max) of a non-empty array as Python floats; one pass for torch tensors."""
    if isinstance(values, torch.Tensor):
        low, high = torch.aminmax(values)
        return float(low), float(high)
    return float(values.min()), float(values.max())


def check_times(where: str, ts: Array) -> None:
    """Timestamps must be finite and sorted ascending (ties allowed); the first offending index is named.

    One pass in the common case: ``ts[i + 1] >= ts[i]`` is false at every decrease and next to every NaN, and a
    sorted array holds an infinity only if one of its ends does.
    """
    if ts.shape[0] == 0:
        return
    ordered = bool((ts[1:] >= ts[:-1]).all())
    if ordered and (not _is_floating(ts) or (math.isfinite(float(ts[0])) and math.isfinite(float(ts[-1])))):
        return
    if _is_floating(ts):
        bad = ~(torch.isfinite(ts) if isinstance(ts, torch.Tensor) else np.isfinite(ts))
        if bool(bad.any()):
            i = int(bad.nonzero()[0][0])
            raise InvalidInputError(
                f'{where}: timestamps must be finite numbers, found ts[{i}] = {float(ts[i])!r} '
                f'({int(bad.sum())} of {ts.shape[0]} events); drop or repair those events'
            )
    i = int((ts[1:] < ts[:-1]).nonzero()[0][0])
    raise InvalidInputError(
        f'{where}: events must be sorted by time, but ts[{i}] = {float(ts[i])!r} > '
        f'ts[{i + 1}] = {float(ts[i + 1])!r}; sort all four arrays by a stable argsort of ts'
    )


def check_coordinates(where: str, xs: Array, ys: Array, sensor_size: tuple[int, int]) -> None:
    """0 <= x < W and 0 <= y < H for every event (NaN fails); empty arrays pass."""
    if xs.shape[0] == 0:
        return
    height, width = sensor_size
    for name, values, size, size_name in (('xs', xs, width, 'W'), ('ys', ys, height, 'H')):
        low, high = _min_max(values)
        if not (low >= 0 and high < size):  # written so that NaN fails
            raise InvalidInputError(
                f'{where}: {name} must lie in [0, {size_name}) = [0, {size}) for sensor size (H, W) = '
                f'{tuple(sensor_size)}, found values in [{low:g}, {high:g}]; check the sensor size and that x and y '
                'are not swapped'
            )


def check_integer_coordinates(where: str, xs: Array, ys: Array) -> None:
    """Float coordinates must hold whole numbers (pixel indices)."""
    for name, values in (('xs', xs), ('ys', ys)):
        if values.size and _is_floating(values) and np.any(values != np.round(values)):
            raise InvalidInputError(f'{where}: {name} must hold integer pixel coordinates, found non-integer values')


def check_polarity(ops: ArrayOps, where: str, ps: Array) -> None:
    """Polarities in {0, 1} or in {-1, +1} (bool passes); a mix of 0 and -1 is refused."""
    if ps.dtype in (np.bool_, torch.bool) or ops.numel(ps) == 0:
        return
    low, high = _min_max(ps)
    # Integers within [-1, 1] can only be -1, 0 or 1; floats need the exact test.
    valid = low >= -1 and high <= 1 and (not _is_floating(ps) or bool(((ps == 1) | (ps == 0) | (ps == -1)).all()))
    if not valid:
        bad = ps[(ps != 1) & (ps != 0) & (ps != -1)][:5]
        raise InvalidInputError(
            f'{where}: polarities must be in {{0, 1}} or {{-1, +1}}, found values such as {[float(v) for v in bad]}'
        )
    if low < 0 and bool((ps == 0).any()):
        raise InvalidInputError(
            f'{where}: polarities mix the {{0, 1}} and {{-1, +1}} conventions (both 0 and -1 occur); use one of them'
        )


def polarity_weights(ops: ArrayOps, ps: Array, dtype: Any, sign: int = 1) -> Array:
    """(N,) ``dtype`` polarity in {-1, +1} of checked polarities (0 and False mean OFF), times ``sign`` (+1 or -1)."""
    weights = ops.cast(ps > 0, dtype)
    weights *= 2 * sign
    weights -= sign
    return weights


def signed_polarity(ps: Array, caller: str = 'signed_polarity') -> Array:
    """Polarities in {0, 1}, {-1, +1} or bool mapped to {-1, +1} (0 and False mean OFF).

    Args:
        ps: (N,) numpy array or torch tensor.
        caller: names the caller (or the file) in error messages.

    Returns:
        (N,) int8 in {-1, +1}, same kind and device.

    Raises:
        InvalidInputError (a ValueError): values other than 0, 1, -1, or a mix of the two conventions.
    """
    ops = array_ops_for(ps, names=('ps',))
    check_polarity(ops, caller, ps)
    return polarity_weights(ops, ps, ops.int8)


def validated_events(
    where: str, xs: Array, ys: Array, ts: Array, ps: Array, sensor_size: tuple[int, int] | None
) -> tuple[ArrayOps, Array | None]:
    """Check one window of events for a representation: kinds, shapes, times, coordinates, polarities.

    Returns:
        (ops, None) for N == 0, else (ops, ts): ts (N,) float32/float64 (kept if it is one of them, else converted
        to float64).

    Raises:
        TypeError: arrays of mixed kinds (numpy and torch) or not arrays.
        InvalidInputError (a ValueError): any other problem, named.
    """
    ops = array_ops_for(xs, ys, ts, ps, names=EVENT_KEYS)
    check_sensor_size(where, sensor_size)
    check_equal_lengths(where, xs, ys, ts, ps)
    if ops.numel(ts) == 0:
        return ops, None
    check_times(where, ts)
    check_coordinates(where, xs, ys, sensor_size)
    check_polarity(ops, where, ps)
    return ops, ts if ts.dtype in (ops.float32, ops.float64) else ops.cast(ts, ops.float64)


def normalised_events(raw: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Numpy events in the reader convention: xs, ys int32, ts float64, ps int8 in {-1, +1}.

    Checks lengths, whole-number coordinates and polarities (not times or the sensor: see :func:`check_events`).
    """
    check_equal_lengths(where, *(raw[key] for key in EVENT_KEYS))
    check_integer_coordinates(where, raw['xs'], raw['ys'])
    return {
        'xs': raw['xs'].astype(np.int32),
        'ys': raw['ys'].astype(np.int32),
        'ts': raw['ts'].astype(np.float64),
        'ps': signed_polarity(raw['ps'], where),
    }


def check_events(events: dict[str, np.ndarray], sensor_size: tuple[int, int], where: str) -> None:
    """Finite sorted timestamps and coordinates inside the sensor, for events in the reader convention."""
    check_times(where, events['ts'])
    check_coordinates(where, events['xs'], events['ys'], sensor_size)
