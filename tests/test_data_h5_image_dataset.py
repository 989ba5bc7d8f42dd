"""H5ImageDataset: items, normalisation, crop/flip semantics, dataroot forms, errors, lazy file handles."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from component_options import validated

from basicsr.data.h5_image_dataset import H5ImageDataset
from basicsr.data.h5_layout import TrainingH5Writer, item_key
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.registry import DATASET_REGISTRY

HEIGHT, WIDTH, CHANNELS = 12, 16, 6


def make_items(count, seed=0, height=HEIGHT, width=WIDTH):
    """Random (blurry, sharp, voxel, mask) items with distinct pixels (so a crop can be located)."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(count):
        voxel = np.round(rng.normal(scale=3, size=(CHANNELS, height, width))).astype(np.float32)
        items.append(
            (
                rng.integers(0, 256, (3, height, width), dtype=np.uint8),
                rng.integers(0, 256, (3, height, width), dtype=np.uint8),
                voxel,
                np.where(voxel.any(axis=0, keepdims=True), 255, 0).astype(np.uint8),
            )
        )
    return items


def write_items(path, items, groups=('sharp', 'voxel', 'mask')):
    """A training file written by TrainingH5Writer with the given optional groups of (blurry, sharp, voxel, mask)."""
    with TrainingH5Writer(path) as writer:
        for blurry, sharp, voxel, mask in items:
            arrays = {'sharp': sharp, 'voxel': voxel, 'mask': mask}
            writer.add(blurry, **{name: arrays[name] for name in groups})


def write_file(path, items, with_max_abs=True):
    """A training file; ``with_max_abs=False`` writes it like the official files (plain h5py, no extras)."""
    if with_max_abs:
        write_items(path, items)
        return
    with h5py.File(path, 'w') as handle:
        for n, arrays in enumerate(items):
            for group, array in zip(('images', 'sharp_images', 'voxels', 'masks'), arrays):
                handle[item_key(group, n)] = array
                handle[item_key(group, n)].attrs['size'] = array.shape
        handle.attrs['sensor_resolution'] = [HEIGHT, WIDTH]


def options(dataroot, **overrides):
    opt = {
        'name': 'test',
        'type': 'H5ImageDataset',
        'phase': 'train',
        'dataroot': str(dataroot),
        'norm_voxel': True,
        'return_voxel': True,
        'return_mask': True,
        'return_gt_frame': True,
        'use_mask': True,
        'crop_size': None,
        'use_flip': False,
        'use_rot': False,
        'io_backend': {'type': 'h5'},
    }
    opt.update(overrides)
    return validated(DATASET_REGISTRY, opt)


@pytest.fixture
def one_file(tmp_path):
    items = make_items(3)
    write_file(tmp_path / 'seqA.h5', items)
    return tmp_path, items


def test_registered_and_schema_lists_every_official_key():
    assert DATASET_REGISTRY.get('H5ImageDataset') is H5ImageDataset
    official = {
        'dataroot',
        'norm_voxel',
        'return_voxel',
        'return_mask',
        'return_gt_frame',
        'use_mask',
        'crop_size',
        'use_flip',
        'use_rot',
        'filename_tmpl',
        'io_backend',
        'mean',
        'std',
    }
    assert official | {'use_hflip', 'use_vflip', 'use_rot90'} == set(H5ImageDataset.option_schema)


def test_item_keys_dtypes_and_values(one_file):
    root, items = one_file
    dataset = H5ImageDataset(options(root))
    assert len(dataset) == 3
    item = dataset[1]
    assert set(item) == {'frame', 'frame_gt', 'voxel', 'mask', 'seq', 'index', 'name'}
    blurry, sharp, voxel, mask = items[1]
    for key, expected in (
        ('frame', blurry / 255.0),
        ('frame_gt', sharp / 255.0),
        ('voxel', voxel / np.abs(voxel).max()),
        ('mask', mask / 255.0),
    ):
        assert item[key].dtype == torch.float32
        np.testing.assert_allclose(item[key].numpy(), expected, rtol=1e-6, atol=1e-7)
    assert item['voxel'].abs().max() == 1.0
    assert set(np.unique(item['mask'].numpy())) <= {0.0, 1.0}
    assert (item['seq'], item['index'], item['name']) == ('seqA', 1, 'seqA/000000001')


