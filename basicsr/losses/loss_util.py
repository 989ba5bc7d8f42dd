"""Input checks and reduction shared by the losses."""

from __future__ import annotations

import torch

REDUCTIONS = ('none', 'mean', 'sum')


def check_loss_inputs(pred: torch.Tensor, target: torch.Tensor, loss_name: str) -> None:
    """Raise ValueError when ``target`` differs from ``pred`` in shape."""
    if pred.shape != target.shape:
        raise ValueError(
            f'{loss_name}: pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}.'
        )


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce an element-wise loss: 'none' -> unchanged, 'mean' -> mean, 'sum' -> sum (one of :data:`REDUCTIONS`)."""
    if reduction == 'none':
        return loss
    return loss.sum() if reduction == 'sum' else loss.mean()
