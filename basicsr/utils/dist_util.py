"""torch.distributed set-up: ``init_dist`` for torch.distributed.launch / torchrun and slurm, the launcher check,
the seed broadcast, per-rank state gathering and the watchdog that ends the job when a rank stops responding."""

from __future__ import annotations

import functools
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist

from basicsr.utils.errors import InvalidInputError

DEFAULT_TIMEOUT_S = 600.0
"""``dist_params.timeout``: seconds a collective may wait for the other ranks before the job ends."""


def check_launcher(launcher: str, environ: Mapping[str, str]) -> None:
    """Refuse a multi-process launch (``WORLD_SIZE`` > 1, as torchrun sets it) without ``--launcher pytorch``.

    Without the launcher every process would run its own training into the same folder.

    Raises:
        InvalidInputError: ``WORLD_SIZE`` > 1 and ``launcher`` is ``'none'``.
    """
    world_size = environ.get('WORLD_SIZE', '1')
    if launcher == 'none' and world_size.strip().isdigit() and int(world_size) > 1:
        raise InvalidInputError(
            f'the environment says WORLD_SIZE={world_size} (started by torchrun or torch.distributed.launch) but '
            'the program runs with --launcher none, so every process would train on its own into the same '
            'experiment folder; add --launcher pytorch to the command line (or start a single process without '
            'torchrun)'
        )