def test_return_flags_leave_keys_out(one_file):
    root, _ = one_file
    item = H5ImageDataset(options(root, return_voxel=False, return_mask=False, use_mask=False, return_gt_frame=False))[
        0
    ]
    assert set(item) == {'frame', 'seq', 'index', 'name'}


def test_norm_voxel_false_returns_raw_counts(one_file):
    root, items = one_file
    np.testing.assert_array_equal(H5ImageDataset(options(root, norm_voxel=False))[2]['voxel'].numpy(), items[2][2])


@pytest.mark.parametrize('with_max_abs', [True, False])
def test_all_zero_voxel_gives_zeros_not_nan(tmp_path, with_max_abs):
    items = make_items(1)
    items[0] = (items[0][0], items[0][1], np.zeros_like(items[0][2]), np.zeros_like(items[0][3]))
    write_file(tmp_path / 'zero.h5', items, with_max_abs)
    voxel = H5ImageDataset(options(tmp_path, crop_size=4))[0]['voxel']
    assert not torch.isnan(voxel).any() and not voxel.any()


def _locate_crop(full, crop):
    """(top, left) where the (3, s, s) ``crop`` lies in the (3, H, W) ``full``."""
    size = crop.shape[1]
    hits = [
        (top, left)
        for top in range(full.shape[1] - size + 1)
        for left in range(full.shape[2] - size + 1)
        if np.array_equal(full[:, top : top + size, left : left + size], crop)
    ]
    assert len(hits) == 1
    return hits[0]


@pytest.mark.parametrize('with_max_abs', [True, False])
def test_crop_reads_the_same_window_of_every_array_normalised_by_the_full_frame(tmp_path, with_max_abs):
    items = make_items(1)
    blurry, sharp, voxel, mask = items[0]
    voxel[0, 0, 0] = 100.0  # the full-frame max, outside most crops
    write_file(tmp_path / 's.h5', items, with_max_abs)
    dataset = H5ImageDataset(options(tmp_path, crop_size=5))
    corners = set()
    torch.manual_seed(0)
    for _ in range(20):
        item = dataset[0]
        frame = np.round(item['frame'].numpy() * 255).astype(np.uint8)
        top, left = _locate_crop(blurry, frame)
        corners.add((top, left))
        window = np.s_[:, top : top + 5, left : left + 5]
        np.testing.assert_array_equal(np.round(item['frame_gt'].numpy() * 255), sharp[window])
        np.testing.assert_allclose(item['voxel'].numpy(), voxel[window] / 100.0, rtol=1e-6)
        np.testing.assert_array_equal(item['mask'].numpy(), mask[window] / 255.0)
    assert len(corners) > 10  # uniform corners, not a fixed window


def test_crop_corners_cover_the_whole_range(tmp_path):
    items = make_items(1, height=6, width=7)
    write_file(tmp_path / 's.h5', items)
    dataset = H5ImageDataset(options(tmp_path, crop_size=5, return_voxel=False, return_mask=False, use_mask=False))
    torch.manual_seed(1)
    corners = {
        _locate_crop(items[0][0], np.round(dataset[0]['frame'].numpy() * 255).astype(np.uint8)) for _ in range(60)
    }
    assert corners == {(top, left) for top in range(2) for left in range(3)}


