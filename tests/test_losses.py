"""Losses against hand formulas: reductions, toY, float32 under bf16, error messages."""

import math

import numpy as np
import pytest
import torch
from component_options import validated

from basicsr.losses import CharbonnierLoss, L1Loss, MSELoss, PSNRLoss
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.option_schema import Component, validate
from basicsr.utils.registry import LOSS_REGISTRY

ALL_LOSSES = (L1Loss, MSELoss, CharbonnierLoss, PSNRLoss)


@pytest.fixture
def images():
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 3, 5, 4, generator=generator, dtype=torch.float64)
    target = torch.rand(2, 3, 5, 4, generator=generator, dtype=torch.float64)
    return pred.float(), target.float()


ELEMENTWISE = {
    L1Loss: lambda d: np.abs(d),
    MSELoss: lambda d: d**2,
    CharbonnierLoss: lambda d: np.sqrt(d**2 + 1e-12),
}


@pytest.mark.parametrize('loss_cls', list(ELEMENTWISE))
def test_elementwise_losses_match_hand_formulas_for_every_reduction(loss_cls, images):
    pred, target = images
    per_element = ELEMENTWISE[loss_cls]((pred.double() - target.double()).numpy())
    expected = {'none': per_element, 'mean': per_element.mean(), 'sum': per_element.sum()}
    for reduction, value in expected.items():
        loss = loss_cls(loss_weight=0.7, reduction=reduction)(pred, target)
        assert loss.dtype == torch.float32
        np.testing.assert_allclose(loss.double().numpy(), 0.7 * value, rtol=1e-5)


def test_charbonnier_eps_keeps_zero_error_differentiable():
    pred = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss = CharbonnierLoss(eps=1e-6)(pred, torch.zeros(1, 1, 2, 2))
    loss.backward()
    assert loss.item() == pytest.approx(1e-3)
    assert torch.all(pred.grad == 0)


def hand_psnr_loss(pred, target, loss_weight):
    """Per-image loss_weight * 10 / ln 10 * ln(mean squared error + 1e-8), in float64."""
    diff = pred.double().numpy() - target.double().numpy()
    mse = (diff**2).reshape(len(diff), -1).mean(axis=1)
    return loss_weight * 10.0 / math.log(10.0) * np.log(mse + 1e-8)


def test_psnr_loss_matches_hand_formula_for_every_reduction(images):
    pred, target = images
    per_image = hand_psnr_loss(pred, target, 0.5)
    np.testing.assert_allclose(PSNRLoss(0.5, 'none')(pred, target).numpy(), per_image, rtol=1e-5)
    np.testing.assert_allclose(PSNRLoss(0.5, 'mean')(pred, target).item(), per_image.mean(), rtol=1e-5)
    np.testing.assert_allclose(PSNRLoss(0.5, 'sum')(pred, target).item(), per_image.sum(), rtol=1e-5)


def test_psnr_loss_is_minus_weighted_psnr_in_db():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0] += 0.1  # MSE 1e-2 -> 20 dB
    pred[1] += 0.01  # MSE 1e-4 -> 40 dB
    loss = PSNRLoss(loss_weight=0.5)(pred, target)
    assert loss.item() == pytest.approx(-0.5 * (20.0 + 40.0) / 2, abs=1e-3)
    assert PSNRLoss()(target, target).item() == pytest.approx(-80.0)  # 10 log10(1e-8)


def test_psnr_loss_to_y_uses_bt601_luma(images):
    pred, target = images

    def luma(rgb):  # RGB in [0, 1] -> Y on the [0, 1] scale
        r, g, b = rgb.double().numpy().transpose(1, 0, 2, 3)
        return torch.from_numpy((16.0 + 65.481 * r + 128.553 * g + 24.966 * b)[:, None] / 255.0)

    loss = PSNRLoss(loss_weight=1.0, reduction='none', toY=True)
    np.testing.assert_allclose(loss(pred, target).numpy(), hand_psnr_loss(luma(pred), luma(target), 1.0), rtol=1e-5)
    white = torch.ones(1, 3, 1, 1)
    assert loss.to_y(white).item() == pytest.approx(235.0 / 255.0)
    assert loss.to_y(torch.zeros(1, 3, 1, 1)).item() == pytest.approx(16.0 / 255.0)


def test_psnr_loss_y_weights_are_a_non_persistent_buffer():
    loss = PSNRLoss(toY=True)
    assert 'y_weights' in dict(loss.named_buffers())
    assert 'y_weights' not in loss.state_dict()
    assert loss.to(torch.float64).y_weights.dtype == torch.float64


@pytest.mark.parametrize('loss_cls', ALL_LOSSES)
def test_losses_compute_in_float32_for_bf16_inputs_and_under_autocast(loss_cls, images):
    pred, target = images
    pred_bf16, target_bf16 = pred.bfloat16(), target.bfloat16()
    reference = loss_cls()(pred_bf16.float(), target_bf16.float())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = loss_cls()(pred_bf16, target_bf16)
    assert loss.dtype == torch.float32
    assert loss.item() == reference.item()


@pytest.mark.parametrize('loss_cls', ALL_LOSSES)
def test_bad_reduction_lists_the_allowed_values(loss_cls):
    with pytest.raises(InvalidInputError, match=r"reduction: must be one of none, mean, sum, got 'avg'") as error:
        validated(LOSS_REGISTRY, {'type': loss_cls.__name__, 'reduction': 'avg'})
    assert loss_cls.__name__ in str(error.value)


@pytest.mark.parametrize('loss_cls', ALL_LOSSES)
def test_shape_mismatch_names_both_shapes(loss_cls):
    with pytest.raises(ValueError, match=r'same shape, got \(1, 3, 4, 4\) and \(1, 3, 4, 5\)'):
        loss_cls()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_psnr_loss_to_y_needs_three_channels():
    with pytest.raises(ValueError, match=r'toY=True\) needs \(N, 3, H, W\) RGB images, got shape \(1, 1, 4, 4\)'):
        PSNRLoss(toY=True)(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


def test_psnr_loss_gradient_is_finite():
    pred = torch.rand(2, 3, 8, 8, requires_grad=True)
    PSNRLoss(0.5)(pred, torch.rand(2, 3, 8, 8)).backward()
    assert torch.isfinite(pred.grad).all()


def test_losses_are_registered_and_their_options_validate():
    for loss_cls in ALL_LOSSES:
        assert LOSS_REGISTRY.get(loss_cls.__name__) is loss_cls
    schema = Component(LOSS_REGISTRY)
    options, problems = validate({'type': 'PSNRLoss', 'loss_weight': 0.5, 'reduction': 'mean'}, schema)
    assert problems == []
    assert options['toY'] is False
    _, problems = validate({'type': 'PSNRLoss', 'los_weight': 0.5}, schema)
    assert len(problems) == 1 and "did you mean 'loss_weight'" in problems[0].message
