"""PSNR / SSIM / 3-D SSIM against hand formulas, scikit-image and naive dense implementations."""

import math

import cv2
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from skimage import data
from skimage.metrics import structural_similarity

from basicsr.metrics import calculate_psnr, calculate_ssim, calculate_ssim_3d
from basicsr.metrics.metric_util import gaussian_kernel_1d, to_y_channel
from basicsr.utils.option_schema import Component, validate
from basicsr.utils.registry import METRIC_REGISTRY

NUMPY_METRICS = (calculate_psnr, calculate_ssim, calculate_ssim_3d)


def textured_pair(height=24, width=28, seed=0):
    """A smooth random BGR uint8 image and a noisy copy of it (so SSIM is well inside (0, 1))."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 256, (6, 7, 3)).astype(np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    noisy = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    return img, noisy


def hand_luma_bgr(img):
    b, g, r = np.moveaxis(img.astype(np.float64), 2, 0)
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def naive_ssim_map(img, img2, window, c1, c2):
    """SSIM map with a dense window over every full window position of two float64 arrays."""

    def local_mean(x):
        windows = sliding_window_view(x, window.shape)
        return np.tensordot(windows, window, axes=window.ndim)

    mu1, mu2 = local_mean(img), local_mean(img2)
    var1 = local_mean(img * img) - mu1**2
    var2 = local_mean(img2 * img2) - mu2**2
    cov = local_mean(img * img2) - mu1 * mu2
    return ((2 * mu1 * mu2 + c1) * (2 * cov + c2)) / ((mu1**2 + mu2**2 + c1) * (var1 + var2 + c2))


def naive_ssim_3d(img, img2, max_value):
    """The reference's 3-D SSIM: dense 11x11x11 Gaussian, replicate padding 5, mean over the volume."""
    g = cv2.getGaussianKernel(11, 1.5)[:, 0]
    window = g[:, None, None] * g[None, :, None] * g[None, None, :]
    padded = [np.pad(x.astype(np.float64), 5, mode='edge') for x in (img, img2)]
    return naive_ssim_map(*padded, window, (0.01 * max_value) ** 2, (0.03 * max_value) ** 2).mean()


