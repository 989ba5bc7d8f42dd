"""Image conversion (numpy <-> torch) and OpenCV file I/O."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from basicsr.utils.img_util import imread, imwrite, tensor2img


def bgr_image(height=4, width=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- tensor2img
def test_tensor2img_chw_rgb_to_hwc_bgr_uint8_rounded():
    values = torch.tensor([100.4, 100.6, 0.0, 255.0]) / 255
    tensor = torch.stack([values.view(2, 2), values.view(2, 2) * 0, values.view(2, 2) * 0 + 1])  # R, G, B
    img = tensor2img(tensor)
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    np.testing.assert_array_equal(img[:, :, 2], [[100, 101], [0, 255]])  # R is last in BGR
    np.testing.assert_array_equal(img[:, :, 1], 0)
    np.testing.assert_array_equal(img[:, :, 0], 255)


def test_tensor2img_clamps_to_the_range():
    img = tensor2img(torch.tensor([[-0.5, 1.5], [0.2, 1.0]]))
    np.testing.assert_array_equal(img, [[0, 255], [51, 255]])


def test_tensor2img_min_max():
    img = tensor2img(torch.tensor([[-1.0, 0.0], [1.0, 3.0]]), min_max=(-1, 1))
    np.testing.assert_array_equal(img, [[0, 128], [255, 255]])


def test_tensor2img_rgb_order_kept_when_asked():
    tensor = torch.rand(3, 2, 2)
    np.testing.assert_array_equal(
        tensor2img(tensor, rgb2bgr=False, out_type=np.float32), tensor.permute(1, 2, 0).numpy()
    )


def test_tensor2img_float32_output_stays_in_zero_one():
    tensor = torch.tensor([[[-0.25, 0.25], [0.5, 2.0]]])
    img = tensor2img(tensor, out_type=np.float32)
    assert img.dtype == np.float32 and img.shape == (2, 2)
    np.testing.assert_array_equal(img, [[0.0, 0.25], [0.5, 1.0]])


def test_tensor2img_batch_of_one():
    tensor = torch.rand(1, 3, 4, 5)
    np.testing.assert_array_equal(tensor2img(tensor), tensor2img(tensor[0]))


def test_tensor2img_tiles_a_batch_into_a_grid():
    batch = torch.stack([torch.full((1, 2, 3), v) for v in (0.2, 0.4, 0.6)])  # N=3 -> 2 x 2 grid, one empty
    img = tensor2img(batch, out_type=np.float32)
    assert img.shape == (4, 6)
    expected = np.zeros((4, 6), np.float32)
    expected[:2, :3], expected[:2, 3:], expected[2:, :3] = 0.2, 0.4, 0.6
    np.testing.assert_allclose(img, expected)


def test_tensor2img_list_and_gradients():
    tensors = [torch.rand(3, 2, 2, requires_grad=True), torch.rand(1, 2, 2)]
    imgs = tensor2img(tensors)
    assert isinstance(imgs, list) and imgs[0].shape == (2, 2, 3) and imgs[1].shape == (2, 2)


def test_tensor2img_does_not_modify_its_input():
    tensor = torch.tensor([[-0.5, 1.5], [0.2, 1.0]])
    before = tensor.clone()
    tensor2img(tensor)
    assert torch.equal(tensor, before)


def test_tensor2img_rejects_a_bad_out_type():
    with pytest.raises(ValueError, match="out_type must be np.uint8 or np.float32, got <class 'numpy.float64'>"):
        tensor2img(torch.rand(3, 2, 2), out_type=np.float64)


@pytest.mark.parametrize('shape', [(4,), (1, 1, 3, 2, 2)])
def test_tensor2img_rejects_other_dimensions(shape):
    with pytest.raises(ValueError, match=re.escape(f'tensor2img expects a 2-D, 3-D or 4-D tensor, got shape {shape}')):
        tensor2img(torch.rand(shape))


def test_image_tensor_round_trip():
    img = bgr_image()
    tensor = torch.from_numpy(img[:, :, ::-1].transpose(2, 0, 1).copy()).float()  # RGB, CHW
    np.testing.assert_array_equal(tensor2img(tensor / 255.0), img)


# ---------------------------------------------------------------------------------------------- file I/O
def test_colour_png_round_trip(tmp_path):
    img = bgr_image(6, 7)
    path = tmp_path / 'sub' / 'folder' / 'img.png'
    imwrite(img, path)
    read = imread(path)
    assert read.dtype == np.uint8 and read.shape == (6, 7, 3)
    np.testing.assert_array_equal(read, img)


def test_grayscale_and_16_bit_round_trips(tmp_path):
    gray = bgr_image()[:, :, 0]
    imwrite(gray, tmp_path / 'gray.png')
    np.testing.assert_array_equal(imread(tmp_path / 'gray.png', flag='grayscale'), gray)
    assert imread(tmp_path / 'gray.png').shape == (4, 5, 3)
    deep = np.random.default_rng(3).integers(0, 65536, (4, 5), dtype=np.uint16)
    imwrite(deep, str(tmp_path / 'deep.png'))
    read = imread(tmp_path / 'deep.png', flag='unchanged')
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(read, deep)
    np.testing.assert_allclose(imread(tmp_path / 'deep.png', flag='unchanged', float32=True), deep / 65535.0, rtol=1e-6)


def test_imread_float32_scales_to_zero_one(tmp_path):
    img = bgr_image()
    imwrite(img, tmp_path / 'img.png')
    read = imread(tmp_path / 'img.png', float32=True)
    assert read.dtype == np.float32
    np.testing.assert_allclose(read, img / 255.0, rtol=1e-6)


def test_paths_with_non_ascii_characters(tmp_path):
    img = bgr_image()
    path = tmp_path / 'bild_äöü.png'
    imwrite(img, path)
    np.testing.assert_array_equal(imread(path), img)


def test_imread_missing_file(tmp_path):
    path = tmp_path / 'missing.png'
    with pytest.raises(FileNotFoundError, match=re.escape(f"Image file '{path}' does not exist.")):
        imread(path)


def test_imread_unreadable_file(tmp_path):
    path = tmp_path / 'x.png'
    path.write_bytes(b'this is not an image \x00\x01\x02')
    with pytest.raises(ValueError, match=re.escape(f"Image file '{path}' cannot be decoded")):
        imread(path)


def test_imread_unknown_flag(tmp_path):
    with pytest.raises(ValueError, match="flag must be one of color, grayscale, unchanged, got 'rgb'"):
        imread(tmp_path / 'x.png', flag='rgb')


def test_imwrite_unknown_extension(tmp_path):
    path = tmp_path / 'img.xyz'
    message = f"Cannot encode an image of shape (4, 5, 3) and dtype uint8 as '{path}'"
    with pytest.raises(ValueError, match=re.escape(message)):
        imwrite(bgr_image(), path)
    assert not path.exists()
