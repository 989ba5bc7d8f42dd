"""Helpers shared by the image metrics: input checks, layout, the Y channel and Gaussian filtering.

Images are numpy arrays as BasicSR's metrics take them: ``(H, W, C)`` (or ``(C, H, W)``, or ``(H, W)``),
uint8 or float, values on the [0, 255] scale, colour channels in OpenCV's **BGR** order.

Every Gaussian filter here is the separable 11-tap kernel of sigma 1.5 (the one of
``cv2.getGaussianKernel(11, 1.5)``), applied axis by axis either in 'valid' mode (no padding, the
output shrinks by 10 along each filtered axis) or with replicate padding of 5 (same size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Y_OFFSET = 16.0
"""Offset of the BT.601 luma Y on the [0, 255] scale."""

Y_COEFFICIENTS_RGB = (65.481, 128.553, 24.966)
"""BT.601 luma weights of R, G, B for colour values in [0, 1], giving Y on the [0, 255] scale:
``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (so Y is in [16, 235])."""

GAUSSIAN_SIZE = 11
GAUSSIAN_SIGMA = 1.5
INPUT_ORDERS = ('HWC', 'CHW')


def gaussian_kernel_1d(size: int = GAUSSIAN_SIZE, sigma: float = GAUSSIAN_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian, the same as ``cv2.getGaussianKernel(size, sigma)[:, 0]``.

    Returns:
        (size,) float64, sums to 1.
    """
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def check_same_shape(img: np.ndarray, img2: np.ndarray) -> None:
    """Raise ValueError naming both shapes when two images differ in shape."""
    if tuple(img.shape) != tuple(img2.shape):
        raise ValueError(
            f'The two images must have the same shape, got {tuple(img.shape)} and {tuple(img2.shape)}; '
            'compare a restored image with the ground truth of the same frame and size.'
        )


def check_crop_border(crop_border: int, height: int, width: int, min_size: int = 1) -> None:
    """Raise ValueError unless ``crop_border`` is a non-negative int leaving at least ``min_size`` pixels."""
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(
            f'crop_border must be a non-negative integer (pixels removed at each border), got {crop_border!r}.'
        )
    if min(height, width) - 2 * crop_border < min_size:
        raise ValueError(
            f'crop_border={crop_border} leaves {height - 2 * crop_border}x{width - 2 * crop_border} pixels of a '
            f'{height}x{width} image; this metric needs at least {min_size}x{min_size}. Use a smaller crop_border.'
        )


def reorder_image(img: np.ndarray, input_order: str = 'HWC') -> np.ndarray:
    """View of ``img`` in (H, W, C) order.

    Args:
        img: (H, W, C) or (C, H, W) as ``input_order`` says, or (H, W) for a grey image.
        input_order: 'HWC' or 'CHW'.

    Returns:
        (H, W, C) view (C = 1 for a grey image), same dtype.
    """
    if input_order not in INPUT_ORDERS:
        raise ValueError(f'input_order must be one of {", ".join(INPUT_ORDERS)}, got {input_order!r}.')
    if not isinstance(img, np.ndarray):
        raise TypeError(
            f'Expected a numpy array, got {type(img).__name__}; convert tensors with basicsr.utils.img_util.tensor2img.'
        )
    if img.ndim == 2:
        return img[..., None]
    if img.ndim != 3:
        raise ValueError(f'Expected an image of shape (H, W, C), (C, H, W) or (H, W), got shape {img.shape}.')
    return img.transpose(1, 2, 0) if input_order == 'CHW' else img


def to_y_channel(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of a BGR image: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``.

    Args:
        img: (H, W, 3) uint8 or float, BGR order, values on the [0, 255] scale.

    Returns:
        (H, W, 1) float64 Y on the [0, 255] scale (in [16, 235]), not rounded.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'test_y_channel needs a 3-channel BGR image, got shape {img.shape}.')
    weights_bgr = np.array(Y_COEFFICIENTS_RGB[::-1], dtype=np.float64) / 255.0
    return (Y_OFFSET + img.astype(np.float64) @ weights_bgr)[..., None]


def gaussian_filter_np(img: np.ndarray, axes: Sequence[int], replicate: bool) -> np.ndarray:
    """Separable 11-tap Gaussian (sigma 1.5) along ``axes`` of a float64 array.

    Args:
        img: float64 array of any shape.
        axes: the axes to filter.
        replicate: pad each filtered axis by 5 with its edge values (output keeps the shape);
            False: 'valid' filtering (each filtered axis shrinks by 10).

    Returns:
        float64 array.
    """
    kernel = gaussian_kernel_1d()
    radius = kernel.size // 2
    for axis in axes:
        if replicate:
            pad = [(0, 0)] * img.ndim
            pad[axis] = (radius, radius)
            img = np.pad(img, pad, mode='edge')
        moved = np.moveaxis(img, axis, 0)
        length = moved.shape[0] - kernel.size + 1
        # One vectorised multiply-add per tap (11 of them) keeps memory at two image-sized arrays.
        out = kernel[0] * moved[:length]
        for tap in range(1, kernel.size):
            out += kernel[tap] * moved[tap : tap + length]
        img = np.moveaxis(out, 0, axis)
    return img


def ssim_map(img, img2, blur, c1, c2):
    """Pointwise SSIM of two images given a local-mean operator.

    Args:
        img, img2: float64 arrays of the same shape.
        blur: the Gaussian local mean, ``blur(x)`` (it may shrink the array).
        c1, c2: stabilising constants.

    Returns:
        The SSIM map, shaped like ``blur(img)``.
    """
    mu1, mu2 = blur(img), blur(img2)
    mu1_mu2 = mu1 * mu2
    mu_sq_sum = mu1 * mu1 + mu2 * mu2
    del mu1, mu2  # keep few image-sized arrays alive (about 20 MB each at 1280x720x3 in float64)
    variance_sum = blur(img * img) + blur(img2 * img2) - mu_sq_sum
    covariance = blur(img * img2) - mu1_mu2
    return ((2 * mu1_mu2 + c1) * (2 * covariance + c2)) / ((mu_sq_sum + c1) * (variance_sum + c2))
