"""Prefetching around a DataLoader: a background-thread queue and the CPU / CUDA prefetchers of the
training loop (``prefetch_mode`` null / cpu / cuda)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

_END = object()


class _ThreadedIterator(Iterator):
    """Pull items of ``source`` on a daemon thread into a queue of ``size`` slots.

    An exception raised by ``source`` is re-raised in the consumer. A consumer that stops early
    should call :meth:`close` (also done on garbage collection) so the thread lets go of ``source``.
    """

    def __init__(self, source: Iterable, size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._fill, args=(iter(source),), daemon=True)
        self._thread.start()

    def _put(self, entry: tuple[bool, Any]) -> bool:
        """Queue ``entry``, waiting for a free slot unless asked to stop; False when stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put((True, item)):
                    return
        except Exception as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put((False, error))
            return
        self._put((True, _END))

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        ok, item = self._queue.get()
        if not ok:
            self._done = True
            raise item
        if item is _END:
            self._done = True
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the background thread (the remaining batches are dropped)."""
        self._done = True
        self._stop.set()

    def __del__(self) -> None:
        self._stop.set()


class PrefetchDataLoader(DataLoader):
    """A DataLoader whose iterator prepares up to ``num_prefetch_queue`` batches ahead on a thread.

    Useful when the main process itself spends time between batches (the workers keep filling their
    own queues; this adds collation/transfer overlap). Arguments: ``num_prefetch_queue`` (>= 1) and
    everything DataLoader takes.
    """

    def __init__(self, num_prefetch_queue: int, **kwargs: Any):
        if num_prefetch_queue < 1:
            raise ValueError(f'num_prefetch_queue must be >= 1, got {num_prefetch_queue}')
        self.num_prefetch_queue = num_prefetch_queue
        super().__init__(**kwargs)

    def __iter__(self) -> Iterator:
        return _ThreadedIterator(super().__iter__(), self.num_prefetch_queue)


class CPUPrefetcher:
    """``next()`` gives the next batch of ``loader`` (None after the last); ``reset()`` starts a new pass
    (the first ``next()`` starts one if needed: building the prefetcher starts no loader workers)."""

    def __init__(self, loader: Iterable):
        self.loader = loader
        self._iterator: Iterator | None = None

    def next(self) -> Any:
        if self._iterator is None:
            self.reset()
        try:
            return next(self._iterator)
        except StopIteration:
            return None

    def reset(self) -> None:
        self._iterator = iter(self.loader)


def _to_device(batch: Any, device: torch.device) -> Any:
    """Copy every tensor of a (nested) batch to ``device`` without blocking the host."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


class CUDAPrefetcher:
    """Copy the next batch to the GPU on a side stream while the current one is used.

    ``next()`` gives a batch whose tensors are on ``device`` (None after the last); ``reset()`` starts a
    new pass (the first ``next()`` starts one if needed). ``pin_memory`` (auto: on for CUDA) makes the copies
    truly asynchronous.

    Args:
        loader: the DataLoader.
        device: a CUDA device (default: the current one).

    Raises:
        RuntimeError: CUDA is not available (use ``prefetch_mode: cpu`` or null instead).
    """

    def __init__(self, loader: Iterable, device: torch.device | str | None = None):
        if not torch.cuda.is_available():
            raise RuntimeError(
                'prefetch_mode: cuda needs a CUDA GPU, and none is available; set prefetch_mode: cpu '
                '(or null) in the data set options'
            )
        self.device = torch.device(device if device is not None else 'cuda')
        if self.device.type != 'cuda':
            raise RuntimeError(
                f'CUDAPrefetcher needs a CUDA device, got {self.device}; set prefetch_mode: cpu '
                '(or null) for other devices'
            )
        self.loader = loader
        self._stream = torch.cuda.Stream(device=self.device)
        self._iterator: Iterator | None = None
        self._batch: Any = None

    def _preload(self) -> None:
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._batch = None
            return
        with torch.cuda.stream(self._stream):
            self._batch = _to_device(batch, self.device)

    def next(self) -> Any:
        if self._iterator is None:
            self.reset()
        torch.cuda.current_stream(self.device).wait_stream(self._stream)
        batch = self._batch
        if batch is not None:
            _record_on_current_stream(batch, self.device)
        self._preload()
        return batch

    def reset(self) -> None:
        self._iterator = iter(self.loader)
        self._preload()


def _record_on_current_stream(batch: Any, device: torch.device) -> None:
    """Tell the caching allocator that the consumer stream uses tensors made on the side stream."""
    if isinstance(batch, torch.Tensor):
        batch.record_stream(torch.cuda.current_stream(device))
    elif isinstance(batch, dict):
        for value in batch.values():
            _record_on_current_stream(value, device)
    elif isinstance(batch, (list, tuple)):
        for value in batch:
            _record_on_current_stream(value, device)
