"""Small helpers shared by the network definitions: padding to a size multiple, parameter counts,
and the channel LayerNorm of (B, C, H, W) feature maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(tensors: list[torch.Tensor | None], multiple: int) -> list[torch.Tensor | None]:
    """Pad the bottom and right of 4-D tensors so that height and width are multiples of ``multiple``.

    All tensors must share their height and width; ``None`` entries are passed through. The same
    padding mode is used for every tensor: ``reflect``, or ``replicate`` when the input is too
    small to reflect (reflect needs a pad smaller than the side it mirrors). Inputs whose size is
    already a multiple are returned unchanged (no copy).

    Args:
        tensors: (B, C_k, H, W) tensors of any floating dtype (C_k may differ), or None.
        multiple: the required divisor of H and W, >= 1.

    Returns:
        The tensors padded to (B, C_k, ceil(H / multiple) * multiple, ceil(W / multiple) * multiple).
    """
    height, width = next(t for t in tensors if t is not None).shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return list(tensors)
    mode = 'reflect' if pad_h < height and pad_w < width else 'replicate'
    return [None if t is None else F.pad(t, (0, pad_w, 0, pad_h), mode=mode) for t in tensors]


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters in ``module`` (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) feature map, separately at every pixel.

    y = (x - mean_C(x)) / sqrt(var_C(x) + 1e-5) * weight + bias, with the biased variance.
    The affine parameters live under ``body.weight`` / ``body.bias`` (shape (C,), initialised to 1
    and 0), the names EFNet checkpoints use.

    forward(x): x (B, C, H, W) float -> (B, C, H, W), same dtype. The result is a permuted view of
    a channels-last buffer (strides of ``torch.channels_last``), so turning it into per-pixel
    tokens, (B, H*W, C), or into (B, C, H*W) matrices is free.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x).permute(0, 3, 1, 2)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> the normalised pixel tokens (B, H, W, C), contiguous."""
        return F.layer_norm(
            x.permute(0, 2, 3, 1), self.body.normalized_shape, self.body.weight, self.body.bias, self.body.eps
        ).contiguous()