def to_tensor(bgr_images, dtype=torch.float64):
    """(N, H, W, 3) BGR uint8 -> (N, 3, H, W) RGB in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(bgr_images[..., ::-1])).permute(0, 3, 1, 2).to(dtype) / 255.0


def test_gaussian_kernel_is_opencvs():
    np.testing.assert_allclose(gaussian_kernel_1d(), cv2.getGaussianKernel(11, 1.5)[:, 0], rtol=0, atol=1e-15)


def test_y_channel_follows_the_bt601_formula():
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [0, 0, 255], [0, 255, 0], [255, 0, 0], [10, 20, 30]]], np.uint8)
    y = to_y_channel(pixels)
    assert y.shape == (1, 6, 1) and y.dtype == np.float64
    np.testing.assert_allclose(y[0, :5, 0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-12)
    np.testing.assert_allclose(y[..., 0], hand_luma_bgr(pixels), atol=1e-12)


def test_psnr_matches_the_definition_on_hand_made_images():
    img = np.full((4, 6, 3), 100, np.uint8)
    img2 = img.copy()
    img2[0, 2, 0] = 110  # one squared error of 100 among 72 values
    assert calculate_psnr(img, img2, 0) == pytest.approx(10 * math.log10(255**2 / (100 / 72)), abs=1e-12)
    assert calculate_psnr(img, img, 0) == math.inf
    assert calculate_psnr(img, img2, 1) == math.inf  # the difference lies in the cropped border
    chw = (img.transpose(2, 0, 1), img2.transpose(2, 0, 1))
    assert calculate_psnr(*chw, 0, input_order='CHW') == calculate_psnr(img, img2, 0)
    float_imgs = (img.astype(np.float32) + 0.25, img2.astype(np.float32) + 0.25)
    assert calculate_psnr(*float_imgs, 0) == pytest.approx(calculate_psnr(img, img2, 0), abs=1e-9)


def test_psnr_on_y_channel_uses_the_luma_difference():
    img = np.full((3, 3, 3), 50, np.uint8)
    img2 = img.copy()
    img2[0, 0] = (60, 50, 50)  # +10 in blue: Y differs by 24.966 * 10 / 255 at one of 9 pixels
    mse = (24.966 * 10 / 255) ** 2 / 9
    assert calculate_psnr(img, img2, 0, test_y_channel=True) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)


def test_ssim_equals_scikit_image_gaussian_ssim():
    # skimage filters with reflect borders and averages the map after cropping 5 px: the valid region.
    img, img2 = textured_pair()
    expected = structural_similarity(
        img, img2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2
    )
    assert 0.3 < expected < 0.95
    assert calculate_ssim(img, img2, 0) == pytest.approx(expected, abs=1e-12)
    y_expected = structural_similarity(
        hand_luma_bgr(img),
        hand_luma_bgr(img2),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert calculate_ssim(img, img2, 0, test_y_channel=True) == pytest.approx(y_expected, abs=1e-12)


def test_ssim_equals_a_naive_valid_window_ssim_with_crop():
    img, img2 = textured_pair()
    window = np.outer(gaussian_kernel_1d(), gaussian_kernel_1d())
    cropped = [x[3:-3, 3:-3].astype(np.float64) for x in (img, img2)]
    maps = [naive_ssim_map(cropped[0][..., c], cropped[1][..., c], window, 6.5025, 58.5225) for c in range(3)]
    assert calculate_ssim(img, img2, 3) == pytest.approx(np.mean(maps), abs=1e-12)


def test_ssim_3d_equals_a_naive_dense_3d_ssim():
    img, img2 = textured_pair(13, 9)
    assert calculate_ssim_3d(img, img2, 0) == pytest.approx(naive_ssim_3d(img, img2, 255), abs=1e-12)
    cropped = naive_ssim_3d(img[2:-2, 2:-2], img2[2:-2, 2:-2], 255)
    assert calculate_ssim_3d(img, img2, 2) == pytest.approx(cropped, abs=1e-12)
    unit = (img / 255.0, img2 / 255.0)  # max <= 1: the reference switches to M = 1
    assert calculate_ssim_3d(*unit, 0) == pytest.approx(naive_ssim_3d(*unit, 1), abs=1e-12)
    assert calculate_ssim_3d(*unit, 0) == pytest.approx(calculate_ssim_3d(img, img2, 0), abs=1e-12)


def test_ssim_3d_on_y_channel_is_a_2d_ssim_with_replicate_borders():
    img, img2 = textured_pair(13, 9)
    window = np.outer(gaussian_kernel_1d(), gaussian_kernel_1d())
    y1, y2 = (np.pad(hand_luma_bgr(x), 5, mode='edge') for x in (img, img2))
    expected = naive_ssim_map(y1, y2, window, 6.5025, 58.5225).mean()
    assert calculate_ssim_3d(img, img2, 0, test_y_channel=True) == pytest.approx(expected, abs=1e-12)


def test_ssim_3d_matches_the_reference_float32_conv3d_within_its_precision():
    img, img2 = textured_pair(16, 20)
    g = cv2.getGaussianKernel(11, 1.5)[:, 0]
    conv = torch.nn.Conv3d(1, 1, 11, padding=5, bias=False, padding_mode='replicate')
    with torch.no_grad():
        conv.weight[0, 0] = torch.from_numpy(g[:, None, None] * g[None, :, None] * g[None, None, :])

        def blur(x):
            return conv(x[None, None])[0, 0]

        a, b = (torch.from_numpy(x.astype(np.float32)) for x in (img, img2))
        mu1, mu2 = blur(a), blur(b)
        ssim_map = ((2 * mu1 * mu2 + 6.5025) * (2 * (blur(a * b) - mu1 * mu2) + 58.5225)) / (
            (mu1**2 + mu2**2 + 6.5025) * (blur(a * a) - mu1**2 + blur(b * b) - mu2**2 + 58.5225)
        )
    assert calculate_ssim_3d(img, img2, 0) == pytest.approx(ssim_map.mean().item(), abs=1e-4)


@pytest.mark.parametrize('metric', (calculate_ssim, calculate_ssim_3d))
def test_ssim_of_identical_images_is_one(metric):
    img, _ = textured_pair()
    assert metric(img, img, 0) == pytest.approx(1.0, abs=1e-12)
    assert metric(img, img, 1, test_y_channel=True) == pytest.approx(1.0, abs=1e-12)


def test_ssim_3d_uses_range_1_for_images_with_max_1():
    dark = np.zeros((12, 12, 3), np.uint8)
    dark[3:6, 4:9] = 1  # max 1 -> M = 1
    assert calculate_ssim_3d(dark, np.roll(dark, 2, axis=1), 0) < 0.5  # with M = 255 it would score close to 1


def test_standard_and_3d_ssim_on_a_blurred_photo():
    """The README's figures: skimage's astronaut, 15-px horizontal box blur vs the sharp image."""
    sharp = np.ascontiguousarray(data.astronaut()[..., ::-1])
    blurred = cv2.blur(sharp, (15, 1))
    assert calculate_ssim(blurred, sharp, 0) == pytest.approx(0.6954, abs=5e-4)
    assert calculate_ssim_3d(blurred, sharp, 0) == pytest.approx(0.8342, abs=5e-4)


@pytest.mark.parametrize('metric', NUMPY_METRICS)
def test_numpy_metrics_reject_bad_inputs(metric):
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r'same shape, got \(16, 16, 3\) and \(16, 15, 3\)'):
        metric(img, np.zeros((16, 15, 3), np.uint8), 0)
    with pytest.raises(ValueError, match=r"input_order must be one of HWC, CHW, got 'HCW'"):
        metric(img, img, 0, input_order='HCW')
    with pytest.raises(ValueError, match=r'crop_border must be a non-negative integer .* got -1'):
        metric(img, img, -1)
    with pytest.raises(ValueError, match=r'crop_border=8 leaves 0x0 pixels of a 16x16 image'):
        metric(img, img, 8)
    with pytest.raises(ValueError, match=r'test_y_channel needs a 3-channel BGR image, got shape \(16, 16, 1\)'):
        metric(img[..., :1], img[..., :1], 0, test_y_channel=True)
    with pytest.raises(ValueError, match=r'Expected an image of shape .* got shape \(1, 16, 16, 3\)'):
        metric(img[None], img[None], 0)
    with pytest.raises(TypeError, match=r'got Tensor; convert tensors with basicsr.utils.img_util.tensor2img'):
        metric(torch.zeros(16, 16, 3), torch.zeros(16, 16, 3), 0)


def test_standard_ssim_needs_an_11_pixel_window():
    with pytest.raises(ValueError, match=r'crop_border=1 leaves 8x10 pixels .* needs at least 11x11'):
        calculate_ssim(np.zeros((10, 12, 3)), np.zeros((10, 12, 3)), 1)


def test_numpy_metrics_are_registered_with_option_schemas():
    assert METRIC_REGISTRY.keys() == sorted(metric.__name__ for metric in NUMPY_METRICS)
    for metric in NUMPY_METRICS:
        assert METRIC_REGISTRY.get(metric.__name__) is metric
    schema = Component(METRIC_REGISTRY)
    options, problems = validate({'type': 'calculate_ssim_3d', 'crop_border': 0, 'test_y_channel': False}, schema)
    assert problems == [] and options['input_order'] == 'HWC'
    _, problems = validate({'type': 'calculate_psnr', 'crop_border': -1, 'test_y_chanel': True}, schema)
    messages = sorted(str(p) for p in problems)
    assert len(messages) == 2
    assert 'crop_border: must be >= 0, got -1' in messages[0]
    assert "did you mean 'test_y_channel'" in messages[1]
    _, problems = validate({'type': 'calculate_psnr', 'crop_border': 0, 'input_order': 'HW'}, schema)
    assert 'must be one of HWC, CHW' in str(problems[0])
