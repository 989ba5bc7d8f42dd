"""Schedulers against closed-form learning-rate sequences, warm-up, and the optimiser/scheduler builders."""

import math

import pytest
import torch
from component_options import validated
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR

from basicsr.models.lr_scheduler import (
    CosineAnnealingRestartLR,
    MultiStepRestartLR,
    TrueCosineAnnealingLR,
    warmup_lr,
)
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.option_schema import Component, validate
from basicsr.utils.registry import OPTIMIZER_REGISTRY, SCHEDULER_REGISTRY, build

LR0 = 2e-4


def make_optimizer(lrs=(LR0,)):
    """AdamW with one parameter group per initial learning rate."""
    groups = [{'params': [torch.nn.Parameter(torch.zeros(1))], 'lr': lr} for lr in lrs]
    return torch.optim.AdamW(groups, lr=lrs[0])


def lrs_per_iteration(optimizer, scheduler, iterations):
    """Group lrs during iterations 1..iterations with the model's convention (step from iteration 2 on)."""
    seen = []
    for iteration in range(1, iterations + 1):
        if iteration > 1:
            optimizer.step()
            scheduler.step()
        seen.append([group['lr'] for group in optimizer.param_groups])
    return seen


def test_true_cosine_follows_the_efnet_formula_for_every_iteration():
    t_max, eta_min = 50, 1e-7
    optimizer = make_optimizer((LR0, LR0 / 10))
    seen = lrs_per_iteration(optimizer, TrueCosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min), 2 * t_max + 7)
    for k, lrs in enumerate(seen, start=1):
        for lr0, lr in zip((LR0, LR0 / 10), lrs, strict=True):
            expected = eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * (k - 1) / t_max)) / 2
            assert lr == pytest.approx(expected, rel=1e-12, abs=1e-20)
    assert seen[0] == [LR0, LR0 / 10]
    assert seen[t_max][0] == pytest.approx(eta_min, rel=1e-12)  # iteration T_max + 1


def test_true_cosine_agrees_with_torch_cosine_annealing():
    ours_opt, torch_opt = make_optimizer(), make_optimizer()
    ours = lrs_per_iteration(ours_opt, TrueCosineAnnealingLR(ours_opt, T_max=30, eta_min=1e-7), 75)
    theirs = lrs_per_iteration(torch_opt, CosineAnnealingLR(torch_opt, T_max=30, eta_min=1e-7), 75)
    for a, b in zip(ours, theirs, strict=True):
        assert a[0] == pytest.approx(b[0], rel=1e-10)
    assert isinstance(TrueCosineAnnealingLR(make_optimizer(), T_max=5), CosineAnnealingLR)


def test_true_cosine_resumes_from_its_state_dict_and_ignores_warmup_overrides():
    optimizer = make_optimizer()
    scheduler = TrueCosineAnnealingLR(optimizer, T_max=20, eta_min=0.0)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    optimizer.param_groups[0]['lr'] = 123.0  # e.g. a warm-up wrote its own value
    optimizer.step()
    scheduler.step()
    expected = LR0 * (1 + math.cos(math.pi * 8 / 20)) / 2
    assert optimizer.param_groups[0]['lr'] == pytest.approx(expected, rel=1e-12)

    resumed_opt = make_optimizer()
    resumed_opt.param_groups[0]['initial_lr'] = LR0
    resumed = TrueCosineAnnealingLR(resumed_opt, T_max=20, eta_min=0.0, last_epoch=6)
    resumed.load_state_dict(state)
    resumed_opt.step()
    resumed.step()
    assert resumed_opt.param_groups[0]['lr'] == pytest.approx(expected, rel=1e-12)