def test_use_flip_flips_all_arrays_by_180_degrees_together(one_file):
    root, items = one_file
    dataset = H5ImageDataset(options(root, use_flip=True, norm_voxel=False))
    blurry, sharp, voxel, mask = items[0]
    seen = set()
    torch.manual_seed(0)
    for _ in range(16):
        item = dataset[0]
        flipped = not np.array_equal(item['frame'].numpy(), blurry / np.float32(255))
        seen.add(flipped)
        transform = (lambda a: np.flip(a, axis=(1, 2))) if flipped else (lambda a: a)
        np.testing.assert_array_equal(item['frame'].numpy(), transform(blurry) / np.float32(255))
        np.testing.assert_array_equal(item['frame_gt'].numpy(), transform(sharp) / np.float32(255))
        np.testing.assert_array_equal(item['voxel'].numpy(), transform(voxel))
        np.testing.assert_array_equal(item['mask'].numpy(), transform(mask) / np.float32(255))
    assert seen == {True, False}


def test_use_rot_and_default_extra_augmentations_change_nothing(one_file):
    root, items = one_file
    dataset = H5ImageDataset(options(root, use_rot=True, norm_voxel=False))
    assert not (dataset.opt['use_hflip'] or dataset.opt['use_vflip'] or dataset.opt['use_rot90'])
    torch.manual_seed(0)
    for _ in range(8):
        item = dataset[2]
        np.testing.assert_array_equal(item['voxel'].numpy(), items[2][2])
        np.testing.assert_array_equal(item['frame'].numpy(), items[2][0] / np.float32(255))


@pytest.mark.parametrize(
    ('key', 'transform'),
    [
        ('use_hflip', lambda a: np.flip(a, axis=2)),
        ('use_vflip', lambda a: np.flip(a, axis=1)),
        ('use_rot90', lambda a: np.rot90(a, axes=(1, 2))),
    ],
)
def test_extra_augmentations_transform_all_arrays_together(tmp_path, key, transform):
    items = make_items(1, height=8, width=8)
    write_file(tmp_path / 's.h5', items)
    dataset = H5ImageDataset(options(tmp_path, norm_voxel=False, crop_size=8, **{key: True}))
    blurry, _, voxel, mask = items[0]
    seen = set()
    torch.manual_seed(0)
    for _ in range(16):
        item = dataset[0]
        changed = not np.array_equal(item['voxel'].numpy(), voxel)
        seen.add(changed)
        expected = [transform(a) if changed else a for a in (blurry, voxel, mask)]
        np.testing.assert_array_equal(item['frame'].numpy(), expected[0] / np.float32(255))
        np.testing.assert_array_equal(item['voxel'].numpy(), expected[1])
        np.testing.assert_array_equal(item['mask'].numpy(), expected[2] / np.float32(255))
    assert seen == {True, False}