def init_dist(launcher: str, backend: str = 'nccl', port: int = 29500, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Join the process group of this launch and return the backend used (``'nccl'`` or ``'gloo'``).

    Args:
        launcher: ``'pytorch'`` (``python -m torch.distributed.launch`` or ``torchrun``; both set
            RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT) or ``'slurm'`` (``srun``).
        backend: the backend wanted with CUDA (``nccl``); without CUDA ``gloo`` is used, since
            NCCL needs GPUs.
        port: MASTER_PORT for slurm when the environment does not set it.
        timeout_s: ``dist_params.timeout``, seconds a collective waits for the other ranks before it fails
            (NCCL's watchdog then ends the process; gloo raises in the waiting rank).
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_backend()
    if timeout_s <= 0:
        raise InvalidInputError(f'dist_params.timeout must be a positive number of seconds, got {timeout_s}')
    if not torch.cuda.is_available():
        backend = 'gloo'
    timeout = timedelta(seconds=timeout_s)
    if launcher == 'pytorch':
        _init_dist_pytorch(backend, timeout)
    elif launcher == 'slurm':
        _init_dist_slurm(backend, port, timeout)
    else:
        raise ValueError(f"launcher must be 'pytorch' or 'slurm' to start torch.distributed, got {launcher!r}")
    return torch_dist.get_backend()


def _require_env(launcher: str, names: tuple[str, ...], how: str) -> None:
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher {launcher} needs the environment variables {", ".join(missing)}; {how}')


def _init_dist_pytorch(backend: str, timeout: timedelta) -> None:
    _require_env(
        'pytorch',
        ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
        "start the program with 'torchrun --nproc_per_node=N basicsr/train.py ...' or "
        "'python -m torch.distributed.launch ...', or use --launcher none for a single process.",
    )
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if backend == 'nccl':
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    torch_dist.init_process_group(backend=backend, timeout=timeout)


def _init_dist_slurm(backend: str, port: int, timeout: timedelta) -> None:
    _require_env(
        'slurm',
        ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
        'start the program with srun, or use --launcher pytorch / none.',
    )
    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    node_list = os.environ['SLURM_NODELIST']
    addr = subprocess.run(
        ['scontrol', 'show', 'hostname', node_list], check=True, capture_output=True, text=True
    ).stdout.splitlines()[0]
    os.environ.setdefault('MASTER_PORT', str(port))
    os.environ.setdefault('MASTER_ADDR', addr)
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['RANK'] = str(proc_id)
    local_rank = int(os.environ.get('SLURM_LOCALID', proc_id % max(torch.cuda.device_count(), 1)))
    os.environ['LOCAL_RANK'] = str(local_rank)
    if backend == 'nccl':
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    torch_dist.init_process_group(backend=backend, timeout=timeout)


def get_dist_info() -> tuple[int, int]:
    """(rank, world_size) of this process; (0, 1) without torch.distributed."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def master_only(func: Callable) -> Callable:
    """Run ``func`` on rank 0 only; other ranks get None."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        rank, _ = get_dist_info()
        if rank == 0:
            return func(*args, **kwargs)
        return None

    return wrapper


def barrier() -> None:
    """Wait for all processes (no-op without torch.distributed)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def destroy_dist() -> None:
    """Leave the process group, if any (avoids a warning at exit)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def broadcast_seed(seed: int) -> int:
    """Rank 0's ``seed`` on every rank (``seed`` itself without torch.distributed).

    The value travels in an int64 tensor on the current CUDA device under NCCL (which cannot send CPU tensors),
    on the CPU otherwise.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return seed
    on_gpu = torch_dist.get_backend() == 'nccl'
    device = torch.device('cuda', torch.cuda.current_device()) if on_gpu else torch.device('cpu')
    shared = torch.tensor([seed], dtype=torch.int64, device=device)
    torch_dist.broadcast(shared, src=0)
    return int(shared.item())


def choose_run_seed(
    manual_seed: int | None, resumed_seed: int | None = None, source: str = 'the training state'
) -> int:
    """The run's base seed, the same on every rank (each rank then seeds itself with ``seed + rank``).

    A resumed run keeps the seed of its state; a new run uses ``manual_seed``, or draws one on rank 0 and
    broadcasts it when that is null (so ``manual_seed: ~`` runs can still be resumed exactly).

    Args:
        manual_seed: the option file's ``manual_seed`` (None: draw one).
        resumed_seed: the ``seed`` entry of the training state resumed from, None for a new run.
        source: the training state's path, for the message.

    Raises:
        InvalidInputError: the option file sets another seed than the state was trained with.
    """
    if resumed_seed is not None:
        if manual_seed is not None and manual_seed != resumed_seed:
            raise InvalidInputError(
                f"manual_seed is {manual_seed} in the option file but '{source}' was trained with seed "
                f'{resumed_seed}; set manual_seed: {resumed_seed} (or ~) to continue it exactly, or start a new run '
                'from its weights with path.pretrain_network_g'
            )
        return resumed_seed
    if manual_seed is not None:
        return manual_seed
    return broadcast_seed(random.SystemRandom().randint(1, 10000))


def gather_from_ranks(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order, on every rank (``[value]`` without torch.distributed).

    Used for the per-rank parts of a training state (random-number states); ``value`` must be picklable.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(gathered, value)
    return gathered


def this_rank_part(parts: list[Any], what: str, source: str) -> Any:
    """This rank's entry of a per-rank list saved by :func:`gather_from_ranks`.

    Args:
        parts: one entry per rank of the run that saved them.
        what: what the entries are, for the message (e.g. ``'random-number states'``).
        source: where they come from, for the message (e.g. the training state's path).

    Raises:
        InvalidInputError: the run that saved ``parts`` had another number of processes.
    """
    rank, world_size = get_dist_info()
    if len(parts) != world_size:
        raise InvalidInputError(
            f"'{source}' holds the {what} of {len(parts)} processes but this run has {world_size}; an exact "
            f'resume needs the same number of processes: start it with {len(parts)} (e.g. torchrun '
            f'--nproc_per_node={len(parts)}), or start a new run from its weights with path.pretrain_network_g'
        )
    return parts[rank]


class RankWatchdog:
    """A daemon thread that ends this process when another rank stops showing signs of life.

    Every ``interval_s`` each rank bumps a counter under ``basicsr/alive/<rank>`` in the rendezvous store and
    reads the others' counters. A rank whose counter has not moved for ``silence_s`` seconds (measured here,
    so clocks need not agree) is stopped (SIGSTOP, a frozen node) or dead: the watchdog logs and prints one
    ``error:`` paragraph naming it and exits this process with status 2, so the launcher ends the whole job.
    The counter is bumped by the thread, not the training loop, so long validations or checkpoint writes on
    one rank are not mistaken for a stall (the process group's own timeout covers ranks that are alive but hung).

    Args:
        silence_s: seconds of silence that end the job (the training loop passes ``dist_params.timeout / 2``,
            so a stalled rank ends the job before any collective times out with a traceback).
        interval_s: seconds between beats.
        store: the key-value store shared by the ranks (default: a client of MASTER_ADDR:MASTER_PORT).
    """

    def __init__(self, silence_s: float, interval_s: float = 1.0, store: torch_dist.Store | None = None):
        if silence_s <= interval_s:
            raise ValueError(f'RankWatchdog needs silence_s > interval_s, got {silence_s} and {interval_s}')
        self.rank, self.world_size = get_dist_info()
        self.silence_s, self.interval_s = silence_s, interval_s
        self._store = store
        self._stop = threading.Event()
        self._seen: dict[int, tuple[bytes | None, float]] = {}
        self._thread = threading.Thread(target=self._watch, name='basicsr-rank-watchdog', daemon=True)

    def _connect(self) -> torch_dist.Store:
        client = torch_dist.TCPStore(
            os.environ['MASTER_ADDR'],
            int(os.environ['MASTER_PORT']),
            is_master=False,
            timeout=timedelta(seconds=self.silence_s),
            wait_for_workers=False,
        )
        return torch_dist.PrefixStore('basicsr/alive', client)

    def start(self) -> RankWatchdog:
        """Start watching (nothing to watch in a single process)."""
        if self.world_size > 1:
            self._store = self._store or self._connect()
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (call before leaving the process group, so ranks that finish first are not reported)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self.interval_s)  # it may be waiting on a frozen store: don't wait for it

    def __enter__(self) -> RankWatchdog:
        return self.start()

    def __exit__(self, exc_type: type | None, error: BaseException | None, traceback: object) -> None:
        """On a RuntimeError (how gloo and NCCL report a failed collective, e.g. a peer that died), first look
        whether a rank went silent: if so the job ends with a message naming it instead of the traceback."""
        if isinstance(error, RuntimeError) and self._thread.is_alive():
            time.sleep(self._survey_s)  # the counters of live ranks move on meanwhile
            silent = self._silent_ranks(self._survey_s - self.interval_s)
            if silent:
                first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else ''
                self._end(
                    f'rank {", ".join(map(str, silent))} stopped answering (it died, or is stopped or frozen) '
                    f'and a collective failed ({type(error).__name__}: {first_line})',
                    pause_may_be_legitimate=False,
                )
        self.stop()

    @property
    def _survey_s(self) -> float:
        return min(5 * self.interval_s, self.silence_s)

    def _silent_ranks(self, longer_than_s: float) -> list[int]:
        now = time.monotonic()
        return [rank for rank, (_, changed) in self._seen.items() if now - changed > longer_than_s]

    def _watch(self) -> None:
        others = [rank for rank in range(self.world_size) if rank != self.rank]
        now = time.monotonic()
        self._seen = {rank: (None, now) for rank in others}  # rank -> (last counter read, when it last changed)
        beat = 0
        while not self._stop.wait(self.interval_s if beat else 0):
            beat += 1
            counters = self._exchange(beat, others)
            now = time.monotonic()
            self._seen = {
                rank: (counters[rank], now if counters[rank] != self._seen[rank][0] else self._seen[rank][1])
                for rank in others
            }
            silent = self._silent_ranks(self.silence_s)
            if silent and not self._stop.is_set():
                names = ', '.join(map(str, silent))
                self._end(
                    f'rank {names} showed no sign of life for {self.silence_s:.0f} s (the process is stopped, '
                    'frozen or dead)'
                )

    def _exchange(self, beat: int, others: list[int]) -> dict[int, bytes | None]:
        """Publish this rank's counter and read the others'; ends the job when the store does not answer.

        The store calls run on a helper thread: a TCPStore whose host process is stopped never answers, and
        its own timeout does not cover every call.
        """
        result: dict[int, bytes | None] = {}
        errors: list[Exception] = []

        def talk() -> None:
            try:
                self._store.set(str(self.rank), str(beat))
                result.update(
                    {rank: self._store.get(str(rank)) if self._store.check([str(rank)]) else None for rank in others}
                )
            except RuntimeError as error:
                errors.append(error)

        helper = threading.Thread(target=talk, daemon=True)
        helper.start()
        helper.join(self.silence_s)
        if (helper.is_alive() or errors) and not self._stop.is_set():
            cause = f' ({errors[0]})' if errors else ''
            self._end(
                f'the rendezvous store at {os.environ.get("MASTER_ADDR")}:{os.environ.get("MASTER_PORT")} '
                f'(hosted by rank 0, or by the launcher under torchrun) did not answer within '
                f'{self.silence_s:.0f} s{cause}'
            )
        return result if len(result) == len(others) else {rank: None for rank in others}

    def _end(self, cause: str, pause_may_be_legitimate: bool = True) -> None:
        """Log ``cause`` and what to do, and exit this process with status 2 (the launcher ends the others)."""
        message = (
            f'{cause}; rank {self.rank} ends the job so that the launcher stops the other ranks. Look at '
            'the log and the node of that rank'
        )
        if pause_may_be_legitimate:
            message += (
                '; if ranks legitimately pause this long, raise dist_params.timeout (twice this silence) in '
                'the option file'
            )
        logger = logging.getLogger(__name__)
        if logger.hasHandlers():  # the run's log (console and file)
            logger.error('%s.', message)
        else:
            print(f'error: {message}.', file=sys.stderr, flush=True)
        os._exit(2)
