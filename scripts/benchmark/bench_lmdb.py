"""Would an LMDB store beat the HDF5 training files? Random 256x256 training crops per second through a DataLoader.

Cases, each with 0, 1 and 2 loader workers (batch 4, file in the OS page cache):

* ``hdf5``: ``H5ImageDataset`` on a synthetic GoPro-sized training file (the project's data path: only the crop
  window of each array is read);
* ``lmdb``: the best an LMDB store can do (only when the ``lmdb`` package is installed): each array stored raw,
  uncompressed, under its own key, read zero-copy (``buffers=True``) from the memory map, so that a crop touches
  only the pages of its window; then the same crop, flip and scaling as the HDF5 data set.

Example::

    python scripts/benchmark/bench_lmdb.py --items 8 --batches 40
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

try:
    import lmdb
except ImportError:  # not a dependency of the project (see README, "Benchmarks")
    lmdb = None

from bench_dataset import HEIGHT, WIDTH, h5_dataset, write_file

from basicsr.data.h5_layout import IMAGES, MASKS, SHARP_IMAGES, VOXELS, item_key

ARRAYS = (('frame', IMAGES), ('frame_gt', SHARP_IMAGES), ('voxel', VOXELS), ('mask', MASKS))
CROP = 256


def convert_to_lmdb(h5_path: Path, lmdb_path: Path, items: int) -> None:
    """Every array of the training file as raw bytes under '<group>/<index>', with dtype, shape and max_abs keys."""
    size = h5_path.stat().st_size * 4 + (64 << 20)
    with (
        h5py.File(h5_path, 'r') as handle,
        lmdb.open(str(lmdb_path), map_size=size) as env,
        env.begin(write=True) as txn,
    ):
        for index in range(items):
            for _, group in ARRAYS:
                array = handle[item_key(group, index)]
                key = item_key(group, index)
                txn.put(key.encode(), np.ascontiguousarray(array[:]).tobytes())
                txn.put(
                    f'{key}.meta'.encode(),
                    f'{array.dtype.str};{",".join(map(str, array.shape))};{array.attrs.get("max_abs", 0.0)}'.encode(),
                )


class LmdbCrops(Dataset):
    """Random crops (and joint flips) of the LMDB store, scaled like H5ImageDataset: frames and mask / 255,
    voxel / max_abs; float32 tensors (C, 256, 256)."""

    def __init__(self, path: Path, items: int):
        self.path, self.items, self.env = path, items, None

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.env is None:  # opened in each worker
            self.env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False)
        top = int(torch.randint(0, HEIGHT - CROP + 1, ()))
        left = int(torch.randint(0, WIDTH - CROP + 1, ()))
        flip = bool(torch.rand(()) < 0.5)
        item = {}
        with self.env.begin(buffers=True) as txn:
            for name, group in ARRAYS:
                key = item_key(group, index)
                dtype, shape, max_abs = bytes(txn.get(f'{key}.meta'.encode())).decode().split(';')
                shape = tuple(int(s) for s in shape.split(','))
                window = np.frombuffer(txn.get(key.encode()), dtype=dtype).reshape(shape)[
                    :, top : top + CROP, left : left + CROP
                ]
                window = window[:, ::-1, ::-1] if flip else window
                scale = float(max_abs) if name == 'voxel' else 255.0
                item[name] = torch.from_numpy(window.astype(np.float32)).div_(scale if scale > 0 else 1.0)
        return item


def samples_per_second(dataset: Dataset, workers: int, batches: int, rounds: int) -> float:
    loader = DataLoader(
        dataset,
        batch_size=4,
        sampler=torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=4 * batches),
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    rates = []
    for _ in range(rounds + 1):  # the first pass starts the workers and warms the cache
        start = time.perf_counter()
        for _ in loader:
            pass
        rates.append(4 * batches / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--items', type=int, default=8, help='720x1280 items in the file')
    parser.add_argument('--batches', type=int, default=40, help='batches of 4 per pass')
    parser.add_argument('--rounds', type=int, default=3, help='passes (median reported)')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    have_lmdb = lmdb is not None
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / 'h5').mkdir()
        write_file(root / 'h5' / 'seq.h5', args.items, with_max_abs=True)
        datasets = {
            'hdf5': h5_dataset(
                {
                    'dataroot': str(root / 'h5'),
                    'crop_size': CROP,
                    'use_flip': True,
                    'return_mask': True,
                    'use_mask': True,
                }
            )
        }
        if have_lmdb:
            convert_to_lmdb(root / 'h5' / 'seq.h5', root / 'store.lmdb', args.items)
            datasets['lmdb'] = LmdbCrops(root / 'store.lmdb', args.items)
        sizes = {
            name: sum(f.stat().st_size for f in (root / sub).rglob('*') if f.is_file())
            for name, sub in (('hdf5', 'h5'), ('lmdb', 'store.lmdb'))
            if name in datasets
        }
        print(
            f'{args.items} items of 3x{HEIGHT}x{WIDTH}; {CROP}x{CROP} crops, batch 4, {os.cpu_count()} CPUs, '
            f'load average {os.getloadavg()[0]:.2f}' + ('' if have_lmdb else '; lmdb not installed')
        )
        print(f'{"store":<6} | {"MB on disk":>10} | ' + ' | '.join(f'{w} workers' for w in (0, 1, 2)) + ' (samples/s)')
        for name, dataset in datasets.items():
            rates = [samples_per_second(dataset, workers, args.batches, args.rounds) for workers in (0, 1, 2)]
            print(f'{name:<6} | {sizes[name] / 2**20:>10.0f} | ' + ' | '.join(f'{r:>9.0f}' for r in rates))


if __name__ == '__main__':
    main()