def test_cosine_annealing_restart_with_two_periods():
    eta_min = 1e-7
    optimizer = make_optimizer()
    scheduler = CosineAnnealingRestartLR(optimizer, periods=(10, 20), restart_weights=(1, 0.5), eta_min=eta_min)
    seen = [lrs[0] for lrs in lrs_per_iteration(optimizer, scheduler, 36)]  # seen[e] is the rate after e steps
    assert seen[0] == pytest.approx(LR0)
    assert seen[5] == pytest.approx(eta_min + (LR0 - eta_min) / 2)  # half-way through period 1
    assert seen[10] == pytest.approx(eta_min)  # end of period 1 still belongs to it
    assert seen[11] == pytest.approx(eta_min + 0.5 * (LR0 - eta_min) * (1 + math.cos(math.pi / 20)) / 2)
    assert seen[20] == pytest.approx(eta_min + 0.5 * (LR0 - eta_min) / 2)  # half-way through period 2
    assert seen[30] == pytest.approx(eta_min)
    assert seen[31:] == [eta_min] * 5  # after the last period the rate stays at eta_min
    for e in range(1, 10):
        assert seen[e] == pytest.approx(eta_min + (LR0 - eta_min) * (1 + math.cos(math.pi * e / 10)) / 2)


def test_multistep_restart_sequence():
    optimizer = make_optimizer()
    scheduler = MultiStepRestartLR(
        optimizer, milestones=(3, 6, 6, 8, 12), gamma=0.5, restarts=(0, 8), restart_weights=(1, 0.25)
    )
    seen = [lrs[0] / LR0 for lrs in lrs_per_iteration(optimizer, scheduler, 15)]
    # steps 0-2: 1; 3-5: 0.5; 6-7: 0.125 (6 listed twice); 8: restart at 0.25 (milestone 8 skipped); 12+: 0.125
    expected = [1, 1, 1, 0.5, 0.5, 0.5, 0.125, 0.125, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125, 0.125]
    assert seen == pytest.approx(expected)


def test_multistep_restart_without_restarts_is_torch_multistep():
    ours_opt, torch_opt = make_optimizer(), make_optimizer()
    ours = lrs_per_iteration(ours_opt, MultiStepRestartLR(ours_opt, milestones=(4, 9), gamma=0.1), 15)
    theirs = lrs_per_iteration(torch_opt, MultiStepLR(torch_opt, milestones=(4, 9), gamma=0.1), 15)
    assert [lrs[0] for lrs in ours] == pytest.approx([lrs[0] for lrs in theirs], rel=1e-12)


def test_warmup_lr_is_linear():
    assert warmup_lr([2e-4, 2e-5], 25, 100) == pytest.approx([5e-5, 5e-6])
    assert warmup_lr([1.0], 100, 100) == [1.0]
    with pytest.raises(ValueError, match=r'warmup_iter must be > 0 to warm up, got 0'):
        warmup_lr([1.0], 1, 0)
    with pytest.raises(ValueError, match=r'current_iter must be in \[0, warmup_iter=10\] during warm-up, got 11'):
        warmup_lr([1.0], 11, 10)


@pytest.mark.parametrize(
    ('options', 'message'),
    [
        ({'type': 'TrueCosineAnnealingLR', 'T_max': 0}, r'T_max: must be a positive integer \(iterations\), got 0'),
        ({'type': 'TrueCosineAnnealingLR', 'T_max': 10, 'eta_min': -1.0}, r'eta_min: .* must be >= 0, got -1.0'),
        ({'type': 'CosineAnnealingRestartLR', 'periods': []}, r'periods: must list at least one period length'),
        (
            {'type': 'CosineAnnealingRestartLR', 'periods': [10, 0]},
            r'periods: must be positive integers .* got \[10, 0\]',
        ),
        (
            {'type': 'CosineAnnealingRestartLR', 'periods': [10, 20], 'restart_weights': [1]},
            r'restart_weights: needs one entry per period: periods has 2 \(\[10, 20\]\), restart_weights has 1',
        ),
        (
            {'type': 'MultiStepRestartLR', 'milestones': [5], 'restarts': [0, 10]},
            r'restart_weights: needs one entry per restart: restarts has 2',
        ),
        ({'type': 'MultiStepRestartLR', 'milestones': [-5]}, r'milestones: must be non-negative integers'),
        (
            {'type': 'MultiStepRestartLR', 'milestones': [5], 'gamma': 0.0},
            r'gamma: \(the decay factor\) must be > 0, got 0.0',
        ),
    ],
)
def test_scheduler_arguments_are_checked_by_their_declared_options(options, message):
    with pytest.raises(InvalidInputError, match=message):
        validated(SCHEDULER_REGISTRY, options)


