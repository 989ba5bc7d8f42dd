"""Learning-rate schedulers selectable by ``type`` in ``train.scheduler``, and the linear warm-up.

Each scheduler declares its option keys and rules (``option_schema``, ``option_rules``); the option file is
checked against them at load, so the constructors trust their arguments. Built with
``build(SCHEDULER_REGISTRY, scheduler_opt, optimizer=optimizer)``.

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
from typing import Any, ClassVar

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

from basicsr.utils.option_schema import Key
from basicsr.utils.registry import SCHEDULER_REGISTRY


def _iterations(positive: bool = False, non_empty: bool = False):
    """A check of a list of iteration counts (integers >= 0, or >= 1 when ``positive``)."""
    lowest = 1 if positive else 0
    kind = 'positive' if positive else 'non-negative'

    def check(values: Sequence[Any]) -> str | None:
        if non_empty and len(values) == 0:
            return 'must list at least one period length'
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= lowest for v in values):
            return f'must be {kind} integers (iterations), got {list(values)}'
        return None

    return check


def _at_least_zero(value: float) -> str | None:
    return None if value >= 0 else f'(the lowest learning rate) must be >= 0, got {value}'


def _one_per(key: str, per_key: str) -> Any:
    """A rule: ``values[key]`` has one entry per entry of ``values[per_key]``."""

    def rule(values: Mapping[str, Any]) -> list[tuple[str, str]]:
        a, b = values[per_key], values[key]
        if len(a) == len(b):
            return []
        return [
            (
                key,
                f'needs one entry per {per_key[:-1]}: {per_key} has {len(a)} ({list(a)}), {key} has {len(b)} '
                f'({list(b)})',
            )
        ]

    return rule


ETA_MIN = Key(float, default=0.0, check=_at_least_zero, doc='the lowest learning rate')


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

    option_schema: ClassVar[dict[str, Key]] = {
        'T_max': Key(
            int,
            required=True,
            check=lambda v: None if v > 0 else f'must be a positive integer (iterations), got {v}',
            doc='iterations of the half cosine',
        ),
        'eta_min': ETA_MIN,
    }

    def __init__(self, optimizer: torch.optim.Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
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

    option_schema: ClassVar[dict[str, Key]] = {
        'periods': Key(
            list, required=True, check=_iterations(positive=True, non_empty=True), doc='steps of each cosine period'
        ),
        'restart_weights': Key(list, default=[1], doc='peak factor of each period, one per period'),
        'eta_min': ETA_MIN,
    }
    option_rules = staticmethod(_one_per('restart_weights', 'periods'))

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        periods: Sequence[int],
        restart_weights: Sequence[float] = (1,),
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ):
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

    option_schema: ClassVar[dict[str, Key]] = {
        'milestones': Key(list, required=True, check=_iterations(), doc='steps at which the rate decays'),
        'gamma': Key(float, default=0.1, check=lambda v: None if v > 0 else f'(the decay factor) must be > 0, got {v}'),
        'restarts': Key(list, default=[0], check=_iterations(), doc='steps at which the rate restarts'),
        'restart_weights': Key(list, default=[1], doc='factor of the initial rate at each restart, one per restart'),
    }
    option_rules = staticmethod(_one_per('restart_weights', 'restarts'))

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        restarts: Sequence[int] = (0,),
        restart_weights: Sequence[float] = (1,),
        last_epoch: int = -1,
    ):
        self.milestones = list(milestones)
        self.gamma = gamma
        self.restarts = list(restarts)
        self.restart_weights = list(restart_weights)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        started = [
            (restart, weight)
            for restart, weight in zip(self.restarts, self.restart_weights, strict=True)
            if restart <= step
        ]
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
