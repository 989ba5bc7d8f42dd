"""The few array operations whose spelling differs between numpy and torch.

The event functions of this package accept numpy arrays or torch tensors and return the same kind. Their algorithms
are written once against these operations; :func:`array_ops_for` picks the numpy or the torch flavour from the
inputs. Everything numpy and torch spell the same way (slicing, comparisons, ``.any()``, in-place arithmetic) is
used directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class NumpyOps:
    """numpy flavour. Arrays live on the CPU."""

    int8 = np.int8
    float32 = np.float32
    float64 = np.float64

    def cast(self, a: np.ndarray, dtype: Any) -> np.ndarray:
        """``a`` in ``dtype``; ``a`` itself if it already has it."""
        return a.astype(dtype, copy=False)

    def numel(self, a: np.ndarray) -> int:
        return a.size

    def as_index(self, a: np.ndarray) -> np.ndarray:
        """``a`` truncated toward zero to int64 (like Python ``int()``); ``a`` itself if it is int64."""
        return a.astype(np.int64, copy=False)

    def arange(self, n: int, dtype: Any) -> np.ndarray:
        return np.arange(n, dtype=dtype)

    def zeros(self, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def minimum(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.minimum(a, b)

    def maximum(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum(a, b)

    def floor(self, a: np.ndarray) -> np.ndarray:
        return np.floor(a)

    def sqrt(self, a: Any) -> Any:
        return np.sqrt(a)

    def concatenate(self, arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays)

    def searchsorted_left(self, sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """For each query, the first index i with sorted_values[i] >= query."""
        return np.searchsorted(sorted_values, queries, side='left')

    def accumulate_into(self, out: np.ndarray, index: np.ndarray, weights: np.ndarray) -> None:
        """``out[index] += weights`` with repeated indices summed, for a 1-D contiguous ``out``.

        Runs torch's scatter_add_ on views of the same memory: one pass without temporaries, several times
        faster than np.add.at and twice as fast as a bincount into a fresh array and an add.
        """
        TorchOps.scatter_add(
            torch.from_numpy(out),
            torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(weights)),
        )


class TorchOps:
    """torch flavour. New tensors are created on the device of ``like``."""

    int8 = torch.int8
    float32 = torch.float32
    float64 = torch.float64

    def __init__(self, like: torch.Tensor) -> None:
        self.device = like.device

    def cast(self, a: torch.Tensor, dtype: Any) -> torch.Tensor:
        """``a`` in ``dtype``; ``a`` itself if it already has it."""
        return a.to(dtype)

    def numel(self, a: torch.Tensor) -> int:
        return a.numel()

    def as_index(self, a: torch.Tensor) -> torch.Tensor:
        """``a`` truncated toward zero to int64 (like Python ``int()``); ``a`` itself if it is int64."""
        return a.long()

    def arange(self, n: int, dtype: Any) -> torch.Tensor:
        return torch.arange(n, dtype=dtype, device=self.device)

    def zeros(self, shape: tuple[int, ...], dtype: Any = torch.float32) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype, device=self.device)

    def empty(self, shape: tuple[int, ...], dtype: Any = torch.float32) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=self.device)

    def minimum(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.minimum(a, b)

    def maximum(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.maximum(a, b)

    def floor(self, a: torch.Tensor) -> torch.Tensor:
        return torch.floor(a)

    def sqrt(self, a: Any) -> Any:
        return torch.sqrt(a)

    def concatenate(self, arrays: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(arrays)

    def searchsorted_left(self, sorted_values: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """For each query, the first index i with sorted_values[i] >= query."""
        return torch.searchsorted(sorted_values, queries, side='left')

    def accumulate_into(self, out: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> None:
        """``out[index] += weights`` with repeated indices summed, for a 1-D ``out`` (one pass)."""
        self.scatter_add(out, index, weights)

    @staticmethod
    def scatter_add(out: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> None:
        """``out[index] += weights`` for 1-D tensors; scatter_add_ (on the CPU about twice as fast as index_add_)."""
        out.scatter_add_(0, index, weights.to(out.dtype))


ArrayOps = NumpyOps | TorchOps


def array_ops_for(*arrays: Any, names: tuple[str, ...]) -> ArrayOps:
    """The numpy or torch operations for ``arrays``, which must all be numpy arrays or all torch tensors.

    Args:
        arrays: the inputs of a public function.
        names: their argument names, for error messages.

    Raises:
        TypeError: if the inputs mix numpy and torch, or are neither.
        ValueError: if torch tensors are on different devices.
    """
    kinds = {name: _kind_of(a) for name, a in zip(names, arrays, strict=True)}
    if len(set(kinds.values())) != 1 or not set(kinds.values()) <= {'numpy', 'torch'}:
        found = ', '.join(f'{name}: {kind}' for name, kind in kinds.items())
        raise TypeError(f'expected all numpy arrays or all torch tensors, got {found}; convert them to one kind')
    if next(iter(kinds.values())) == 'numpy':
        return NumpyOps()
    devices = {a.device for a in arrays}
    if len(devices) > 1:
        raise ValueError(f'the tensors are on different devices {sorted(map(str, devices))}; move them to one')
    return TorchOps(arrays[0])


def _kind_of(a: Any) -> str:
    if isinstance(a, torch.Tensor):
        return 'torch'
    if isinstance(a, np.ndarray):
        return 'numpy'
    return type(a).__name__