def test_mean_and_std_normalise_the_frames(one_file):
    root, items = one_file
    item = H5ImageDataset(options(root, mean=[0.5, 0.25, 0.0], std=[0.5, 0.5, 2.0]))[0]
    mean, std = np.array([0.5, 0.25, 0.0]).reshape(3, 1, 1), np.array([0.5, 0.5, 2.0]).reshape(3, 1, 1)
    np.testing.assert_allclose(item['frame'].numpy(), (items[0][0] / 255.0 - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(item['frame_gt'].numpy(), (items[0][1] / 255.0 - mean) / std, rtol=1e-5, atol=1e-6)


def test_dataroot_folder_is_read_in_sorted_order_and_names_are_unique(tmp_path):
    for name, count, seed in (('b_seq.h5', 2, 1), ('a_seq.h5', 3, 2), ('c.seq.h5', 1, 3)):
        write_file(tmp_path / name, make_items(count, seed))
    (tmp_path / 'notes.txt').write_text('not data')
    dataset = H5ImageDataset(options(tmp_path))
    assert [p.split('/')[-1] for p, _ in dataset.samples_per_file] == ['a_seq.h5', 'b_seq.h5', 'c.seq.h5']
    assert [c for _, c in dataset.samples_per_file] == [3, 2, 1]
    names = [dataset[i]['name'] for i in range(len(dataset))]
    assert names == [
        'a_seq/000000000',
        'a_seq/000000001',
        'a_seq/000000002',
        'b_seq/000000000',
        'b_seq/000000001',
        'c/000000000',
    ]
    assert [dataset[i]['index'] for i in range(len(dataset))] == [0, 1, 2, 0, 1, 0]
    np.testing.assert_array_equal(dataset[4]['frame'].numpy() * 255, make_items(2, 1)[1][0])


def test_dataroot_list_file_resolves_relative_paths(tmp_path):
    (tmp_path / 'data').mkdir()
    write_file(tmp_path / 'data' / 'one.h5', make_items(2, 1))
    write_file(tmp_path / 'two.h5', make_items(1, 2))
    (tmp_path / 'lists').mkdir()
    listing = tmp_path / 'lists' / 'train.txt'
    listing.write_text(f'# training files\n../data/one.h5\n\n{tmp_path / "two.h5"}\n')
    dataset = H5ImageDataset(options(listing))
    assert [s for s, _ in dataset.samples_per_file] == [str(tmp_path / 'data' / 'one.h5'), str(tmp_path / 'two.h5')]
    assert len(dataset) == 3


def test_dataroot_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataroot '.*nowhere' does not exist"):
        H5ImageDataset(options(tmp_path / 'nowhere'))
    with pytest.raises(FileNotFoundError, match="dataroot '.*' holds no .h5 or .hdf5 file"):
        H5ImageDataset(options(tmp_path))
    listing = tmp_path / 'list.txt'
    listing.write_text('missing.h5\n')
    with pytest.raises(FileNotFoundError, match="list file '.*list.txt' names 1 missing file.*missing.h5"):
        H5ImageDataset(options(listing))
    listing.write_text('# nothing\n')
    with pytest.raises(FileNotFoundError, match='names no file'):
        H5ImageDataset(options(listing))


def test_file_errors_name_the_file_and_key(tmp_path):
    items = make_items(2)
    write_items(tmp_path / 'nomask.h5', items, groups=('sharp', 'voxel'))
    with pytest.raises(
        ValueError,
        match="HDF5 file '.*nomask.h5' has no group 'masks' \\(found: images, "
        'sharp_images, voxels\\); make it with scripts/data_preparation',
    ):
        H5ImageDataset(options(tmp_path))
    assert len(H5ImageDataset(options(tmp_path, return_mask=False, use_mask=False))) == 2
    (tmp_path / 'zz_broken.h5').write_bytes(b'\x00' * 64)
    with pytest.raises(ValueError, match="HDF5 file '.*zz_broken.h5' cannot be opened as HDF5"):
        H5ImageDataset(options(tmp_path, return_mask=False, use_mask=False))


def test_mixed_voxel_channel_counts_are_rejected(tmp_path):
    write_file(tmp_path / 'a.h5', make_items(1))
    items = make_items(1)
    write_items(tmp_path / 'b.h5', [(items[0][0], items[0][1], items[0][2][:5], items[0][3])])
    with pytest.raises(ValueError, match=r'different channel counts \[5, 6\]'):
        H5ImageDataset(options(tmp_path))


def test_option_errors(one_file):
    root, _ = one_file
    with pytest.raises(ValueError, match=f'crop_size 13 is larger than the {HEIGHT}x{WIDTH} \\(HxW\\) frames'):
        H5ImageDataset(options(root, crop_size=13))
    with pytest.raises(InvalidInputError, match='use_mask: true needs return_mask: true'):
        options(root, return_mask=False)
    with pytest.raises(InvalidInputError, match='use_rot90 needs crop_size'):
        options(root, use_rot90=True)
    with pytest.raises(InvalidInputError, match='crop_size: must be an integer or null'):
        options(root, crop_size='big')
    with pytest.raises(InvalidInputError, match="io_backend: type must be 'h5'"):
        options(root, io_backend={'type': 'disk'})
    with pytest.raises(InvalidInputError, match='dataroot: required key is missing'):
        validated(DATASET_REGISTRY, {'type': 'H5ImageDataset', 'norm_voxel': True})


def test_files_open_lazily_and_pickling_drops_handles(one_file):
    root, _ = one_file
    dataset = H5ImageDataset(options(root))
    assert dataset.open_files == 0
    first = dataset[0]
    assert dataset.open_files == 1
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.open_files == 0
    np.testing.assert_array_equal(clone[0]['voxel'].numpy(), first['voxel'].numpy())
    dataset.close()
    assert dataset.open_files == 0


def test_items_load_in_worker_processes(one_file):
    root, _ = one_file
    dataset = H5ImageDataset(options(root))
    dataset[0]  # a handle opened in the parent must not be reused by the workers
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2)
    names = [batch['name'][0] for batch in loader]
    assert names == ['seqA/000000000', 'seqA/000000001', 'seqA/000000002']


def test_dataroot_may_name_one_h5_file_and_a_list_file_that_is_not_text_is_named(tmp_path):
    write_file(tmp_path / 'seqA.h5', make_items(2))
    write_file(tmp_path / 'seqB.h5', make_items(3))
    dataset = H5ImageDataset(options(tmp_path / 'seqB.h5'))
    assert dataset.samples_per_file == [(str(tmp_path / 'seqB.h5'), 3)]
    (tmp_path / 'seqB.h5').rename(tmp_path / 'seqB.data')
    with pytest.raises(
        InvalidInputError,
        match=r"dataroot '.*seqB.data' is an HDF5 file, but only names ending in "
        r'.h5 or .hdf5 are read as data files.*rename it',
    ):
        H5ImageDataset(options(tmp_path / 'seqB.data'))
    (tmp_path / 'list.txt').write_bytes(b'\xff\xfe binary')
    with pytest.raises(
        InvalidInputError,
        match=r"dataroot '.*list.txt' is neither a folder, nor a .h5 / .hdf5 file, "
        r"nor a text list of such files \(invalid start byte: b'\\xff'\)",
    ):
        H5ImageDataset(options(tmp_path / 'list.txt'))


@pytest.mark.parametrize('with_max_abs', [True, False], ids=['max_abs_attr', 'official'])
@pytest.mark.parametrize('phase, crop_size', [('train', 4), ('test', None)])
def test_a_nan_voxel_names_file_and_item_in_training_and_testing(tmp_path, with_max_abs, phase, crop_size):
    items = make_items(4)
    items[3][2][1, 0, 0] = np.nan
    write_file(tmp_path / 'seq.h5', items, with_max_abs=False)  # by another tool: TrainingH5Writer refuses NaN
    if with_max_abs:
        with h5py.File(tmp_path / 'seq.h5', 'a') as handle:
            for n, (_, _, voxel, _) in enumerate(items):
                handle[item_key('voxels', n)].attrs['max_abs'] = np.abs(voxel).max()
    dataset = H5ImageDataset(options(tmp_path, phase=phase, crop_size=crop_size))
    dataset[2]
    with pytest.raises(
        InvalidInputError,
        match=r"HDF5 file '.*seq.h5': 'voxels/voxel000000003' (contains NaN|has "
        'the attribute max_abs = nan)',
    ):
        for _ in range(20):  # every crop, wherever it lands
            dataset[3]


def test_a_nan_voxel_read_in_a_loader_worker_reaches_the_caller_as_one_message(tmp_path):
    items = make_items(2)
    items[1][2][0, 1, 1] = np.inf
    write_file(tmp_path / 'seq.h5', items, with_max_abs=False)
    loader = torch.utils.data.DataLoader(H5ImageDataset(options(tmp_path, phase='test')), num_workers=1)
    with pytest.raises(InvalidInputError) as info:
        list(loader)
    assert str(info.value).startswith(
        f"HDF5 file '{tmp_path / 'seq.h5'}': 'voxels/voxel000000001' contains infinity (1 of"
    )
    assert 'Traceback' not in str(info.value)
