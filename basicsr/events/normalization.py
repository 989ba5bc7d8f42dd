"""Normalisation of event tensors before they enter the network.

* :func:`normalize_max_abs`: ``voxel / max|voxel|``, the convention of EFNet's training data (simulated GoPro
  events, the REBlur files). Use it for data like the training data.
* :func:`normalize_robust`: the EFNet authors' recipe for real DAVIS346 recordings (their ``Davis346_inference``):
  clamp to two percentiles of all values, then divide by the largest |value| left. Unlike max-abs, one busy pixel
  does not scale all others down to nearly zero; when both percentiles are 0 (most pixels without events) the
  tensor is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from basicsr.events._array_ops import array_ops_for

Array = Any  # numpy.ndarray or torch.Tensor

ROBUST_EPSILON = 1e-6
"""Added to the divisor of the robust normalisation (the authors' value)."""


def normalize_max_abs(voxel: Array) -> Array:
    """``voxel / max|voxel|`` (the dataset-time normalisation of EFNet), values in [-1, 1].

    Unlike the reference, an all-zero (or empty) tensor gives zeros instead of NaN.

    Args:
        voxel: any shape, float, numpy array or torch tensor.

    Returns:
        Same shape, kind and device, float32. The input is not modified.
    """
    ops = array_ops_for(voxel, names=('voxel',))
    values = ops.cast(voxel, ops.float32)
    peak = float(abs(values).max()) if ops.numel(values) else 0.0
    return values / peak if peak > 0 else values * 0


def nearest_rank_percentile(values: Array, q: float) -> float:
    """The q-th percentile by nearest rank, as the authors compute it: the k-th smallest value with
    ``k = 1 + round(0.01 * q * (n - 1))`` (Python's round: halves to even).

    Args:
        values: any shape, numpy array or torch tensor, at least one element.
        q: percentile in [0, 100].
    """
    flat = values.reshape(-1)
    k = 1 + round(0.01 * q * (flat.shape[0] - 1))
    if isinstance(flat, torch.Tensor):
        return float(flat.kthvalue(k).values)
    return float(np.partition(flat, k - 1)[k - 1])


def normalize_robust(voxel: Array, percentiles: Sequence[float] = (35, 65)) -> Array:
    """The EFNet authors' normalisation for real DAVIS346 events.

    With lo, hi the ``percentiles`` of all values of ``voxel`` (:func:`nearest_rank_percentile`): if both are 0 the
    voxel is returned unchanged (as float32); otherwise it is clamped to [lo, hi] and divided by
    ``max(|min|, |max|) + 1e-6`` of the clamped tensor, so values lie in (-1, 1).

    Args:
        voxel: any shape, float, numpy array or torch tensor.
        percentiles: (low, high), 0 <= low <= high <= 100.

    Returns:
        Same shape, kind and device, float32. The input is not modified; an empty tensor is returned as is.

    Raises:
        ValueError: percentiles that are not two numbers with 0 <= low <= high <= 100.
    """
    low_q, high_q = _checked_percentiles(percentiles)
    ops = array_ops_for(voxel, names=('voxel',))
    values = ops.cast(voxel, ops.float32)
    if not ops.numel(values):
        return values
    low, high = nearest_rank_percentile(values, low_q), nearest_rank_percentile(values, high_q)
    if low == 0 and high == 0:
        return values
    clamped = values.clip(low, high)
    peak = max(abs(float(clamped.min())), abs(float(clamped.max())))
    return clamped / (peak + ROBUST_EPSILON)


def _checked_percentiles(percentiles: Sequence[float]) -> tuple[float, float]:
    values = tuple(percentiles) if isinstance(percentiles, Sequence) else ()
    if (
        len(values) != 2
        or not all(isinstance(v, (int, float)) for v in values)
        or not 0 <= values[0] <= values[1] <= 100
    ):
        raise ValueError(
            f'robust normalisation: percentiles must be two numbers 0 <= low <= high <= 100, got {percentiles!r}'
        )
    return float(values[0]), float(values[1])
