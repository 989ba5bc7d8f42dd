"""The EMGC event mask (closing with OpenCV's border rule) and the synthetic voxel noise."""

import numpy as np
import pytest
import torch

from basicsr.events import add_voxel_noise, event_mask


def closing_by_hand(active, outside_value_for_erosion):
    """3x3 closing of a bool map; pixels outside the image are 0 for the dilation and the given value for erosion."""
    height, width = active.shape

    def filtered(image, reduce, outside):
        padded = np.full((height + 2, width + 2), outside, dtype=bool)
        padded[1:-1, 1:-1] = image
        windows = [padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
        return reduce(np.stack(windows), axis=0)

    dilated = filtered(active, np.any, False)
    return filtered(dilated, np.all, outside_value_for_erosion)


def test_event_mask_on_a_hand_made_voxel():
    voxel = np.zeros((3, 6, 7), dtype=np.float32)
    voxel[0, 2, 2] = 1.0  # two events one pixel apart in different bins: the gap between them closes
    voxel[2, 2, 4] = -2.0
    voxel[1, 5, 0] = 0.5  # an isolated event in the bottom-left corner stays
    expected = np.zeros((6, 7), dtype=np.uint8)
    expected[2, 2:5] = 255
    expected[5, 0] = 255
    mask = event_mask(voxel)
    assert mask.dtype == np.uint8 and mask.shape == (6, 7)
    np.testing.assert_array_equal(mask, expected)


def test_event_mask_uses_the_border_rule_of_the_spec():
    # Active pixels at (0, 0) and (0, 2): the closing fills (0, 1) and keeps the border pixels, because pixels
    # outside the image never change the result; padding with zeros would erase the whole top row.
    voxel = np.zeros((1, 4, 5))
    voxel[0, 0, 0] = voxel[0, 0, 2] = voxel[0, 2, 0] = 1
    mask = event_mask(voxel) > 0
    np.testing.assert_array_equal(mask, closing_by_hand(voxel[0] != 0, outside_value_for_erosion=True))
    assert mask[0, 1] and mask[1, 0] and mask[0, 0]
    assert not closing_by_hand(voxel[0] != 0, outside_value_for_erosion=False)[0].any()

    rng = np.random.default_rng(0)
    differs_from_zero_padding = 0
    for density in (0.1, 0.3, 0.6, 0.9):
        voxel = (rng.random((2, 9, 11)) < density / 2) * rng.normal(size=(2, 9, 11))
        active = (voxel != 0).any(0)
        stated = closing_by_hand(active, outside_value_for_erosion=True)
        np.testing.assert_array_equal(event_mask(voxel), stated.astype(np.uint8) * 255)
        differs_from_zero_padding += int((stated != closing_by_hand(active, False)).any())
    assert differs_from_zero_padding > 0


def test_event_mask_torch_input_and_errors():
    voxel = torch.zeros(2, 5, 5)
    voxel[1, 2, 2] = 3
    mask = event_mask(voxel)
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.uint8 and mask.shape == (5, 5)
    np.testing.assert_array_equal(mask.numpy(), event_mask(voxel.numpy()))
    assert mask.sum() == 255 and mask[2, 2] == 255
    # On a 3x3 image the dilated square covers everything and the erosion, which ignores outside pixels, keeps it.
    assert event_mask(voxel[:, 1:4, 1:4]).tolist() == [[255] * 3] * 3
    with pytest.raises(ValueError, match=r'expected a \(C, H, W\) event tensor, got shape \(3, 3\)'):
        event_mask(np.zeros((3, 3)))
    with pytest.raises(TypeError, match='got list'):
        event_mask([[[0]]])


def test_voxel_noise_touches_the_stated_share_of_entries():
    voxel = np.zeros((6, 40, 50), dtype=np.float32)
    noisy = add_voxel_noise(voxel, np.random.default_rng(0), hot_pixel_fraction=0.0)
    assert noisy.dtype == np.float32 and noisy.shape == voxel.shape
    changed = noisy != 0
    assert changed.sum() == round(0.05 * voxel.size)
    assert abs(noisy[changed].mean()) < 0.1 and abs(noisy[changed].std() - 1.0) < 0.1
    scaled = add_voxel_noise(voxel, np.random.default_rng(0), noise_fraction=0.2, noise_std=3.0, hot_pixel_fraction=0.0)
    assert (scaled != 0).sum() == round(0.2 * voxel.size) and abs(scaled[scaled != 0].std() - 3.0) < 0.2


def test_voxel_noise_hot_pixels():
    voxel = np.full((3, 720, 1280), 0.5, dtype=np.float32)
    noisy = add_voxel_noise(voxel, np.random.default_rng(1), noise_fraction=0.0)
    hot = (noisy != 0.5).any(0)
    assert hot.sum() <= int(2e-5 * 720 * 1280) == 18  # a hot value equal to 0.5 is impossible: values are integers
    assert hot.sum() == 18
    values = noisy[:, hot]
    assert (values == values[0]).all()  # one value per pixel, in every channel
    assert (values == np.round(values)).all() and np.abs(values).max() <= 20

    many = add_voxel_noise(
        np.full((2, 100, 100), 0.5),
        np.random.default_rng(2),
        noise_fraction=0.0,
        hot_pixel_fraction=0.5,
        hot_pixel_range=3,
    )
    hot_values = many[0][(many != 0.5).any(0)]
    assert set(np.unique(hot_values)) <= set(range(-3, 4)) and len(np.unique(hot_values)) == 7


def test_voxel_noise_is_deterministic_and_leaves_its_input_alone():
    voxel = np.random.default_rng(5).normal(size=(4, 30, 30))
    original = voxel.copy()
    first = add_voxel_noise(voxel, np.random.default_rng(7), hot_pixel_fraction=0.01)
    second = add_voxel_noise(voxel, np.random.default_rng(7), hot_pixel_fraction=0.01)
    other = add_voxel_noise(voxel, np.random.default_rng(8), hot_pixel_fraction=0.01)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    np.testing.assert_array_equal(voxel, original)


def test_voxel_noise_errors():
    rng = np.random.default_rng(0)
    voxel = np.zeros((2, 3, 3))
    with pytest.raises(TypeError, match='rng must be a numpy Generator'):
        add_voxel_noise(voxel, np.random.RandomState(0))
    with pytest.raises(TypeError, match='voxel must be a numpy array, got Tensor'):
        add_voxel_noise(torch.zeros(2, 3, 3), rng)
    with pytest.raises(ValueError, match=r'expected a \(C, H, W\) voxel'):
        add_voxel_noise(np.zeros((3, 3)), rng)
    with pytest.raises(ValueError, match=r'noise_fraction must lie in \[0, 1\], got 1.5'):
        add_voxel_noise(voxel, rng, noise_fraction=1.5)
    with pytest.raises(ValueError, match='noise_std and hot_pixel_range must be >= 0'):
        add_voxel_noise(voxel, rng, noise_std=-1)
