"""Learning-rate schedulers selectable by ``type`` in ``train.scheduler``, linear warm-up, and the builder.

Stepping convention (BasicSR's, used by the model): ``scheduler.step()`` runs once per iteration
from iteration 2 on, so during iteration k the scheduler's ``last_epoch`` is k - 1.

Every scheduler here computes its learning rates in closed form from ``last_epoch`` and the initial
rates (``base_lrs``), never from the optimiser's current rates, so a warm-up that overwrites the
rates for its first iterations does not shift the schedule after it, and resuming only needs
``last_epoch``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

from basicsr.models.optimizers import build_from_options
from basicsr.utils.registry import SCHEDULER_REGISTRY


def _check_non_negative_ints(values: Sequence[int], name: str, owner: str, positive: bool = False) -> None:
    lowest = 1 if positive else 0
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= lowest for v in values):
        kind = 'positive' if positive else 'non-negative'
        raise ValueError(f'{owner}: {name} must be {kind} integers (iterations), got {list(values)}.')


def _check_same_length(a: Sequence, a_name: str, b: Sequence, b_name: str, owner: str) -> None:
    if len(a) != len(b):
        raise ValueError(
            f'{owner}: {b_name} needs one entry per {a_name[:-1]}: {a_name} has {len(a)} ({list(a)}), '
            f'{b_name} has {len(b)} ({list(b)}).'
        )


def _check_eta_min(eta_min: float, owner: str) -> None:
    if eta_min < 0:
        raise ValueError(f'{owner}: eta_min (the lowest learning rate) must be >= 0, got {eta_min}.')


@SCHEDULER_REGISTRY.register()
class TrueCosineAnnealingLR(CosineAnnealingLR):
    """torch's CosineAnnealingLR, under the name EFNet's option files use.

    ``lr(e) = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2`` after ``e`` steps, so
    with the model's stepping, ``lr_k = eta_min + (lr_0 - eta_min) * (1 + cos(pi * (k - 1) / T_max)) / 2``
    during iteration k (EFNet: T_max = total_iter = 200000, eta_min = 1e-7). Past T_max the cosine
    continues (the rate rises again), as in torch.

    It evaluates torch's closed form instead of torch's recursive update; the values agree to
    rounding, and a warm-up cannot skew it (see the module docstring). The state dict is torch's.

    Args:
        optimizer: the wrapped optimiser.
        T_max: iterations of the half cosine (> 0).
        eta_min: the final learning rate (>= 0).
        last_epoch: -1 to start; the step count when rebuilding for a resume.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max <= 0:
            raise ValueError(f'TrueCosineAnnealingLR: T_max must be a positive integer (iterations), got {T_max!r}.')
        _check_eta_min(eta_min, type(self).__name__)
        super().__init__(optimizer, T_max=T_max, eta_min=eta_min, last_epoch=last_epoch)

    def get_lr(self) -> list[float]:
        progress = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * progress for base_lr in self.base_lrs]