def test_build_scheduler_from_read_only_options():
    options = validated(
        SCHEDULER_REGISTRY, {'type': 'CosineAnnealingRestartLR', 'periods': [10, 20], 'restart_weights': [1, 0.5]}
    )
    scheduler = build(SCHEDULER_REGISTRY, options, optimizer=make_optimizer())
    assert isinstance(scheduler, CosineAnnealingRestartLR)
    assert scheduler.periods == [10, 20] and options['periods'] == (10, 20)
    assert SCHEDULER_REGISTRY.keys() == ['CosineAnnealingRestartLR', 'MultiStepRestartLR', 'TrueCosineAnnealingLR']


def test_scheduler_option_errors():
    with pytest.raises(InvalidInputError, match=r"No scheduler named 'CosineLR'.*TrueCosineAnnealingLR"):
        validated(SCHEDULER_REGISTRY, {'type': 'CosineLR'})
    with pytest.raises(InvalidInputError, match=r"unknown key 'tmax'.*did you mean 'T_max'"):
        validated(SCHEDULER_REGISTRY, {'type': 'TrueCosineAnnealingLR', 'T_max': 10, 'tmax': 10})
    with pytest.raises(InvalidInputError, match=r"eta_min: must be a number, got str '1e-7x'"):
        validated(SCHEDULER_REGISTRY, {'type': 'TrueCosineAnnealingLR', 'T_max': 10, 'eta_min': '1e-7x'})


def test_build_optimizer_passes_options_and_keeps_groups():
    weights, offsets = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    options = validated(OPTIMIZER_REGISTRY, {'type': 'AdamW', 'lr': 2e-4, 'weight_decay': 1e-4, 'betas': [0.9, 0.99]})
    optimizer = build(OPTIMIZER_REGISTRY, options, params=[{'params': [weights]}, {'params': [offsets], 'lr': 2e-5}])
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [group['lr'] for group in optimizer.param_groups] == [2e-4, 2e-5]
    assert optimizer.param_groups[0]['betas'] == (0.9, 0.99)
    assert optimizer.param_groups[1]['weight_decay'] == 1e-4
    assert options['type'] == 'AdamW'  # not consumed
    sgd = build(
        OPTIMIZER_REGISTRY, validated(OPTIMIZER_REGISTRY, {'type': 'SGD', 'lr': 0.1, 'momentum': 0.9}), params=[weights]
    )
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]['momentum'] == 0.9
    for name in ('Adam', 'AdamW', 'SGD'):
        assert OPTIMIZER_REGISTRY.get(name) is getattr(torch.optim, name)


def test_optimizer_option_errors():
    with pytest.raises(InvalidInputError, match=r"No optimizer named 'Adamw'.*Did you mean 'AdamW'"):
        validated(OPTIMIZER_REGISTRY, {'type': 'Adamw', 'lr': 1e-3})
    with pytest.raises(
        InvalidInputError,
        match=r"unknown key 'weight_decy' for optimizer AdamW; did you mean "
        r"'weight_decay'",
    ):
        validated(OPTIMIZER_REGISTRY, {'type': 'AdamW', 'weight_decy': 1e-4})


def test_scheduler_options_validate_against_the_signatures():
    schema = Component(SCHEDULER_REGISTRY, skip=('optimizer', 'last_epoch'))
    _, problems = validate({'type': 'TrueCosineAnnealingLR', 'T_max': 200000, 'eta_min': 1e-7}, schema)
    assert problems == []
    _, problems = validate({'type': 'TrueCosineAnnealingLR', 'T_max': 'long'}, schema)
    assert 'T_max: must be an integer' in str(problems[0])
