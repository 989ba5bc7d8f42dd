"""Benchmark H5ImageDataset reading speed on a synthetic GoPro-sized (720x1280) training file.

Cases (samples per second, median of ``--runs`` passes over the items, single process, file in the OS page cache):

* ``crop256``: 256x256 random crops + flips, file with ``max_abs`` attributes (files written by this project):
  only the crop window of each array is read;
* ``crop256_official``: the same on a file without ``max_abs`` (like the official files): the first pass reads
  the full voxel for the normalisation, later passes reuse the cached maximum;
* ``full``: full frames, no augmentation (validation);
* ``naive_crop256``: the baseline: read the four full arrays, normalise, then crop and flip in memory.

Example::

    python scripts/benchmark/bench_dataset.py --items 8 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from basicsr.data.h5_image_dataset import H5ImageDataset
from basicsr.data.h5_layout import (
    IMAGES,
    MASKS,
    SHARP_IMAGES,
    VOXELS,
    TrainingH5Writer,
    item_key,
)
from basicsr.utils.option_schema import check_component
from basicsr.utils.registry import DATASET_REGISTRY

HEIGHT, WIDTH, CHANNELS = 720, 1280, 6


def h5_dataset(options: dict) -> H5ImageDataset:
    """An H5ImageDataset from hand-written options, validated like an option file."""
    return H5ImageDataset(check_component(DATASET_REGISTRY, {'type': 'H5ImageDataset', **options}))


def write_file(path: Path, items: int, with_max_abs: bool, seed: int = 0) -> None:
    """A training file of ``items`` GoPro-sized items with sparse integer voxels (about 25 % non-zero)."""
    rng = np.random.default_rng(seed)
    with TrainingH5Writer(path) as writer:
        for _ in range(items):
            blurry = rng.integers(0, 256, (3, HEIGHT, WIDTH), dtype=np.uint8)
            voxel = rng.integers(-3, 4, (CHANNELS, HEIGHT, WIDTH)) * (rng.random((1, HEIGHT, WIDTH)) < 0.25)
            mask = np.where(voxel.any(0, keepdims=True), 255, 0).astype(np.uint8)
            writer.add(blurry, voxel=voxel.astype(np.float32), mask=mask, sharp=blurry)
    if not with_max_abs:
        with h5py.File(path, 'a') as handle:
            for index in range(items):
                del handle[item_key(VOXELS, index)].attrs['max_abs']


def naive_item(handle: h5py.File, index: int, size: int) -> dict[str, torch.Tensor]:
    """The baseline: full reads, then normalise, crop and flip in memory."""
    arrays = {
        name: handle[item_key(group, index)][:]
        for name, group in (('frame', IMAGES), ('frame_gt', SHARP_IMAGES), ('voxel', VOXELS), ('mask', MASKS))
    }
    arrays['voxel'] = arrays['voxel'] / np.abs(arrays['voxel']).max()
    top = int(torch.randint(0, HEIGHT - size + 1, ()))
    left = int(torch.randint(0, WIDTH - size + 1, ()))
    flip = bool(torch.rand(()) < 0.5)
    item = {}
    for name, array in arrays.items():
        array = array[:, top : top + size, left : left + size]
        array = np.ascontiguousarray(array[:, ::-1, ::-1] if flip else array)
        item[name] = torch.from_numpy(array.astype(np.float32) / (1.0 if name == 'voxel' else 255.0))
    return item


def rate(read, items: int, runs: int) -> tuple[float, float]:
    """(first-pass samples/s, median samples/s over ``runs`` passes)."""
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for index in range(items):
            read(index)
        rates.append(items / (time.perf_counter() - start))
    return rates[0], statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--items', type=int, default=8, help='items per file')
    parser.add_argument('--runs', type=int, default=5, help='passes over the items (median reported)')
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name, with_max_abs in (('ours', True), ('official', False)):
            (root / name).mkdir()
            write_file(root / name / 'seq.h5', args.items, with_max_abs)
        common = {'return_mask': True, 'use_mask': True}
        cases = {
            'crop256': h5_dataset({'dataroot': str(root / 'ours'), 'crop_size': 256, 'use_flip': True, **common}),
            'crop256_official': h5_dataset(
                {'dataroot': str(root / 'official'), 'crop_size': 256, 'use_flip': True, **common}
            ),
            'full': h5_dataset({'dataroot': str(root / 'ours'), **common}),
        }
        print(f'{args.items} items of 3x{HEIGHT}x{WIDTH} frames, {CHANNELS}-channel voxels; {args.runs} passes')
        print(f'{"case":<18} {"first pass":>12} {"median":>12}  (samples/s)')
        for name, dataset in cases.items():
            first, median = rate(dataset.__getitem__, args.items, args.runs)
            print(f'{name:<18} {first:12.1f} {median:12.1f}')
        with h5py.File(root / 'official' / 'seq.h5', 'r') as handle:
            first, median = rate(lambda index: naive_item(handle, index, 256), args.items, args.runs)
        print(f'{"naive_crop256":<18} {first:12.1f} {median:12.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
