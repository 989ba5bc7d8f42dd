"""Image conversion and file I/O with OpenCV and torch only (no torchvision)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

_READ_FLAGS = {'color': cv2.IMREAD_COLOR, 'grayscale': cv2.IMREAD_GRAYSCALE, 'unchanged': cv2.IMREAD_UNCHANGED}


def tensor2img(tensor, rgb2bgr: bool = True, out_type=np.uint8, min_max: tuple[float, float] = (0, 1)):
    """Tensor(s) -> HWC numpy image(s), clamped to ``min_max`` and rescaled to [0, 1] first.

    Args:
        tensor: (C, H, W), (1, C, H, W) or (H, W) tensor, or a list of them; float values in
            ``min_max``. A 4-D tensor with more than one image is tiled into a grid.
        rgb2bgr: swap the channel order of 3-channel images (for cv2.imwrite).
        out_type: ``np.uint8`` (values x255, rounded) or ``np.float32`` (values in [0, 1]).

    Returns:
        (H, W, C) or (H, W) array, or a list of them.
    """
    if out_type not in (np.uint8, np.float32):
        raise ValueError(f'out_type must be np.uint8 or np.float32, got {out_type}')

    def convert(t: torch.Tensor) -> np.ndarray:
        t = t.detach().float().cpu().clamp(*min_max)
        t = (t - min_max[0]) / (min_max[1] - min_max[0])
        if t.dim() == 4:
            t = _tile(t)
        if t.dim() == 3:
            img = t.numpy().transpose(1, 2, 0)
            if img.shape[2] == 1:
                img = img[:, :, 0]
            elif img.shape[2] == 3 and rgb2bgr:
                img = img[:, :, ::-1]
        elif t.dim() == 2:
            img = t.numpy()
        else:
            raise ValueError(f'tensor2img expects a 2-D, 3-D or 4-D tensor, got shape {tuple(t.shape)}')
        if out_type == np.uint8:
            return np.ascontiguousarray((img * 255.0).round().astype(np.uint8))
        return np.ascontiguousarray(img.astype(np.float32))

    if isinstance(tensor, list):
        return [convert(t) for t in tensor]
    return convert(tensor)


def _tile(batch: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (C, rows*H, cols*W) grid, about square."""
    n, c, h, w = batch.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = batch.new_zeros(c, rows * h, cols * w)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, r * h : (r + 1) * h, q * w : (q + 1) * w] = batch[i]
    return grid


def imread(path: str | Path, flag: str = 'color', float32: bool = False) -> np.ndarray:
    """Read an image file with OpenCV (BGR order for colour).

    Args:
        flag: 'color', 'grayscale' or 'unchanged'.
        float32: return float32 in [0, 1] instead of the stored dtype.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: OpenCV cannot decode the file.
    """
    if flag not in _READ_FLAGS:
        raise ValueError(f'flag must be one of {", ".join(_READ_FLAGS)}, got {flag!r}')
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image file '{path}' does not exist.")
    img = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), _READ_FLAGS[flag])
    if img is None:
        raise ValueError(f"Image file '{path}' cannot be decoded (not an image, or a format OpenCV cannot read).")
    if float32:
        img = img.astype(np.float32) / np.float32(np.iinfo(img.dtype).max if img.dtype.kind == 'u' else 1.0)
    return img


def imwrite(img: np.ndarray, path: str | Path, params: list[int] | None = None, auto_mkdir: bool = True) -> None:
    """Write an (H, W[, C]) image (BGR order for colour) with OpenCV.

    Raises:
        ValueError: the extension is not an image format OpenCV can encode, or encoding failed.
    """
    path = Path(path)
    if auto_mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok, encoded = cv2.imencode(path.suffix or '.png', img, params or [])
    except cv2.error:
        ok = False
    if not ok:
        raise ValueError(f"Cannot encode an image of shape {img.shape} and dtype {img.dtype} as '{path}'.")
    encoded.tofile(str(path))
