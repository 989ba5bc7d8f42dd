"""Input checks, weighting and reduction shared by the losses."""

from __future__ import annotations

import torch

REDUCTIONS = ('none', 'mean', 'sum')


def check_reduction(reduction: str, loss_name: str) -> None:
    """Raise ValueError unless ``reduction`` is one of :data:`REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{loss_name}: reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}."
        )


def check_loss_inputs(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, loss_name: str) -> None:
    """Raise ValueError when ``target`` differs from ``pred`` in shape or ``weight`` does not broadcast to it."""
    if pred.shape != target.shape:
        raise ValueError(
            f'{loss_name}: pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}.'
        )
    if weight is not None and not broadcasts_to(weight.shape, pred.shape):
        raise ValueError(
            f'{loss_name}: weight of shape {tuple(weight.shape)} does not broadcast to the loss shape '
            f'{tuple(pred.shape)}; use (N, 1, H, W) or (N, C, H, W).'
        )


def broadcasts_to(shape: torch.Size, target_shape: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target_shape``."""
    try:
        return torch.broadcast_shapes(shape, target_shape) == target_shape
    except RuntimeError:
        return False


def weighted_reduce(loss: torch.Tensor, weight: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Weight an element-wise loss and reduce it.

    Args:
        loss: (N, C, H, W) element-wise loss.
        weight: None, or a tensor broadcastable to ``loss`` (e.g. (N, 1, H, W)) of non-negative weights.
        reduction: 'none' -> weighted (N, C, H, W); 'sum' -> sum of the weighted loss;
            'mean' -> weighted mean ``sum(weight * loss) / sum(weight)`` (weight broadcast to the
            loss's shape first), the plain mean without weight.

    Returns:
        The reduced loss, a scalar tensor (or (N, C, H, W) for 'none').
    """
    weighted = loss if weight is None else loss * weight
    if reduction == 'none':
        return weighted
    if reduction == 'sum':
        return weighted.sum()
    if weight is None:
        return loss.mean()
    return weighted.sum() / weight.expand_as(loss).sum()
