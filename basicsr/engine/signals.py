"""Graceful stop: SIGINT, SIGTERM and SIGUSR1 end training after the current iteration, with a checkpoint.

Usage in the training loop::

    with GracefulStop() as stop:
        while current_iter < total_iter:
            ...one iteration...
            if stop.should_stop():  # every iteration, on every rank
                save checkpoint and training state, log stop.describe(current_iter)
                raise SystemExit(stop.exit_code)

The handlers only record the signal; the loop acts on it between iterations, so a checkpoint is never written in
the middle of an update. A second Ctrl-C while the stop is pending gives up on saving (KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import torch
import torch.distributed as torch_dist

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR1: 143}
"""The stop signals and the exit status after each (128 + signal number, SIGUSR1 as SIGTERM: SLURM sends it as
the warning before the SIGTERM of a preemption or time limit)."""


class GracefulStop:
    """Handlers for the stop signals (:data:`EXIT_CODES`) that set a flag, while the ``with`` block runs.

    The previous handlers are put back on exit. Under torch.distributed, :meth:`should_stop` is a collective:
    every rank calls it at every iteration, and all ranks agree to stop at the same iteration when any rank got a
    signal. It takes the maximum of the ranks' signal numbers with a one-element all-reduce on a gloo group (made
    on entry, also a collective), so it costs about a hundred microseconds on the CPU and never waits on the GPU
    even under NCCL; checking every iteration keeps the stop within one iteration of the signal, which matters
    when SLURM allows only a few tens of seconds between SIGTERM and SIGKILL.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._group = None

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError('GracefulStop must be entered in the main thread (signal handlers live there)')
        if torch_dist.is_available() and torch_dist.is_initialized():
            self._group = torch_dist.new_group(backend='gloo')
        for signum in EXIT_CODES:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        if self._group is not None:
            torch_dist.destroy_process_group(self._group)
            self._group = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum is not None:  # second Ctrl-C: stop now, without saving
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        """Whether this process got a stop signal (no communication; :meth:`should_stop` is what the loop uses)."""
        return self.signum is not None

    def should_stop(self) -> bool:
        """Whether any rank got a stop signal; a collective under torch.distributed (call on every rank).

        A rank that got none adopts the signal of one that did (the largest signal number), for the exit status.
        """
        if self._group is None:
            return self.signum is not None
        flag = torch.tensor([self.signum or 0], dtype=torch.int64)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX, group=self._group)
        if flag.item() and self.signum is None:
            self.signum = int(flag.item())
        return bool(flag.item())

    @property
    def exit_code(self) -> int:
        """The exit status for the signal received: 130 for SIGINT, 143 for SIGTERM and SIGUSR1."""
        if self.signum is None:
            raise RuntimeError('no stop signal was received')
        return EXIT_CODES[signal.Signals(self.signum)]

    def describe(self, current_iter: int) -> str:
        """One log line: which signal stopped training at which iteration."""
        return (
            f'{signal.Signals(self.signum).name} received: stopped after iteration {current_iter}; '
            'resume with --auto_resume'
        )
