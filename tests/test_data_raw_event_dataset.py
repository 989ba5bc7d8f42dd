"""RawEventDataset: on-the-fly SCER items, options, fresh noise, errors, lazy handles.

Agreement with make_voxels output is tested in test_scripts_data_preparation.py.
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from component_options import validated

from basicsr.data.raw_event_dataset import RawEventDataset
from basicsr.events import event_mask, events_to_scer, write_raw_events_h5
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.registry import DATASET_REGISTRY


def raw_options(**keys):
    return validated(DATASET_REGISTRY, {'type': 'RawEventDataset', **keys})


HEIGHT, WIDTH, FRAMES = 6, 8, 4


def write_recording(path, exposures=True, sharp=True, seed=0):
    """4 colour frames at t = 0, 0.1, 0.2, 0.3 s and 400 random events between them."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, 0.3, 400))
    events = {
        'xs': rng.integers(0, WIDTH, 400),
        'ys': rng.integers(0, HEIGHT, 400),
        'ts': ts,
        'ps': rng.choice(np.array([-1, 1]), 400),
    }
    frames = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    times = np.arange(FRAMES) * 0.1
    write_raw_events_h5(
        path,
        events,
        (HEIGHT, WIDTH),
        frames=frames,
        frame_timestamps=times,
        exposures=np.stack([times - 0.02, times + 0.02], 1) if exposures else None,
        sharp_frames=255 - frames if sharp else None,
    )
    return events, frames


def test_registered_with_its_own_keys():
    assert DATASET_REGISTRY.get('RawEventDataset') is RawEventDataset
    assert {'mode', 'num_bins', 'keep_middle', 'add_noise', 'crop_size', 'use_flip', 'dataroot'} <= set(
        RawEventDataset.option_schema
    )


def test_gopro_items_match_an_independent_scer(tmp_path):
    events, frames = write_recording(tmp_path / 'rec.h5')
    dataset = RawEventDataset(raw_options(dataroot=str(tmp_path), return_mask=True, norm_voxel=False))
    assert len(dataset) == FRAMES - 2
    item = dataset[1]  # raw frame 2: events in [0.15, 0.25)
    window = (events['ts'] >= 0.15) & (events['ts'] < 0.25)
    ts = (events['ts'][window] - events['ts'][0]).astype(np.float32)
    voxel = events_to_scer(events['xs'][window], events['ys'][window], ts, events['ps'][window], 6, (HEIGHT, WIDTH))
    np.testing.assert_array_equal(item['voxel'].numpy(), voxel)
    np.testing.assert_array_equal(item['mask'].numpy(), event_mask(voxel)[None] / 255.0)
    np.testing.assert_array_equal(item['frame'].numpy(), frames[2].transpose(2, 0, 1) / np.float32(255))
    np.testing.assert_array_equal(item['frame_gt'].numpy(), (255 - frames[2]).transpose(2, 0, 1) / np.float32(255))
    assert (item['seq'], item['index'], item['name']) == ('rec', 1, 'rec/000000001')


def test_reblur_mode_keeps_every_frame_and_normalises(tmp_path):
    write_recording(tmp_path / 'rec.h5')
    dataset = RawEventDataset(raw_options(dataroot=str(tmp_path), mode='reblur', num_bins=4, keep_middle=True))
    assert len(dataset) == FRAMES
    voxel = dataset[2]['voxel']
    assert voxel.shape == (5, HEIGHT, WIDTH) and not voxel[2].any()
    assert voxel.abs().max() == 1.0


def test_add_noise_draws_fresh_noise_that_follows_the_torch_seed(tmp_path):
    write_recording(tmp_path / 'rec.h5')
    dataset = RawEventDataset(raw_options(dataroot=str(tmp_path), add_noise=True, norm_voxel=False))
    clean = RawEventDataset(raw_options(dataroot=str(tmp_path), norm_voxel=False))[0]['voxel']
    torch.manual_seed(5)
    first = dataset[0]['voxel']
    second = dataset[0]['voxel']
    torch.manual_seed(5)
    again = dataset[0]['voxel']
    assert not torch.equal(first, second) and torch.equal(first, again)
    assert not torch.equal(first, clean)


def test_errors_name_the_file(tmp_path):
    write_recording(tmp_path / 'rec.h5', exposures=False, sharp=False)
    with pytest.raises(ValueError, match="'.*rec.h5' has no group 'sharp_images'.*return_gt_frame: false"):
        RawEventDataset(raw_options(dataroot=str(tmp_path)))
    with pytest.raises(ValueError, match="'.*rec.h5': mode reblur needs the attributes 'exposure_start'"):
        RawEventDataset(raw_options(dataroot=str(tmp_path), mode='reblur', return_gt_frame=False))
    with pytest.raises(InvalidInputError, match='num_bins: must be an even integer >= 2, got 5'):
        raw_options(dataroot=str(tmp_path), num_bins=5)
    with pytest.raises(InvalidInputError, match="mode: must be one of gopro, reblur, got 'esim'"):
        raw_options(dataroot=str(tmp_path), mode='esim')
    with pytest.raises(ValueError, match='crop_size 7 is larger than the 6x8'):
        RawEventDataset(raw_options(dataroot=str(tmp_path), return_gt_frame=False, crop_size=7))


def test_files_open_lazily_and_pickling_drops_handles(tmp_path):
    write_recording(tmp_path / 'rec.h5')
    dataset = RawEventDataset(raw_options(dataroot=str(tmp_path)))
    assert dataset.open_files == 0
    first = dataset[0]
    assert dataset.open_files == 1
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.open_files == 0
    assert torch.equal(clone[0]['voxel'], first['voxel'])
    dataset.close()
    assert dataset.open_files == 0


def test_broken_events_name_the_file_the_events_and_the_item(tmp_path):
    events, _ = write_recording(tmp_path / 'rec.h5')
    bad = int(np.searchsorted(events['ts'], 0.2))  # inside item 1's window [0.15, 0.25)
    with h5py.File(tmp_path / 'rec.h5', 'a') as handle:
        ts = handle['events/ts'][()]
        ts[bad] = np.nan
        handle['events/ts'][...] = ts
    dataset = RawEventDataset(raw_options(dataroot=str(tmp_path / 'rec.h5'), return_mask=True))
    dataset[0]
    with pytest.raises(
        InvalidInputError,
        match=r"events file '.*rec.h5' \(events \d+..\d+\): timestamps must be "
        r'finite numbers, found ts\[\d+\] = nan .*\(item 1 of rec, raw '
        r'frame 2\)',
    ):
        dataset[1]
