"""The training HDF5 layout: writer, validation errors, reader windows."""

from __future__ import annotations

import errno
import os

import h5py
import numpy as np
import pytest

from basicsr.data.h5_layout import (
    TrainingH5Error,
    TrainingH5Reader,
    TrainingH5Writer,
    inspect_training_h5,
    item_key,
)
from basicsr.utils.errors import WriteError


def _items(count, height=6, width=8, channels=6, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield (
            rng.integers(0, 256, (3, height, width), dtype=np.uint8),
            rng.integers(0, 256, (3, height, width), dtype=np.uint8),
            rng.normal(size=(channels, height, width)).astype(np.float32),
            rng.choice(np.array([0, 255], np.uint8), (1, height, width)),
        )


def test_writer_writes_the_official_layout(tmp_path):
    path = tmp_path / 'seq.h5'
    items = list(_items(3))
    with TrainingH5Writer(path, attrs={'num_bins': 6}) as writer:
        for blurry, sharp, voxel, mask in items:
            writer.add(blurry, voxel=voxel, mask=mask, sharp=sharp)
    with h5py.File(path, 'r') as handle:
        assert sorted(handle.keys()) == ['images', 'masks', 'sharp_images', 'voxels']
        assert list(handle['images'].keys()) == ['image000000000', 'image000000001', 'image000000002']
        assert next(iter(handle['voxels'])) == 'voxel000000000'
        assert next(iter(handle['masks'])) == 'mask000000000'
        np.testing.assert_array_equal(handle.attrs['sensor_resolution'], [6, 8])
        assert handle.attrs['num_bins'] == 6
        for n, (blurry, sharp, voxel, mask) in enumerate(items):
            for key, array in (
                (f'images/image{n:09d}', blurry),
                (f'sharp_images/image{n:09d}', sharp),
                (f'voxels/voxel{n:09d}', voxel),
                (f'masks/mask{n:09d}', mask),
            ):
                assert handle[key].dtype == array.dtype
                np.testing.assert_array_equal(handle[key][:], array)
                np.testing.assert_array_equal(handle[key].attrs['size'], array.shape)
            assert handle[f'voxels/voxel{n:09d}'].attrs['max_abs'] == pytest.approx(np.abs(voxel).max())
    info = inspect_training_h5(path, ['voxels', 'masks', 'sharp_images'])
    assert (info.num_items, info.frame_size, info.voxel_channels) == (3, (6, 8), 6)


def test_a_failed_write_leaves_no_file_under_the_final_name(tmp_path):
    path = tmp_path / 'seq.h5'
    blurry, _, voxel, _ = next(_items(1))
    with pytest.raises(RuntimeError, match='boom'), TrainingH5Writer(path) as writer:
        writer.add(blurry, voxel=voxel)
        raise RuntimeError('boom')
    assert os.listdir(tmp_path) == []


def test_writer_rejects_wrong_shapes_and_inconsistent_items(tmp_path):
    blurry, _, voxel, _ = next(_items(1))
    with (
        pytest.raises(ValueError, match=r'blurry must have shape \(3, H, W\)'),
        TrainingH5Writer(tmp_path / 'x.h5') as writer,
    ):
        writer.add(blurry.transpose(1, 2, 0))
    with pytest.raises(ValueError, match='item 1 provides'), TrainingH5Writer(tmp_path / 'x.h5') as writer:
        writer.add(blurry, voxel=voxel)
        writer.add(blurry)
    with pytest.raises(ValueError, match='refusing to write an empty file'), TrainingH5Writer(tmp_path / 'x.h5'):
        pass
    assert os.listdir(tmp_path) == []


def _write_raw_layout(path, arrays):
    with h5py.File(path, 'w') as handle:
        for key, array in arrays.items():
            handle[key] = array


def test_missing_group_is_named_with_what_was_found(tmp_path):
    path = tmp_path / 'x.h5'
    _write_raw_layout(
        path,
        {
            'images/image000000000': np.zeros((3, 4, 4), np.uint8),
            'sharp_images/image000000000': np.zeros((3, 4, 4), np.uint8),
        },
    )
    with pytest.raises(TrainingH5Error) as error:
        inspect_training_h5(path, ['voxels'])
    assert str(error.value).startswith(
        f"HDF5 file '{path}' has no group 'voxels' (found: images, sharp_images); make it with "
        'scripts/data_preparation/make_voxels.py'
    )


def test_count_mismatch_and_missing_item_are_reported(tmp_path):
    path = tmp_path / 'x.h5'
    _write_raw_layout(
        path,
        {
            'images/image000000000': np.zeros((3, 4, 4), np.uint8),
            'images/image000000001': np.zeros((3, 4, 4), np.uint8),
            'voxels/voxel000000000': np.zeros((6, 4, 4), np.float32),
        },
    )
    with pytest.raises(
        TrainingH5Error,
        match=r"x.h5': group 'voxels' has 1 items but group 'images' has 2 "
        r'\(missing voxel000000001\)',
    ):
        inspect_training_h5(path, ['voxels'])
    _write_raw_layout(
        path,
        {
            'images/image000000000': np.zeros((3, 4, 4), np.uint8),
            'images/image000000002': np.zeros((3, 4, 4), np.uint8),
        },
    )
    with pytest.raises(TrainingH5Error, match="group 'images' has the same number.*missing image000000001"):
        inspect_training_h5(path)


@pytest.mark.parametrize(
    ('key', 'array', 'message'),
    [
        (
            'voxels/voxel000000001',
            np.zeros((6, 4, 5), np.float32),
            r"'voxels/voxel000000001' has shape \(6, 4, 5\), expected \(6, 4, 4\)",
        ),
        ('voxels/voxel000000001', np.zeros((5, 4, 4), np.float32), r'has shape \(5, 4, 4\), expected \(6, 4, 4\)'),
        (
            'masks/mask000000001',
            np.zeros((3, 4, 4), np.uint8),
            r"'masks/mask000000001' has shape \(3, 4, 4\), expected \(1, 4, 4\)",
        ),
        ('sharp_images/image000000001', np.zeros((3, 4, 4), np.float32), 'has dtype float32, expected uint8'),
        ('voxels/voxel000000001', np.zeros((6, 4, 4), np.int16), 'has dtype int16, expected float32'),
        (
            'images/image000000001',
            np.zeros((3, 4, 4), np.uint16),
            r"'images/image000000001' has dtype uint16, expected uint8 \(0..255\); 16-bit or float frames must be "
            'converted to 8 bits',
        ),
        (
            'images/image000000001',
            np.zeros((3, 5, 4), np.uint8),
            r"'images/image000000001' has shape \(3, 5, 4\), expected \(3, 4, 4\) to match 'images/image000000000'",
        ),
    ],
)
def test_shape_and_dtype_mismatches_name_file_and_key(tmp_path, key, array, message):
    arrays = {}
    for n in range(2):
        arrays[item_key('images', n)] = np.zeros((3, 4, 4), np.uint8)
        arrays[item_key('sharp_images', n)] = np.zeros((3, 4, 4), np.uint8)
        arrays[item_key('voxels', n)] = np.zeros((6, 4, 4), np.float32)
        arrays[item_key('masks', n)] = np.zeros((1, 4, 4), np.uint8)
    arrays[key] = array
    path = tmp_path / 'x.h5'
    _write_raw_layout(path, arrays)
    with pytest.raises(TrainingH5Error, match=message) as error:
        inspect_training_h5(path)
    assert str(path) in str(error.value)


def test_unreadable_empty_and_missing_files(tmp_path):
    path = tmp_path / 'broken.h5'
    path.write_bytes(b'this is not HDF5')
    with pytest.raises(TrainingH5Error, match=r"HDF5 file '.*broken.h5' cannot be opened as HDF5"):
        inspect_training_h5(path)
    with h5py.File(tmp_path / 'empty.h5', 'w') as handle:
        handle.create_group('images')
    with pytest.raises(TrainingH5Error, match="group 'images' is empty"):
        inspect_training_h5(tmp_path / 'empty.h5')
    with pytest.raises(FileNotFoundError, match="'.*nothing.h5' does not exist"):
        inspect_training_h5(tmp_path / 'nothing.h5')


def test_reader_reads_windows(tmp_path):
    items = list(_items(2, height=10, width=12))
    path = tmp_path / 'seq.h5'
    with TrainingH5Writer(path) as writer:
        for blurry, sharp, voxel, mask in items:
            writer.add(blurry, voxel=voxel, mask=mask, sharp=sharp)
    with TrainingH5Reader(inspect_training_h5(path, ['voxels'])) as reader:
        window = (slice(2, 7), slice(3, 11))
        np.testing.assert_array_equal(reader.read('voxels', 1, window), items[1][2][:, 2:7, 3:11])
        np.testing.assert_array_equal(reader.read('images', 0), items[0][0])
        assert reader.voxel_max_abs(1) == pytest.approx(np.abs(items[1][2]).max())


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_a_voxel_with_nan_or_infinity_is_named_with_file_key_and_position(tmp_path, bad):
    items = list(_items(5))
    items[3][2][4, 2, 5] = bad
    path = tmp_path / 'seq.h5'
    kind = 'NaN' if np.isnan(bad) else 'infinity'
    with pytest.raises(TrainingH5Error, match=f"'voxels/voxel000000003' contains {kind}"):
        with TrainingH5Writer(path) as writer:
            for blurry, _, voxel, _ in items:
                writer.add(blurry, voxel=voxel)
    assert os.listdir(tmp_path) == []
    arrays = {}
    for n, (blurry, _, voxel, _) in enumerate(items):  # written by another tool, which did not check
        arrays[item_key('images', n)], arrays[item_key('voxels', n)] = blurry, voxel
    _write_raw_layout(path, arrays)
    with h5py.File(path, 'a') as handle:
        handle[item_key('voxels', 3)].attrs['max_abs'] = np.abs(items[3][2]).max()
    with TrainingH5Reader(inspect_training_h5(path, ['voxels'])) as reader:
        reader.read('voxels', 2)
        with pytest.raises(
            TrainingH5Error,
            match=rf"HDF5 file '{path}': 'voxels/voxel000000003' contains {kind} "
            r'\(1 of 288 values, the first at \(channel, row, column\) = '
            r'\(4, 2, 5\)\)',
        ):
            reader.read('voxels', 3)
        reader.read('voxels', 3, (slice(0, 2), slice(0, 2)))  # a window without the bad value is fine
        with pytest.raises(TrainingH5Error, match=r"'voxels/voxel000000003' has the attribute max_abs = (nan|inf)"):
            reader.voxel_max_abs(3)


def test_a_training_file_truncated_after_inspection_is_named_when_opened(tmp_path):
    path = tmp_path / 'seq.h5'
    with TrainingH5Writer(path) as writer:
        for blurry, _, voxel, _ in _items(4, height=40, width=40):
            writer.add(blurry, voxel=voxel)
    info = inspect_training_h5(path, ['voxels'])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated after the data set was built
    with pytest.raises(TrainingH5Error, match=rf"HDF5 file '{path}' cannot be opened as HDF5"):
        TrainingH5Reader(info)


def test_writer_write_errors_name_the_file_and_keep_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / 'out' / 'seq.h5'
    blurry, _, voxel, _ = next(_items(1))
    with TrainingH5Writer(path) as writer:
        writer.add(blurry, voxel=voxel)
    previous = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(h5py.Group, 'create_dataset', full_disk)
    with pytest.raises(
        WriteError,
        match=rf"cannot write '{path}': No space left on device \[ENOSPC\] \([\d,]+ bytes "
        'free',
    ):
        with TrainingH5Writer(path) as writer:
            writer.add(blurry, voxel=voxel)
    assert path.read_bytes() == previous
    assert os.listdir(path.parent) == ['seq.h5']
    monkeypatch.undo()
    (tmp_path / 'file').write_text('x')
    with pytest.raises(WriteError, match=f"cannot write into '{tmp_path / 'file'}': it exists and is not a folder"):
        TrainingH5Writer(tmp_path / 'file' / 'seq.h5').__enter__()