@SCHEDULER_REGISTRY.register()
class CosineAnnealingRestartLR(LRScheduler):
    """Cosine annealing with restarts (BasicSR's).

    The periods follow each other; within period i, which starts after ``s_i = periods[0] + ... +
    periods[i-1]`` steps, ``lr(e) = eta_min + restart_weights[i] * (base_lr - eta_min) *
    (1 + cos(pi * (e - s_i) / periods[i])) / 2``. Step ``e = s_i`` itself still belongs to period
    i - 1 (it ends there at eta_min); period i starts at ``s_i + 1``. After the last period the rate
    stays at eta_min.

    Args:
        optimizer: the wrapped optimiser.
        periods: steps of each cosine period (positive integers).
        restart_weights: peak factor of each period, one per period.
        eta_min: the lowest learning rate (>= 0).
        last_epoch: -1 to start; the step count when rebuilding for a resume.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        periods: Sequence[int],
        restart_weights: Sequence[float] = (1,),
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ):
        owner = type(self).__name__
        if len(periods) == 0:
            raise ValueError(f'{owner}: periods must list at least one period length.')
        _check_non_negative_ints(periods, 'periods', owner, positive=True)
        _check_same_length(periods, 'periods', restart_weights, 'restart_weights', owner)
        _check_eta_min(eta_min, owner)
        self.periods = list(periods)
        self.restart_weights = list(restart_weights)
        self.eta_min = eta_min
        self.cumulative_periods = list(accumulate(self.periods))
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        index = bisect_left(self.cumulative_periods, self.last_epoch)  # first period ending at or after it
        if index == len(self.periods):
            return [self.eta_min for _ in self.base_lrs]
        start = 0 if index == 0 else self.cumulative_periods[index - 1]
        progress = (1 + math.cos(math.pi * (self.last_epoch - start) / self.periods[index])) / 2
        weight = self.restart_weights[index]
        return [self.eta_min + weight * (base_lr - self.eta_min) * progress for base_lr in self.base_lrs]


@SCHEDULER_REGISTRY.register()
class MultiStepRestartLR(LRScheduler):
    """Step decay with restarts (BasicSR's).

    At a restart step r the rate jumps to ``base_lr * restart_weights[j]``; afterwards it is
    multiplied by ``gamma`` at each milestone m with ``r < m <= e`` (a milestone listed twice counts
    twice; one falling on the restart step itself is skipped). Before the first restart the weight
    is 1 and every milestone ``<= e`` counts.

    Args:
        optimizer: the wrapped optimiser.
        milestones: steps at which the rate is multiplied by ``gamma``.
        gamma: decay factor (> 0).
        restarts: steps at which the rate restarts.
        restart_weights: factor of ``base_lr`` at each restart, one per restart.
        last_epoch: -1 to start; the step count when rebuilding for a resume.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        restarts: Sequence[int] = (0,),
        restart_weights: Sequence[float] = (1,),
        last_epoch: int = -1,
    ):
        owner = type(self).__name__
        _check_non_negative_ints(milestones, 'milestones', owner)
        _check_non_negative_ints(restarts, 'restarts', owner)
        _check_same_length(restarts, 'restarts', restart_weights, 'restart_weights', owner)
        if gamma <= 0:
            raise ValueError(f'{owner}: gamma (the decay factor) must be > 0, got {gamma}.')
        self.milestones = list(milestones)
        self.gamma = gamma
        self.restarts = list(restarts)
        self.restart_weights = list(restart_weights)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        started = [(restart, weight) for restart, weight in zip(self.restarts, self.restart_weights, strict=True)
                   if restart <= step]
        last_restart, weight = max(started) if started else (-1, 1.0)
        decays = sum(1 for milestone in self.milestones if last_restart < milestone <= step)
        return [base_lr * weight * self.gamma**decays for base_lr in self.base_lrs]


def warmup_lr(initial_lrs: Sequence[float], current_iter: int, warmup_iter: int) -> list[float]:
    """Linear warm-up rates: ``lr * current_iter / warmup_iter`` for each initial rate.

    The model sets these as the group rates while ``current_iter < warmup_iter`` (after stepping
    the scheduler, which keeps counting); from ``warmup_iter`` on the scheduler's rates apply.

    Args:
        initial_lrs: the initial rate of each parameter group.
        current_iter: the iteration, 1-based (0 <= current_iter <= warmup_iter).
        warmup_iter: length of the warm-up in iterations (> 0).
    """
    if warmup_iter <= 0:
        raise ValueError(
            f'warmup_iter must be > 0 to warm up, got {warmup_iter}; train.warmup_iter: -1 means no warm-up.'
        )
    if not 0 <= current_iter <= warmup_iter:
        raise ValueError(f'current_iter must be in [0, warmup_iter={warmup_iter}] during warm-up, got {current_iter}.')
    return [lr * current_iter / warmup_iter for lr in initial_lrs]


def build_scheduler(
    optimizer: torch.optim.Optimizer, scheduler_opt: Mapping[str, Any], what: str = 'train.scheduler'
) -> LRScheduler:
    """Build the scheduler that ``scheduler_opt`` describes, e.g. ``{type: TrueCosineAnnealingLR, T_max: 200000}``.

    Args:
        optimizer: the optimiser whose rates it drives.
        scheduler_opt: ``type`` and the scheduler's keyword arguments. Not modified.
        what: the option path, for messages.
    """
    return build_from_options(SCHEDULER_REGISTRY, scheduler_opt, optimizer, what=what)
