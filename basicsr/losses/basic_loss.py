"""Pixel losses: L1, MSE, Charbonnier and EFNet's PSNR loss.

Every loss takes ``forward(pred, target)`` on (N, C, H, W) tensors, computes in float32
whatever the input dtype (bf16/fp16 under autocast included) and returns a float32 tensor scaled by
``loss_weight``. ``reduction`` is 'none', 'mean' or 'sum'.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from basicsr.losses.loss_util import REDUCTIONS, check_loss_inputs, reduce_loss
from basicsr.metrics.metric_util import Y_COEFFICIENTS_RGB, Y_OFFSET
from basicsr.utils.option_schema import Key
from basicsr.utils.registry import LOSS_REGISTRY

PSNR_LOSS_EPS = 1e-8
"""Added to the MSE inside PSNRLoss's logarithm (the reference's value)."""


REDUCTION = Key(str, default='mean', choices=REDUCTIONS, doc="'none', 'mean' or 'sum'")
LOSS_WEIGHT = Key(float, default=1.0, doc='factor applied to the reduced loss')


class _ElementwiseLoss(nn.Module):
    """Base of the losses computed pixel by pixel, then reduced.

    Args:
        loss_weight: factor applied to the reduced loss.
        reduction: 'none' (per-element loss, (N, C, H, W)), 'mean' or 'sum'.
    """

    option_schema: ClassVar[dict[str, Key]] = {'loss_weight': LOSS_WEIGHT, 'reduction': REDUCTION}

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = reduction

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-element loss of float32 tensors of the same shape."""
        raise NotImplementedError

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Reduced loss.

        Args:
            pred: (N, C, H, W) prediction, any floating dtype.
            target: (N, C, H, W) ground truth.

        Returns:
            float32 scalar, or (N, C, H, W) for reduction 'none'.
        """
        check_loss_inputs(pred, target, type(self).__name__)
        return self.loss_weight * reduce_loss(self.elementwise(pred.float(), target.float()), self.reduction)


@LOSS_REGISTRY.register()
class L1Loss(_ElementwiseLoss):
    """Mean absolute error: ``|pred - target|`` per element."""

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs()


@LOSS_REGISTRY.register()
class MSELoss(_ElementwiseLoss):
    """Mean squared error: ``(pred - target)^2`` per element."""

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target) ** 2


@LOSS_REGISTRY.register()
class CharbonnierLoss(_ElementwiseLoss):
    """Charbonnier (smooth L1): ``sqrt((pred - target)^2 + eps)`` per element.

    Args:
        loss_weight: factor applied to the reduced loss.
        reduction: 'none', 'mean' or 'sum'.
        eps: added under the square root; keeps the gradient finite at zero error.
    """

    option_schema: ClassVar[dict[str, Key]] = {
        **_ElementwiseLoss.option_schema,
        'eps': Key(float, default=1e-12, doc='added under the square root'),
    }

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', eps: float = 1e-12):
        super().__init__(loss_weight, reduction)
        self.eps = eps

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((pred - target) ** 2 + self.eps)


@LOSS_REGISTRY.register()
class PSNRLoss(nn.Module):
    """EFNet's training loss: minus the PSNR (peak 1) of each image, times ``loss_weight``.

    Per image n: ``L_n = loss_weight * 10 / ln(10) * ln(MSE_n + 1e-8)``, MSE_n the mean over
    (C, H, W) of the squared error (``10 log10(MSE_n)`` = -PSNR_n in dB for images in [0, 1]).
    'mean' averages L_n over the batch (the reference's behaviour), 'sum' adds them, 'none'
    returns the (N,) values. It is negative when images match well (about -30 per image early on).

    Args:
        loss_weight: factor (0.5 in EFNet's option files, one loss per output stage).
        reduction: 'none', 'mean' or 'sum' over the batch.
        toY: compare the BT.601 luma of RGB images instead, on the [0, 1] scale:
            ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255`` with R, G, B in [0, 1].
            The weights live in a buffer: move the loss to the images' device with ``.to(device)``.
    """

    option_schema: ClassVar[dict[str, Key]] = {
        'loss_weight': LOSS_WEIGHT,
        'reduction': REDUCTION,
        'toY': Key(bool, default=False, doc='compare the BT.601 luma of RGB images'),
    }

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', toY: bool = False):
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.toY = toY
        self.scale = 10.0 / math.log(10.0)
        y_weights = torch.tensor(Y_COEFFICIENTS_RGB, dtype=torch.float32).view(1, 3, 1, 1) / 255.0
        self.register_buffer('y_weights', y_weights, persistent=False)

    def to_y(self, img: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 RGB in [0, 1] -> (N, 1, H, W) BT.601 Y in [16/255, 235/255]."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f'PSNRLoss(toY=True) needs (N, 3, H, W) RGB images, got shape {tuple(img.shape)}.')
        return Y_OFFSET / 255.0 + (img * self.y_weights).sum(dim=1, keepdim=True)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of a batch.

        Args:
            pred: (N, C, H, W) prediction in [0, 1] (RGB when ``toY``), any floating dtype.
            target: (N, C, H, W) ground truth in [0, 1].

        Returns:
            float32 scalar, or (N,) for reduction 'none'.
        """
        check_loss_inputs(pred, target, type(self).__name__)
        pred, target = pred.float(), target.float()
        if self.toY:
            pred, target = self.to_y(pred), self.to_y(target)
        mse = ((pred - target) ** 2).flatten(1).mean(dim=1)
        per_image = self.loss_weight * self.scale * torch.log(mse + PSNR_LOSS_EPS)
        if self.reduction == 'none':
            return per_image
        return per_image.mean() if self.reduction == 'mean' else per_image.sum()
