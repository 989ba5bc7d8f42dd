"""PSNR and SSIM as numpy functions on images (BasicSR's API).

``f(img, img2, crop_border, input_order='HWC', test_y_channel=False) -> float`` on images on the
[0, 255] scale (uint8 or float), channels in OpenCV's BGR order. These are the metrics
``val.metrics`` can name (METRIC_REGISTRY), with the keys of :data:`NUMPY_METRIC_OPTIONS`.

Two SSIMs:

* :func:`calculate_ssim` is the standard one (Wang et al. 2004, as in BasicSR and most papers):
  per channel, 11x11 Gaussian window of sigma 1.5, only the 'valid' region where the window fits.
* :func:`calculate_ssim_3d` is what the EFNet reference code reports as "SSIM": the (H, W, C) image
  is one 3-D volume filtered by an 11x11x11 Gaussian with replicate borders, so colour channels mix.
  It gives much higher values than the standard SSIM on the same images (0.834 against 0.695 for
  skimage's 512x512 astronaut photo blurred by a 15-px horizontal box, compared with the sharp one);
  EFNet's published SSIMs (0.972 GoPro, 0.975 REBlur) are this one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from basicsr.metrics.metric_util import (
    GAUSSIAN_SIZE,
    INPUT_ORDERS,
    check_crop_border,
    check_same_shape,
    gaussian_filter_np,
    reorder_image,
    ssim_map,
    to_y_channel,
)
from basicsr.utils.option_schema import Key
from basicsr.utils.registry import METRIC_REGISTRY

PEAK = 255.0
"""Peak value of PSNR and range of SSIM's constants: images are on the [0, 255] scale."""

NUMPY_METRIC_OPTIONS = {
    'crop_border': Key(
        int,
        required=True,
        check=lambda v: None if v >= 0 else f'must be >= 0, got {v}',
        doc='pixels removed at each image border before the metric',
    ),
    'test_y_channel': Key(bool, default=False, doc='compute the metric on the BT.601 Y channel only'),
    'input_order': Key(str, default='HWC', choices=INPUT_ORDERS, doc='layout of the numpy images'),
}
"""YAML keys of the registered (numpy) metrics besides ``type``, read by the option validator."""


def _registered_metric(func: Callable) -> Callable:
    """Register a numpy metric under its name, with the YAML keys it takes."""
    func.option_schema = NUMPY_METRIC_OPTIONS
    return METRIC_REGISTRY.register()(func)


def _ssim_constants(max_value: float) -> tuple:
    """SSIM's C1 = (0.01 M)^2 and C2 = (0.03 M)^2 for a value range M."""
    return (0.01 * max_value) ** 2, (0.03 * max_value) ** 2


def _prepare_np(
    img: np.ndarray, img2: np.ndarray, crop_border: int, input_order: str, test_y_channel: bool, min_size: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Check, reorder to HWC, crop and optionally take Y of two numpy images -> float64 (H', W', C')."""
    hwc, hwc2 = reorder_image(img, input_order), reorder_image(img2, input_order)
    check_same_shape(img, img2)
    img, img2 = hwc, hwc2
    check_crop_border(crop_border, img.shape[0], img.shape[1], min_size)
    if crop_border:
        inner = (slice(crop_border, -crop_border), slice(crop_border, -crop_border))
        img, img2 = img[inner], img2[inner]
    if test_y_channel:
        return to_y_channel(img), to_y_channel(img2)
    return img.astype(np.float64), img2.astype(np.float64)


@_registered_metric
def calculate_psnr(
    img: np.ndarray, img2: np.ndarray, crop_border: int, input_order: str = 'HWC', test_y_channel: bool = False
) -> float:
    """PSNR in dB with peak 255: ``10 log10(255^2 / MSE)``, the MSE over all pixels and channels.

    Args:
        img, img2: (H, W, C) (or as ``input_order`` says, or (H, W)) uint8 or float, [0, 255], BGR.
        crop_border: pixels removed at each border of H and W first.
        input_order: 'HWC' or 'CHW'.
        test_y_channel: compare only the BT.601 Y channel (see ``metric_util.to_y_channel``).

    Returns:
        PSNR in dB, computed in float64; ``inf`` for identical images.
    """
    img, img2 = _prepare_np(img, img2, crop_border, input_order, test_y_channel)
    mse = np.mean((img - img2) ** 2)
    return float('inf') if mse == 0 else float(10.0 * np.log10(PEAK**2 / mse))


@_registered_metric
def calculate_ssim(
    img: np.ndarray, img2: np.ndarray, crop_border: int, input_order: str = 'HWC', test_y_channel: bool = False
) -> float:
    """Standard SSIM (BasicSR's): per channel, 11x11 Gaussian window (sigma 1.5), 'valid' region only.

    C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2. The SSIM map covers the (H - 10) x (W - 10) positions
    where the window fits; the result is its mean over positions and channels. Computed in float64.

    Args:
        img, img2: (H, W, C) (or as ``input_order`` says, or (H, W)) uint8 or float, [0, 255], BGR;
            at least 11x11 after cropping.
        crop_border: pixels removed at each border of H and W first.
        input_order: 'HWC' or 'CHW'.
        test_y_channel: compare only the BT.601 Y channel.

    Returns:
        SSIM in [-1, 1]; 1 for identical images.
    """
    img, img2 = _prepare_np(img, img2, crop_border, input_order, test_y_channel, min_size=GAUSSIAN_SIZE)
    blur = partial(gaussian_filter_np, axes=(0, 1), replicate=False)
    return float(ssim_map(img, img2, blur, *_ssim_constants(PEAK)).mean())


@_registered_metric
def calculate_ssim_3d(
    img: np.ndarray, img2: np.ndarray, crop_border: int, input_order: str = 'HWC', test_y_channel: bool = False
) -> float:
    """The EFNet reference's SSIM: the (H, W, C) image as one volume, 11x11x11 Gaussian, replicate borders.

    The Gaussian (sigma 1.5) runs along H, W and C (separably), with replicate padding of 5 on each
    axis, so the SSIM map has the image's shape; the result is its mean over H * W * C.
    C1 = (0.01 M)^2, C2 = (0.03 M)^2 with M = 1 if ``img`` (after cropping) has max <= 1, else 255
    (the reference's rule). With ``test_y_channel`` it is instead a 2-D SSIM of the Y channels with
    replicate borders over the full image and M = 255, as the reference does.

    Computed in float64. The reference computes it in float32 (a dense 11x11x11 conv3d), so its
    values differ from these by a few 1e-5 (3.7e-5 on the astronaut example above, on CPU).

    Args:
        img, img2: (H, W, C) (or as ``input_order`` says, or (H, W)) uint8 or float, [0, 255], BGR.
        crop_border: pixels removed at each border of H and W first.
        input_order: 'HWC' or 'CHW'.
        test_y_channel: 2-D SSIM of the BT.601 Y channel instead.

    Returns:
        SSIM in [-1, 1]; 1 for identical images.
    """
    if test_y_channel:
        img, img2 = _prepare_np(img, img2, crop_border, input_order, test_y_channel=True)
        blur = partial(gaussian_filter_np, axes=(0, 1), replicate=True)
        return float(ssim_map(img, img2, blur, *_ssim_constants(PEAK)).mean())
    img, img2 = _prepare_np(img, img2, crop_border, input_order, test_y_channel=False)
    max_value = 1.0 if img.max() <= 1 else PEAK
    blur = partial(gaussian_filter_np, axes=(0, 1, 2), replicate=True)
    return float(ssim_map(img, img2, blur, *_ssim_constants(max_value)).mean())
