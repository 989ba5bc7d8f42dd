"""The synthetic voxel noise that EFNet's GoPro converter adds to SCER before storing it."""

from __future__ import annotations

import numpy as np


def add_voxel_noise(
    voxel: np.ndarray,
    rng: np.random.Generator,
    noise_fraction: float = 0.05,
    noise_std: float = 1.0,
    hot_pixel_fraction: float = 2e-5,
    hot_pixel_range: int = 20,
) -> np.ndarray:
    """Gaussian noise on a random share of the entries, then "hot pixels" across all bins.

    1. N(0, ``noise_std``) is added to round(``noise_fraction`` · C·H·W) entries drawn without replacement.
    2. int(``hot_pixel_fraction`` · H·W) pixels, drawn without replacement, are set in every channel to one random
       integer in [-``hot_pixel_range``, ``hot_pixel_range``] per pixel (the same value in all channels).

    The reference draws pixels with replacement and a Bernoulli share of entries; drawing without replacement makes
    the counts exact, and their expectations are the same.

    Args:
        voxel: (C, H, W) event tensor, numpy, any real dtype. Not modified.
        rng: numpy random Generator; the result is a deterministic function of its state.
        noise_fraction: share of entries in [0, 1] that get Gaussian noise.
        noise_std: standard deviation of that noise (>= 0), in voxel units.
        hot_pixel_fraction: share of pixels in [0, 1] that become hot.
        hot_pixel_range: hot pixel values are integers in [-range, range], range >= 0.

    Returns:
        (C, H, W) float32, a new array.

    Raises:
        ValueError: for a non-3-D voxel or parameters outside the ranges above.
        TypeError: for a voxel that is not a numpy array or an rng that is not a numpy Generator.
    """
    if not isinstance(voxel, np.ndarray):
        raise TypeError(f'add_voxel_noise: voxel must be a numpy array, got {type(voxel).__name__}')
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f'add_voxel_noise: rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}'
        )
    if voxel.ndim != 3:
        raise ValueError(f'add_voxel_noise: expected a (C, H, W) voxel, got shape {voxel.shape}')
    for name, value in (('noise_fraction', noise_fraction), ('hot_pixel_fraction', hot_pixel_fraction)):
        if not 0 <= value <= 1:
            raise ValueError(f'add_voxel_noise: {name} must lie in [0, 1], got {value}')
    if noise_std < 0 or hot_pixel_range < 0:
        raise ValueError(
            f'add_voxel_noise: noise_std and hot_pixel_range must be >= 0, got {noise_std} and {hot_pixel_range}'
        )

    noisy = voxel.astype(np.float32, copy=True)
    flat = noisy.reshape(-1)
    noisy_entries = rng.choice(flat.size, size=round(noise_fraction * flat.size), replace=False)
    flat[noisy_entries] += rng.normal(0.0, noise_std, size=noisy_entries.size).astype(np.float32)

    channels, height, width = noisy.shape
    hot = rng.choice(height * width, size=int(hot_pixel_fraction * height * width), replace=False)
    values = rng.integers(-hot_pixel_range, hot_pixel_range, size=hot.size, endpoint=True)
    noisy.reshape(channels, -1)[:, hot] = values.astype(np.float32)
    return noisy
