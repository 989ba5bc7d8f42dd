"""The event mask that gates EFNet's EMGC module (the reference's ``voxel2mask``)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

_CLOSING_KERNEL = np.ones((3, 3), dtype=np.uint8)


def event_mask(voxel: Any) -> Any:
    """Pixels where events occurred, closed with a 3x3 square: 255 = events, 0 = none.

    A pixel is active if any channel of ``voxel`` is non-zero there. The active map is then closed once (dilation,
    then erosion) with a 3x3 rectangular structuring element, using OpenCV's default border rule: pixels outside
    the image never change the result (the dilation treats them as 0, the erosion as 255). A closing that pads with
    zeros instead would erase active pixels along the image border.

    Args:
        voxel: (C, H, W) event tensor (e.g. SCER), any real dtype; numpy array or torch tensor (any device; the
            closing runs on the CPU).

    Returns:
        (H, W) uint8 in {0, 255}: numpy array for numpy input, torch tensor on the input's device for torch input.

    Raises:
        ValueError: if ``voxel`` is not 3-D.
        TypeError: if it is neither a numpy array nor a torch tensor.
    """
    _check_voxel('event_mask', voxel)
    active = (voxel != 0).any(0)
    active = active.cpu().numpy() if isinstance(voxel, torch.Tensor) else active
    closed = cv2.morphologyEx(active.astype(np.uint8) * 255, cv2.MORPH_CLOSE, _CLOSING_KERNEL, iterations=1)
    return torch.from_numpy(closed).to(voxel.device) if isinstance(voxel, torch.Tensor) else closed


def nonzero_mask(voxel: Any) -> Any:
    """The EFNet authors' mask for real DAVIS346 events: 255 where the sum of ``voxel`` over its channels is
    non-zero, 0 elsewhere (no closing; a pixel whose channels cancel out counts as no events).

    Args:
        voxel: (C, H, W) event tensor, any real dtype; numpy array or torch tensor.

    Returns:
        (H, W) uint8 in {0, 255}, same kind and device as ``voxel``.

    Raises:
        ValueError: if ``voxel`` is not 3-D.
        TypeError: if it is neither a numpy array nor a torch tensor.
    """
    _check_voxel('nonzero_mask', voxel)
    active = voxel.sum(0) != 0
    return active.to(torch.uint8) * 255 if isinstance(voxel, torch.Tensor) else active.astype(np.uint8) * 255


def _check_voxel(caller: str, voxel: Any) -> None:
    """A mask's input must be a (C, H, W) numpy array or torch tensor (TypeError / ValueError otherwise)."""
    if not isinstance(voxel, (np.ndarray, torch.Tensor)):
        raise TypeError(f'{caller}: expected a numpy array or torch tensor, got {type(voxel).__name__}')
    if voxel.ndim != 3:
        raise ValueError(f'{caller}: expected a (C, H, W) event tensor, got shape {tuple(voxel.shape)}')
