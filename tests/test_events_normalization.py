"""Event normalisations (max-abs, the authors' robust percentiles) and the authors' non-zero mask, by hand."""

import numpy as np
import pytest
import torch

from basicsr.events import nearest_rank_percentile, nonzero_mask, normalize_max_abs, normalize_robust


def test_normalize_max_abs():
    voxel = np.array([[1.0, -4.0], [0.0, 2.0]])
    np.testing.assert_allclose(normalize_max_abs(voxel), [[0.25, -1], [0, 0.5]])
    np.testing.assert_array_equal(voxel, [[1.0, -4.0], [0.0, 2.0]])
    zeros = normalize_max_abs(np.zeros((2, 2)))
    assert zeros.dtype == np.float32 and not np.isnan(zeros).any() and not zeros.any()
    assert normalize_max_abs(torch.zeros(3)).tolist() == [0, 0, 0]
    np.testing.assert_allclose(normalize_max_abs(torch.tensor([1.0, -4.0])).numpy(), [0.25, -1])
    assert normalize_max_abs(np.zeros((0, 3))).shape == (0, 3)


def test_nearest_rank_rounds_halves_to_even_as_the_authors_do():
    values = np.array([9, -3, 0.25, -1, 2, -5, 1, 0, -0.5, 3, -2.0])  # n = 11, sorted: -5 -3 -2 -1 -0.5 0 0.25 ...
    # q = 35: k = 1 + round(3.5) = 5 -> -0.5; q = 65: k = 1 + round(6.5) = 7 -> 0.25 (6.5 rounds to 6)
    assert nearest_rank_percentile(values, 35) == -0.5
    assert nearest_rank_percentile(values, 65) == 0.25
    assert nearest_rank_percentile(torch.tensor(values), 65) == 0.25
    assert nearest_rank_percentile(values, 0) == -5 and nearest_rank_percentile(values, 100) == 9


def test_nearest_rank_agrees_with_numpy_nearest_method():
    values = np.random.default_rng(0).normal(size=(6, 10, 100))  # n - 1 = 5999: no ties at .5
    for q in (5, 35, 65, 99):
        assert nearest_rank_percentile(values, q) == np.percentile(values, q, method='nearest')


def test_normalize_robust_clamps_to_the_percentiles_and_divides_by_the_largest_magnitude():
    values = np.array([9, -3, 0.25, -1, 2, -5, 1, 0, -0.5, 3, -2.0]).reshape(1, 1, 11)
    expected = np.clip(values, -0.5, 0.25) / (0.5 + 1e-6)
    result = normalize_robust(values, (35, 65))
    assert result.dtype == np.float32 and result.shape == values.shape
    np.testing.assert_allclose(result, expected, rtol=1e-6)
    np.testing.assert_allclose(normalize_robust(torch.tensor(values), (35, 65)).numpy(), expected, rtol=1e-6)
    assert values[0, 0, 0] == 9  # not modified


def test_normalize_robust_keeps_a_voxel_whose_percentiles_are_both_zero():
    sparse = np.zeros((2, 4, 5))
    sparse[0, 1, 2], sparse[1, 3, 4] = 3, -2
    np.testing.assert_array_equal(normalize_robust(sparse), sparse)
    assert normalize_robust(np.zeros((0, 2))).shape == (0, 2)
    with pytest.raises(ValueError, match='percentiles'):
        normalize_robust(sparse, (65, 35))


def test_nonzero_mask_is_one_where_the_channel_sum_is_not_zero():
    voxel = np.zeros((3, 2, 3), dtype=np.float32)
    voxel[0, 0, 0] = 1  # events
    voxel[:, 0, 1] = [-1, 0, 1]  # channels cancel: no mask
    voxel[1, 1, 2] = -0.5
    expected = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(nonzero_mask(voxel), expected)
    as_torch = nonzero_mask(torch.from_numpy(voxel))
    assert as_torch.dtype == torch.uint8 and as_torch.numpy().tolist() == expected.tolist()
    with pytest.raises(ValueError, match='C, H, W'):
        nonzero_mask(voxel[0])
