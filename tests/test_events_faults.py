"""Faulty event files and arrays, as a careless user would give them: each ends in one error naming the file."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from component_options import validated

from basicsr.data.h5_image_dataset import H5ImageDataset
from basicsr.data.h5_layout import TrainingH5Writer
from basicsr.events import RawEventH5, events_to_scer, read_events, write_raw_events_h5
from basicsr.events.checks import check_coordinates, check_times, validated_events
from basicsr.utils.errors import InvalidInputError, MissingKeyError, UserError, WriteError
from basicsr.utils.registry import DATASET_REGISTRY

STREET = Path(__file__).parent / 'data' / 'davis346_street' / 'street.aedat4'
SENSOR = (6, 9)


def toy_events(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return {
        'xs': rng.integers(0, SENSOR[1], n),
        'ys': rng.integers(0, SENSOR[0], n),
        'ts': np.sort(rng.uniform(0.0, 1.0, n)),
        'ps': rng.integers(0, 2, n),
    }


def raw_h5_by_hand(path, events, sensor=SENSOR):
    """A raw-event file written with h5py directly, so that it can break the layout."""
    with h5py.File(path, 'w') as f:
        for key, values in events.items():
            f.create_dataset(f'events/{key}', data=values)
        f.attrs['sensor_resolution'] = list(sensor)
    return path


def test_a_truncated_aedat4_names_the_file_and_the_events_read(tmp_path):
    pytest.importorskip('aedat')
    path = tmp_path / 'street_cut.aedat4'
    path.write_bytes(STREET.read_bytes()[:2_000_000])
    with pytest.raises(
        InvalidInputError,
        match=rf"events file '{path}' cannot be read as AEDAT4 after \d+ events "
        r'\(failed to fill whole buffer\); it is truncated or corrupt',
    ):
        read_events(path)
    (tmp_path / 'noise.aedat4').write_bytes(b'not an aedat file')
    with pytest.raises(InvalidInputError, match=r"noise.aedat4' cannot be read as AEDAT4 \("):
        read_events(tmp_path / 'noise.aedat4')


@pytest.mark.parametrize('keep', [0, 100, 0.6])
def test_a_corrupt_or_truncated_hdf5_file_is_named(tmp_path, keep):
    whole = tmp_path / 'whole.h5'
    write_raw_events_h5(whole, toy_events(5000), SENSOR)
    data = whole.read_bytes()
    path = tmp_path / 'cut.h5'
    path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(InvalidInputError, match=rf"events file '{path}'.*(truncated|corrupt)"):
        read_events(path)


def test_a_truncated_npz_and_a_truncated_text_file_are_named(tmp_path):
    events = toy_events()
    np.savez(tmp_path / 'whole.npz', **events)
    cut = tmp_path / 'cut.npz'
    cut.write_bytes((tmp_path / 'whole.npz').read_bytes()[:300])
    with pytest.raises(InvalidInputError, match=rf"events file '{cut}' cannot be read as .npz \(.*truncated"):
        read_events(cut)
    text = tmp_path / 'cut.txt'
    text.write_text('0.1 1 2 1\n0.2 3 4 0\n0.3 5')
    with pytest.raises(InvalidInputError, match=rf"events file '{text}': expected rows \"t x y p\".*truncated file"):
        read_events(text)
    binary = tmp_path / 'binary.txt'
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(InvalidInputError, match=rf"events file '{binary}' is not a text file"):
        read_events(binary)


def test_nan_and_unsorted_timestamps_in_a_text_file_are_named(tmp_path):
    path = tmp_path / 'nan.txt'
    path.write_text('9 6\n0.1 1 2 1\nnan 3 4 0\n0.3 5 5 1\n')
    with pytest.raises(
        InvalidInputError,
        match=rf"'{path}': timestamps must be finite numbers, found ts\[1\] = nan "
        r'\(1 of 3 events\)',
    ):
        read_events(path)
    path.write_text('9 6\n0.1 1 2 1\n0.05 3 4 0\n')
    with pytest.raises(InvalidInputError, match=r'events must be sorted by time, but ts\[0\] = 0.1 > ts\[1\] = 0.05'):
        read_events(path)


@pytest.mark.parametrize(
    'change, message',
    [
        ({'ts': np.array([0.0, 0.2, 0.1])}, r'\(events 0..2\): events must be sorted by time, but ts\[1\] = 0.2'),
        (
            {'ts': np.array([0.0, np.nan, 0.3])},
            r'\(events 0..2\): timestamps must be finite numbers, found ts\[1\] = nan',
        ),
        (
            {'xs': np.array([0, 9, 1])},
            r'xs must lie in \[0, W\) = \[0, 9\) for sensor size \(H, W\) = \(6, 9\), found '
            r'values in \[0, 9\]',
        ),
        ({'ys': np.array([0, -1, 1])}, r'ys must lie in \[0, H\) = \[0, 6\)'),
        ({'ps': np.array([0, 2, 1])}, r'polarities must be in \{0, 1\} or \{-1, \+1\}, found values such as \[2.0\]'),
    ],
)
def test_a_raw_hdf5_file_that_breaks_the_layout_is_named_when_read(tmp_path, change, message):
    events = {
        'xs': np.array([0, 1, 2]),
        'ys': np.array([0, 1, 2]),
        'ts': np.array([0.0, 0.1, 0.2]),
        'ps': np.array([0, 1, 1]),
    } | change
    path = raw_h5_by_hand(tmp_path / 'bad.h5', events)
    with pytest.raises(InvalidInputError, match=rf"events file '{path}' .*{message}"):
        read_events(path)
    with RawEventH5(path) as raw, pytest.raises(InvalidInputError, match=message):
        raw.events_slice(0, 3)


def test_missing_datasets_are_a_key_error_too(tmp_path):
    path = raw_h5_by_hand(tmp_path / 'no_ps.h5', {key: value for key, value in toy_events().items() if key != 'ps'})
    with pytest.raises(MissingKeyError, match=r"has no dataset 'events/ps'") as info:
        read_events(path)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_microsecond_timestamps_read_as_seconds_get_a_warning_naming_time_unit(tmp_path):
    path = tmp_path / 'us.txt'
    ts_us = np.array([1_000_000, 2_500_000, 7_300_000_000])
    path.write_text('9 6\n' + ''.join(f'{t} 1 2 1\n' for t in ts_us))
    with pytest.warns(
        UserWarning,
        match=r"us.txt': the timestamps, read as seconds, span 7\.299e\+09 s .* pass "
        r"--time_unit us \(or ms\), i.e. read_events\(..., time_unit='us'\)",
    ):
        read_events(path)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        recording = read_events(path, time_unit='us')
    np.testing.assert_allclose(recording.ts, ts_us * 1e-6)
    np.savez(
        tmp_path / 'ms.npz',
        x=[1, 2],
        y=[1, 1],
        t=[0, 5_000_000],
        p=[1, 0],
        sensor_size=list(SENSOR),
        frames=np.zeros((1, *SENSOR), np.uint8),
        frame_timestamps=[2_000_000],
    )
    with pytest.warns(UserWarning, match='--time_unit'):
        read_events(tmp_path / 'ms.npz')
    recording = read_events(tmp_path / 'ms.npz', time_unit='ms', t_start=1000.0)
    np.testing.assert_allclose(recording.ts, [5000.0])
    np.testing.assert_allclose(recording.frame_timestamps, [2000.0])


def test_time_unit_is_checked_and_refused_for_formats_that_store_their_unit(tmp_path):
    path = tmp_path / 'a.h5'
    write_raw_events_h5(path, toy_events(), SENSOR)
    with pytest.raises(InvalidInputError, match=r'.h5 files store their own time unit; time_unit \(--time_unit\)'):
        read_events(path, time_unit='us')
    with pytest.raises(InvalidInputError, match="time_unit must be one of s, ms, us, got 'ns'"):
        read_events(path, time_unit='ns')


def test_write_raw_events_h5_creates_its_folder_and_names_write_errors(tmp_path, monkeypatch):
    path = tmp_path / 'new' / 'folder' / 'one.h5'
    write_raw_events_h5(path, toy_events(), SENSOR)
    assert os.listdir(path.parent) == ['one.h5']
    (tmp_path / 'file').write_text('x')
    with pytest.raises(WriteError, match=f"cannot write into '{tmp_path / 'file'}': it exists and is not a folder"):
        write_raw_events_h5(tmp_path / 'file' / 'one.h5', toy_events(), SENSOR)

    previous = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(h5py.Group, 'create_dataset', full_disk)
    with pytest.raises(WriteError, match=rf"cannot write '{path}': No space left on device \[ENOSPC\]"):
        write_raw_events_h5(path, toy_events(seed=1), SENSOR)
    assert path.read_bytes() == previous
    assert os.listdir(path.parent) == ['one.h5']


def test_the_shared_checks_work_on_torch_tensors():
    ts = torch.tensor([0.0, float('nan'), 1.0])
    with pytest.raises(InvalidInputError, match=r'scer: timestamps must be finite numbers, found ts\[1\] = nan'):
        check_times('scer', ts)
    with pytest.raises(InvalidInputError, match='xs must lie in'):
        check_coordinates('scer', torch.tensor([0.0, float('nan')]), torch.tensor([0, 0]), (1, 2))
    with pytest.raises(ValueError, match=r'events_to_scer: timestamps must be finite'):
        events_to_scer(torch.tensor([0, 1, 0]), torch.tensor([0, 0, 0]), ts, torch.tensor([1, 1, 1]), 2, (1, 2))
    ops, checked = validated_events('f', *(torch.tensor(v) for v in ([0], [0], [3], [1])), (1, 1))
    assert checked.dtype == torch.float64


def test_damaged_hdf5_files_end_in_a_named_error_wherever_the_damage_is(tmp_path):
    """16 random bytes overwritten at random places: every read either works or raises a UserError (never h5py's
    KeyError/RuntimeError/TypeError from damaged metadata)."""
    rng = np.random.default_rng(1)
    raw_path, training_path = tmp_path / 'raw.h5', tmp_path / 'train.h5'
    write_raw_events_h5(
        raw_path, toy_events(2000), SENSOR, frames=np.zeros((3, *SENSOR), np.uint8), frame_timestamps=[0.1, 0.5, 0.9]
    )
    with TrainingH5Writer(training_path) as writer:
        for _ in range(3):
            writer.add(
                rng.integers(0, 256, (3, 8, 8), dtype=np.uint8),
                voxel=rng.normal(size=(6, 8, 8)),
                mask=np.zeros((1, 8, 8), np.uint8),
            )
    originals = {raw_path: raw_path.read_bytes(), training_path: training_path.read_bytes()}
    named = 0
    for _ in range(60):
        for path, data in originals.items():
            damaged = bytearray(data)
            offset = int(rng.integers(0, len(data) - 16))
            damaged[offset : offset + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
            path.write_bytes(bytes(damaged))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    if path == raw_path:
                        read_events(path)
                    else:
                        dataset = H5ImageDataset(
                            validated(
                                DATASET_REGISTRY, {'type': 'H5ImageDataset', 'dataroot': str(path), 'return_mask': True}
                            )
                        )
                        [dataset[i] for i in range(len(dataset))]
                        dataset.close()
            except UserError as error:
                assert f"'{path}'" in str(error)
                named += 1
    assert named > 30


@pytest.mark.parametrize('kind', ['numpy', 'torch'])
@pytest.mark.parametrize(
    ('values', 'message'),
    [
        ([float('nan')], r'found ts\[0\] = nan'),
        ([0.0, 1.0, float('inf')], r'found ts\[2\] = inf'),
        ([float('-inf'), 0.0, 1.0], r'found ts\[0\] = -inf'),
        ([0.0, 0.5, float('nan'), 0.7, 0.9], r'found ts\[2\] = nan'),
        ([0.0, 0.5, 0.4, 0.9], r'ts\[1\] = 0.5 > ts\[2\] = 0.4'),
    ],
)
def test_check_times_finds_every_non_finite_or_decreasing_timestamp(kind, values, message):
    ts = np.array(values) if kind == 'numpy' else torch.tensor(values, dtype=torch.float64)
    with pytest.raises(InvalidInputError, match=message):
        check_times('t', ts)


@pytest.mark.parametrize('kind', ['numpy', 'torch'])
def test_check_times_accepts_sorted_finite_timestamps_with_ties(kind):
    values = [0.0, 0.0, 0.25, 0.25, 1.0]
    check_times('t', np.array(values) if kind == 'numpy' else torch.tensor(values))
    check_times('t', np.array([3]) if kind == 'numpy' else torch.tensor([3]))
