"""The data preparation scripts: make_voxels (window semantics, noise, idempotence, errors), make_synthetic_gopro
(determinism, split, layout) and convert_events (on the real DAVIS346 recording)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from component_options import validated
from conftest import load_script

from basicsr.data.h5_image_dataset import H5ImageDataset
from basicsr.data.h5_layout import inspect_training_h5
from basicsr.data.raw_event_dataset import RawEventDataset
from basicsr.data.scer_conversion import frame_chw
from basicsr.events import RawEventH5, event_mask, events_to_scer, write_raw_events_h5
from basicsr.utils.errors import MissingInputError, WriteError
from basicsr.utils.registry import DATASET_REGISTRY

SCRIPTS = Path(__file__).resolve().parents[1] / 'scripts' / 'data_preparation'
STREET = Path(__file__).resolve().parent / 'data' / 'davis346_street' / 'street.aedat4'


make_voxels = load_script(SCRIPTS / 'make_voxels.py')
make_synthetic_gopro = load_script(SCRIPTS / 'make_synthetic_gopro.py')
convert_events = load_script(SCRIPTS / 'convert_events.py')

# Hand-made recording: 5 frames at t = 0..4 s, 10 events; event j sits at pixel x = j (row j % 4).
HEIGHT, WIDTH = 4, 12
EVENT_TS = np.array([0.2, 0.5, 0.9, 1.5, 1.6, 2.4, 2.5, 3.1, 3.5, 3.9])
EVENT_PS = np.array([1, -1, 1, 1, -1, 1, -1, -1, 1, 1], np.int8)
FRAME_TS = np.arange(5.0)
EXPOSURES = np.stack([FRAME_TS - 0.6, FRAME_TS + 0.55], axis=1)
# Event slices [begin, end) per item, worked out by hand from the SCER window rules.
GOPRO_WINDOWS = [(1, 3), (3, 6), (6, 8)]  # frames 1..3: [idx(mid(t_{i-1}, t_i)), idx(mid(t_i, t_{i+1})))
REBLUR_WINDOWS = [(0, 2), (1, 4), (3, 7), (5, 9), (8, 10)]  # [idx(t_i - 0.6), idx(t_i + 0.55))


def hand_made_events():
    index = np.arange(EVENT_TS.size)
    return {'xs': index.astype(np.int32), 'ys': (index % HEIGHT).astype(np.int32), 'ts': EVENT_TS, 'ps': EVENT_PS}


def write_hand_made_raw(path, exposures=True, sharp=True, frames=5):
    blurry = np.stack([np.full((HEIGHT, WIDTH, 3), (10 * i, 10 * i + 1, 10 * i + 2), np.uint8) for i in range(5)])
    write_raw_events_h5(
        path,
        hand_made_events(),
        (HEIGHT, WIDTH),
        frames=blurry[:frames],
        frame_timestamps=FRAME_TS[:frames],
        exposures=EXPOSURES[:frames] if exposures else None,
        sharp_frames=blurry[:frames] + 100 if sharp else None,
    )
    return blurry


def expected_voxel(begin, end):
    """SCER of events [begin, end) computed independently of the converter (float32 time from the first event)."""
    events = hand_made_events()
    ts = (events['ts'][begin:end] - EVENT_TS[0]).astype(np.float32)
    return events_to_scer(
        events['xs'][begin:end],
        events['ys'][begin:end],
        ts,
        events['ps'][begin:end],
        num_bins=6,
        sensor_size=(HEIGHT, WIDTH),
    )


@pytest.mark.parametrize(
    ('mode', 'windows', 'first_frame'), [('gopro', GOPRO_WINDOWS, 1), ('reblur', REBLUR_WINDOWS, 0)]
)
def test_make_voxels_windows(tmp_path, mode, windows, first_frame):
    raw_dir, out_dir = tmp_path / 'raw', tmp_path / 'out'
    raw_dir.mkdir()
    blurry = write_hand_made_raw(raw_dir / 'rec.h5')
    assert make_voxels.main(['--input_path', str(raw_dir), '--save_path', str(out_dir), '--mode', mode]) == 0
    with h5py.File(out_dir / 'rec.h5', 'r') as handle:
        assert len(handle['images']) == len(windows)
        for n, (begin, end) in enumerate(windows):
            voxel = handle[f'voxels/voxel{n:09d}'][:]
            np.testing.assert_array_equal(voxel, expected_voxel(begin, end))
            np.testing.assert_array_equal(handle[f'masks/mask{n:09d}'][:], event_mask(voxel)[None])
            np.testing.assert_array_equal(handle[f'images/image{n:09d}'][:], blurry[n + first_frame].transpose(2, 0, 1))
            np.testing.assert_array_equal(
                handle[f'sharp_images/image{n:09d}'][:], blurry[n + first_frame].transpose(2, 0, 1) + 100
            )
        assert handle.attrs['event_window'] == mode and handle.attrs['num_bins'] == 6


def test_gopro_item_1_by_hand(tmp_path):
    """Item 1 holds events 3 (t 1.5), 4 (t 1.6), 5 (t 2.4): t_mid = 1.95, so events 3 and 4 fall in the widest left
    channel only (negated) and event 5, at the last timestamp, is not counted."""
    write_hand_made_raw(tmp_path / 'rec.h5')
    make_voxels.main(['--input_path', str(tmp_path / 'rec.h5'), '--save_path', str(tmp_path / 'out')])
    with h5py.File(tmp_path / 'out' / 'rec.h5', 'r') as handle:
        voxel = handle['voxels/voxel000000001'][:]
    expected = np.zeros((6, HEIGHT, WIDTH), np.float32)
    expected[0, 3 % HEIGHT, 3] = -EVENT_PS[3]
    expected[0, 4 % HEIGHT, 4] = -EVENT_PS[4]
    np.testing.assert_array_equal(voxel, expected)


def test_make_voxels_keep_middle_num_bins_and_noise(tmp_path):
    write_hand_made_raw(tmp_path / 'rec.h5')

    def run(out, *extra):
        make_voxels.main(['--input_path', str(tmp_path / 'rec.h5'), '--save_path', str(tmp_path / out), *extra])

    def read(out, key):
        with h5py.File(tmp_path / out / 'rec.h5', 'r') as handle:
            return handle[key][:]

    run('middle', '--keep_middle')
    run('bins4', '--num_bins', '4')
    run('noise', '--add_noise', '--seed', '3')
    run('noise_again', '--add_noise', '--seed', '3')
    run('clean')
    middle = read('middle', 'voxels/voxel000000001')
    assert middle.shape == (7, HEIGHT, WIDTH) and not middle[3].any()
    np.testing.assert_array_equal(np.delete(middle, 3, axis=0), read('clean', 'voxels/voxel000000001'))
    assert read('bins4', 'voxels/voxel000000000').shape == (4, HEIGHT, WIDTH)
    noisy, clean = read('noise', 'voxels/voxel000000001'), read('clean', 'voxels/voxel000000001')
    assert not np.array_equal(noisy, clean)
    np.testing.assert_array_equal(noisy, read('noise_again', 'voxels/voxel000000001'))  # seeded
    np.testing.assert_array_equal(read('noise', 'masks/mask000000001'), event_mask(noisy)[None])  # mask of noisy


def test_add_noise_is_a_real_boolean_flag():
    parse = make_voxels.parse_args
    base = ['--input_path', 'x', '--save_path', 'y']
    assert parse(base).add_noise is False
    assert parse([*base, '--add_noise']).add_noise is True
    assert parse([*base, '--add_noise', '--no-add_noise']).add_noise is False
    with pytest.raises(SystemExit):
        parse([*base, '--add_noise', 'False'])  # a string value is an error, not a truthy flag
    with pytest.raises(SystemExit):
        parse([*base, '--num_bins', '5'])


def test_make_voxels_is_idempotent_and_overwrite_rebuilds(tmp_path, capsys):
    write_hand_made_raw(tmp_path / 'rec.h5')
    args = ['--input_path', str(tmp_path / 'rec.h5'), '--save_path', str(tmp_path / 'out')]
    assert make_voxels.main(args) == 0
    output = tmp_path / 'out' / 'rec.h5'
    os.utime(output, (1, 1))
    assert make_voxels.main(args) == 0
    assert os.stat(output).st_mtime == 1
    assert '0 file(s) converted (0 items), 1 skipped' in capsys.readouterr().out
    with h5py.File(output, 'a') as handle:  # an incomplete file (fewer items) is rebuilt
        del handle['images/image000000002']
    assert make_voxels.main(args) == 0
    with h5py.File(output, 'r') as handle:
        assert len(handle['images']) == 3
    os.utime(output, (1, 1))
    assert make_voxels.main([*args, '--overwrite']) == 0
    assert os.stat(output).st_mtime != 1
    assert sorted(os.listdir(tmp_path / 'out')) == ['rec.h5']  # no temporary file left


def test_make_voxels_reports_malformed_inputs_and_converts_the_rest(tmp_path, run_python):
    raw = tmp_path / 'raw'
    raw.mkdir()
    write_hand_made_raw(raw / 'a_good.h5')
    write_hand_made_raw(raw / 'b_no_exposure.h5', exposures=False)
    with h5py.File(raw / 'c_no_ts.h5', 'w') as handle:
        for key in ('xs', 'ys', 'ps'):
            handle[f'events/{key}'] = np.zeros(3, np.int16)
        handle.attrs['sensor_resolution'] = [HEIGHT, WIDTH]
    result = run_python(
        str(SCRIPTS / 'make_voxels.py'),
        '--input_path',
        str(raw),
        '--save_path',
        str(tmp_path / 'out'),
        '--mode',
        'reblur',
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert "b_no_exposure.h5': raw-event file" in result.stderr
    assert "needs the attributes 'exposure_start' and 'exposure_end'" in result.stderr
    assert "c_no_ts.h5': events file" in result.stderr and "has no dataset 'events/ts'" in result.stderr
    assert '1 file(s) converted (5 items), 0 skipped (complete; --overwrite rebuilds), 2 failed' in result.stdout
    assert sorted(os.listdir(tmp_path / 'out')) == ['a_good.h5']
    missing = run_python(
        str(SCRIPTS / 'make_voxels.py'),
        '--input_path',
        str(tmp_path / 'nowhere'),
        '--save_path',
        str(tmp_path / 'out'),
        cwd=tmp_path,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: --input_path '")
    assert 'Traceback' not in missing.stderr


def test_make_voxels_names_corrupt_and_nan_inputs_and_stops_on_an_unwritable_output(tmp_path, run_python):
    raw = tmp_path / 'raw'
    raw.mkdir()
    write_hand_made_raw(raw / 'a_good.h5')
    (raw / 'b_truncated.h5').write_bytes((raw / 'a_good.h5').read_bytes()[:2000])
    write_hand_made_raw(raw / 'c_nan.h5')
    with h5py.File(raw / 'c_nan.h5', 'a') as handle:
        ts = handle['events/ts'][()]
        ts[4] = np.nan
        handle['events/ts'][...] = ts
    script = str(SCRIPTS / 'make_voxels.py')
    result = run_python(
        script, '--input_path', str(raw), '--save_path', str(tmp_path / 'out'), '--mode', 'reblur', cwd=tmp_path
    )
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert "b_truncated.h5' cannot be opened as HDF5" in result.stderr
    assert "c_nan.h5' (events " in result.stderr and 'timestamps must be finite numbers, found ts[' in result.stderr
    assert sorted(os.listdir(tmp_path / 'out')) == ['a_good.h5']
    (tmp_path / 'blocked').write_text('a file, not a folder')
    with pytest.raises(WriteError, match=f"cannot write into '{tmp_path / 'blocked'}': it exists and is not a folder"):
        make_voxels.main(['--input_path', str(raw / 'a_good.h5'), '--save_path', str(tmp_path / 'blocked')])


def test_make_voxels_stops_at_a_full_disk_and_removes_stale_temporaries(tmp_path, monkeypatch):
    write_hand_made_raw(tmp_path / 'rec.h5')
    out = tmp_path / 'out'
    out.mkdir()
    stale = out / '.rec.h5.tmp-4194321-0badc0de'  # left by a killed run (no such pid)
    stale.write_bytes(b'half')

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(h5py.Group, 'create_dataset', full_disk)
    with pytest.raises(WriteError, match=rf"cannot write '{out / 'rec.h5'}': No space left on device \[ENOSPC\]"):
        make_voxels.main(['--input_path', str(tmp_path / 'rec.h5'), '--save_path', str(out)])
    assert os.listdir(out) == []


def test_gopro_mode_needs_three_frames(tmp_path):
    write_hand_made_raw(tmp_path / 'short.h5', frames=2)
    assert make_voxels.main(['--input_path', str(tmp_path / 'short.h5'), '--save_path', str(tmp_path / 'out')]) == 1


@pytest.mark.parametrize('mode', ['gopro', 'reblur'])
def test_raw_event_dataset_agrees_with_make_voxels(tmp_path, mode):
    (tmp_path / 'raw').mkdir()
    write_hand_made_raw(tmp_path / 'raw' / 'rec.h5')
    make_voxels.main(['--input_path', str(tmp_path / 'raw'), '--save_path', str(tmp_path / 'h5'), '--mode', mode])
    common = {'return_mask': True, 'use_flip': True, 'crop_size': 3}
    stored = H5ImageDataset(
        validated(DATASET_REGISTRY, {'type': 'H5ImageDataset', 'dataroot': str(tmp_path / 'h5'), **common})
    )
    computed = RawEventDataset(
        validated(
            DATASET_REGISTRY, {'type': 'RawEventDataset', 'dataroot': str(tmp_path / 'raw'), 'mode': mode, **common}
        )
    )
    assert len(stored) == len(computed) == (3 if mode == 'gopro' else 5)
    for index in range(len(stored)):
        torch.manual_seed(index)
        expected = stored[index]
        torch.manual_seed(index)
        item = computed[index]
        assert item.keys() == expected.keys()
        for key in ('frame', 'frame_gt', 'voxel', 'mask'):
            torch.testing.assert_close(item[key], expected[key], rtol=0, atol=0)
        assert (item['name'], item['index']) == (expected['name'], expected['index'])


def test_frame_chw_repeats_grey_frames():
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(frame_chw(grey), np.stack([grey] * 3))
    colour = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(frame_chw(colour), colour.transpose(2, 0, 1))


TINY = [
    '--height',
    '40',
    '--width',
    '48',
    '--num_train_seqs',
    '2',
    '--num_test_seqs',
    '1',
    '--frames_per_seq',
    '2',
    '--test_frames_per_seq',
    '1',
    '--workers',
    '1',
]


def test_make_synthetic_gopro_is_deterministic_split_and_official(tmp_path, capsys):
    for run in ('a', 'b'):
        assert (
            make_synthetic_gopro.main(
                [*TINY, '--save_path', str(tmp_path / run / 'h5'), '--raw_path', str(tmp_path / run / 'raw')]
            )
            == 0
        )
    files = sorted(str(p.relative_to(tmp_path / 'a')) for p in (tmp_path / 'a').rglob('*.h5'))
    assert files == [
        'h5/test/test_000_chelsea.h5',
        'h5/train/train_000_astronaut.h5',
        'h5/train/train_001_rocket.h5',
        'raw/test/test_000_chelsea.h5',
        'raw/train/train_000_astronaut.h5',
        'raw/train/train_001_rocket.h5',
    ]
    for name in files:
        assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes(), name
    for name in files[:3]:
        info = inspect_training_h5(tmp_path / 'a' / name, ['sharp_images', 'voxels', 'masks'])
        assert (info.frame_size, info.voxel_channels) == ((40, 48), 6)
        assert info.num_items == (1 if 'test' in name else 2)
        with h5py.File(tmp_path / 'a' / name, 'r') as handle:
            np.testing.assert_array_equal(handle.attrs['sensor_resolution'], [40, 48])
            assert not handle.attrs['voxel_noise']
    with RawEventH5(tmp_path / 'a' / 'raw' / 'train' / 'train_000_astronaut.h5') as raw:
        assert len(raw.frame_names) == 4 and raw.num_events > 0 and raw.exposures is not None
    out = capsys.readouterr().out
    assert 'train: 2 files, 4 samples, blurry PSNR' in out and 'test: 1 files, 1 samples' in out
    assert (
        make_synthetic_gopro.main(
            [*TINY, '--save_path', str(tmp_path / 'a' / 'h5'), '--raw_path', str(tmp_path / 'a' / 'raw')]
        )
        == 0
    )
    assert '0 sequence(s) built, 3 skipped' in capsys.readouterr().out


def test_synthetic_train_and_test_photos_are_disjoint():
    assert not set(make_synthetic_gopro.TRAIN_PHOTOS) & set(make_synthetic_gopro.TEST_PHOTOS)
    args = make_synthetic_gopro.parse_args(['--num_train_seqs', '9', '--num_test_seqs', '5'])
    specs = make_synthetic_gopro.sequence_specs(args)
    train = {p for s in specs if s.name.startswith('train') for p in (s.photo, s.object_photo)}
    test = {p for s in specs if s.name.startswith('test') for p in (s.photo, s.object_photo)}
    assert train and test and not train & test
    assert all(make_synthetic_gopro.load_photo(p).shape[2] == 3 for p in sorted(train | test))


def test_synthetic_blur_is_a_mean_in_linear_light_and_sharp_the_middle_frame(monkeypatch):
    """With a fake scene that is black at even and white at odd 240 fps frames, a blurry frame of N frames starting at
    frame s is ((number of odd frames in s..s+N-1) / N) ** (1 / 2.2), and the sharp frame is frame s + N // 2."""
    synth = make_synthetic_gopro
    monkeypatch.setattr(
        synth.SceneRenderer, 'render', lambda self, t: np.full((*self.size, 3), float(round(t) % 2), np.float32)
    )
    spec = synth.SequenceSpec('s', 'astronaut', 'rocket', 3, (8, 10), 5, '', '', False)
    sequence = synth.render_sequence(spec)
    assert sequence['blurry'].shape == sequence['sharp'].shape == (5, 8, 10, 3)
    starts = np.round(sequence['exposures'][:, 0] * synth.FPS + 0.5).astype(int)
    counts = np.round((sequence['exposures'][:, 1] - sequence['exposures'][:, 0]) * synth.FPS).astype(int)
    assert set(counts) <= set(synth.BLUR_FRAME_COUNTS)
    np.testing.assert_array_equal(starts[1:], np.cumsum(counts)[:-1])  # consecutive, disjoint groups
    np.testing.assert_allclose(sequence['timestamps'] * synth.FPS, starts + counts // 2)
    for start, count, blurry, sharp in zip(starts, counts, sequence['blurry'], sequence['sharp']):
        odd = sum(frame % 2 for frame in range(start, start + count))
        assert np.all(blurry == round(255 * (odd / count) ** (1 / 2.2)))
        assert np.all(sharp == 255 * ((start + count // 2) % 2))
    events = sequence['events']  # every frame change is a full black/white flip: one event per threshold step
    assert np.all(np.diff(events['ts']) >= 0) and set(np.unique(events['ps'])) == {-1, 1}


def test_convert_events_on_the_real_davis_recording(tmp_path):
    output = tmp_path / 'raw' / 'street.h5'
    assert convert_events.main(['--input', str(STREET), '--output', str(output)]) == 0
    with RawEventH5(output) as raw:
        assert raw.sensor_size == (260, 346) and raw.num_events == 78830
        assert len(raw.frame_names) == 59 and raw.exposures is not None
        assert np.allclose(raw.exposures[:, 1] - raw.exposures[:, 0], 0.5e-3, atol=1e-4)
        assert raw.read_frame(0).shape == (260, 346)
    assert make_voxels.main(['--input_path', str(output), '--save_path', str(tmp_path / 'h5'), '--mode', 'reblur']) == 0
    info = inspect_training_h5(tmp_path / 'h5' / 'street.h5', ['voxels', 'masks'])
    assert (info.num_items, info.frame_size, info.voxel_channels) == (59, (260, 346), 6)
    assert 'sharp_images' not in info.groups
    dataset = H5ImageDataset(
        validated(
            DATASET_REGISTRY,
            {'type': 'H5ImageDataset', 'dataroot': str(tmp_path / 'h5'), 'return_gt_frame': False, 'return_mask': True},
        )
    )
    item = dataset[30]
    assert item['frame'].shape == (3, 260, 346) and item['voxel'].shape == (6, 260, 346)
    assert torch.equal(item['frame'][0], item['frame'][2])  # grey APS frame repeated
    assert item['voxel'].abs().max() == 1 and item['mask'].any()


def test_convert_events_empty_window_is_an_error_that_gives_the_range(tmp_path, run_python):
    """Absolute times taken for relative ones used to write an empty file and exit 0."""
    script = str(SCRIPTS / 'convert_events.py')
    result = run_python(
        script,
        '--input',
        str(STREET),
        '--output',
        str(tmp_path / 'cut.h5'),
        '--t_start',
        '1.0',
        '--t_end',
        '1.15',
        '--absolute_time',
    )
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.startswith('error: no events to write') and result.stderr.count('\n') == 1
    assert 'events from 1589163147.368868 to 1589163149.728813 s' in result.stderr
    assert not (tmp_path / 'cut.h5').exists()


def test_convert_events_time_window_and_errors(tmp_path, capsys):
    first_event = 1589163147.368868  # the recording's camera clock (seconds since 1970)
    output = tmp_path / 'cut.h5'
    args = [
        '--input',
        str(STREET),
        '--output',
        str(output),
        '--t_start',
        str(first_event + 0.5),
        '--t_end',
        str(first_event + 1.0),
        '--absolute_time',
    ]
    assert convert_events.main(args) == 0
    assert 'events from 1589163147.368868 to 1589163149.728813 s' in capsys.readouterr().out
    with RawEventH5(output) as raw:
        events = raw.events_slice(0, raw.num_events)
        assert raw.num_events == 16568
        assert first_event + 0.5 <= events['ts'].min() and events['ts'].max() < first_event + 1.0
        assert len(raw.frame_names) == 13
        assert np.all((raw.frame_timestamps >= first_event + 0.5) & (raw.frame_timestamps < first_event + 1.0))
        assert raw.exposures.shape == (13, 2)
    assert convert_events.main(args) == 0
    assert 'exists; skipped' in capsys.readouterr().out
    relative = tmp_path / 'relative.h5'  # the same window, in seconds after the first event (the default)
    assert (
        convert_events.main(['--input', str(STREET), '--output', str(relative), '--t_start', '0.5', '--t_end', '1.0'])
        == 0
    )
    with RawEventH5(relative) as raw:
        assert raw.num_events == 16568 and len(raw.frame_names) == 13
    with pytest.raises(MissingInputError, match="events file '.*none.aedat4' does not exist"):
        convert_events.main(['--input', str(tmp_path / 'none.aedat4'), '--output', str(tmp_path / 'x.h5')])
    with pytest.raises(SystemExit):
        convert_events.parse_args(['--input', 'a', '--output', 'b', '--t_start', '2', '--t_end', '1'])
