"""Event readers and the raw-event HDF5 writer: round trips, time slices, the real AEDAT4 file, every error."""

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from basicsr.events import EventRecording, RawEventH5, read_events, write_raw_events_h5

STREET = Path(__file__).parent / 'data' / 'davis346_street' / 'street.aedat4'
SENSOR = (6, 9)


def toy_events(n=200, seed=0, signed=True):
    rng = np.random.default_rng(seed)
    ts = np.sort(np.round(rng.uniform(0.0, 1.0, n), 3))  # rounded: many duplicated timestamps
    ps = rng.integers(0, 2, n)
    return {
        'xs': rng.integers(0, SENSOR[1], n),
        'ys': rng.integers(0, SENSOR[0], n),
        'ts': ts,
        'ps': ps * 2 - 1 if signed else ps,
    }


def toy_frames(count=4, colour=False, seed=1):
    shape = (count, *SENSOR, 3) if colour else (count, *SENSOR)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def assert_events_equal(got, expected):
    np.testing.assert_array_equal(got['xs'], expected['xs'])
    np.testing.assert_array_equal(got['ys'], expected['ys'])
    np.testing.assert_array_equal(got['ts'], expected['ts'])
    np.testing.assert_array_equal(got['ps'], np.where(np.asarray(expected['ps']) > 0, 1, -1))


def assert_reader_dtypes(recording):
    assert recording.xs.dtype == np.int32 and recording.ys.dtype == np.int32
    assert recording.ts.dtype == np.float64 and recording.ps.dtype == np.int8


@pytest.mark.parametrize('colour', [False, True])
def test_raw_h5_round_trip(tmp_path, colour):
    events, frames = toy_events(signed=False), toy_frames(colour=colour)
    sharp = toy_frames(colour=colour, seed=2)
    frame_times = np.array([0.1, 0.35, 0.6, 0.85])
    exposures = np.stack([frame_times - 0.01, frame_times + 0.01], axis=1)
    path = tmp_path / 'seq.h5'
    write_raw_events_h5(path, events, SENSOR, frames, frame_times, exposures, sharp, source='unit test')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['seq.h5']  # no temporary file left behind

    with h5py.File(path, 'r') as f:  # the raw-event on-disk layout
        assert f['events/ps'].dtype == np.uint8 and set(np.unique(f['events/ps'][()])) == {0, 1}
        assert f['events/xs'].dtype == np.int16 and f['events/ts'].dtype == np.float64
        assert list(f.attrs['sensor_resolution']) == list(SENSOR)
        assert f.attrs['num_events'] == 200 and f.attrs['num_imgs'] == 4 and f.attrs['source'] == 'unit test'
        image = f['images/image000000001']
        assert image.shape == frames.shape[1:] and image.attrs['timestamp'] == 0.35
        assert image.attrs['event_idx'] == np.searchsorted(events['ts'], 0.35)
        assert image.attrs['exposure_start'] == exposures[1, 0] and image.attrs['exposure_end'] == exposures[1, 1]
        assert abs(image.attrs['exposure_time'] - 0.02) < 1e-12
        assert 'sharp_images/image000000003' in f

    recording = read_events(path)
    assert isinstance(recording, EventRecording) and recording.num_events == 200
    assert_reader_dtypes(recording)
    assert_events_equal(recording.events(), events)
    assert recording.sensor_size == SENSOR and recording.source == 'unit test'
    np.testing.assert_array_equal(recording.frames, frames)
    np.testing.assert_array_equal(recording.sharp_frames, sharp)
    np.testing.assert_array_equal(recording.frame_timestamps, frame_times)
    np.testing.assert_array_equal(recording.exposure_start, exposures[:, 0])
    np.testing.assert_array_equal(recording.exposure_end, exposures[:, 1])

    without_frames = read_events(path, load_frames=False)
    assert without_frames.frames is None and without_frames.frame_timestamps is None
    assert without_frames.num_events == 200


def test_raw_h5_lazy_access(tmp_path):
    events, frames = toy_events(), toy_frames()
    path = tmp_path / 'seq.h5'
    write_raw_events_h5(path, events, SENSOR, frames, [0.1, 0.2, 0.3, 0.4])
    with RawEventH5(path) as f:
        assert f.sensor_size == SENSOR and f.num_events == 200 and f.source == ''
        assert f.frame_names == [f'image{i:09d}' for i in range(4)]
        np.testing.assert_array_equal(f.frame_timestamps, [0.1, 0.2, 0.3, 0.4])
        assert f.exposures is None and f.read_sharp_frame(0) is None
        np.testing.assert_array_equal(f.read_frame(2), frames[2])
        queries = np.concatenate([events['ts'][::7], [-1.0, 0.5, 2.0], events['ts'][::11] + 1e-4])
        for t in queries:  # exact hits, duplicates, before the first and after the last event
            assert f.index_at_time(t) == np.searchsorted(events['ts'], t, side='left')
        part = f.events_slice(10, 50)
        assert part['xs'].dtype == np.int32 and part['ps'].dtype == np.int8 and part['ts'].dtype == np.float64
        assert_events_equal(part, {key: values[10:50] for key, values in events.items()})
        assert f.events_slice(5, 5)['ts'].size == 0


def test_raw_h5_index_at_time_reads_log_n_timestamps(tmp_path):
    n = 5000
    events = {'xs': np.zeros(n, int), 'ys': np.zeros(n, int), 'ts': np.linspace(0, 1, n), 'ps': np.ones(n, int)}
    path = tmp_path / 'long.h5'
    write_raw_events_h5(path, events, (1, 1))

    class CountingDataset:
        def __init__(self, dataset):
            self.dataset, self.reads = dataset, 0

        def __getitem__(self, index):
            self.reads += int(np.size(np.arange(n)[index]))
            return self.dataset[index]

    with RawEventH5(path) as f:
        counting = CountingDataset(f._datasets['ts'])
        f._datasets['ts'] = counting
        assert f.index_at_time(0.5) == np.searchsorted(events['ts'], 0.5)
        assert counting.reads <= int(np.ceil(np.log2(n))) + 1


def test_raw_h5_time_sliced_read(tmp_path):
    events, frames = toy_events(), toy_frames()
    frame_times = np.array([0.1, 0.35, 0.6, 0.85])
    path = tmp_path / 'seq.hdf5'
    write_raw_events_h5(path, events, SENSOR, frames, frame_times, sharp_frames=frames[::-1].copy())
    t_start, t_end = events['ts'][40], events['ts'][120]  # both are timestamps of events, some duplicated
    window = read_events(path, t_start=t_start, t_end=t_end)
    keep = (events['ts'] >= t_start) & (events['ts'] < t_end)
    assert_events_equal(window.events(), {key: values[keep] for key, values in events.items()})
    inside = (frame_times >= t_start) & (frame_times < t_end)
    np.testing.assert_array_equal(window.frame_timestamps, frame_times[inside])
    np.testing.assert_array_equal(window.frames, frames[inside])
    np.testing.assert_array_equal(window.sharp_frames, frames[::-1][inside])
    open_end = read_events(path, t_start=0.5)
    assert open_end.ts.min() >= 0.5 and open_end.num_events == int((events['ts'] >= 0.5).sum())
    nothing = read_events(path, t_start=5.0)
    assert nothing.num_events == 0 and nothing.frames.shape == (0, *SENSOR)
    assert read_events(path, t_start=0.6, t_end=0.2).num_events == 0


def test_writer_overwrites_atomically_and_accepts_empty_events(tmp_path):
    path = tmp_path / 'seq.h5'
    write_raw_events_h5(path, toy_events(), SENSOR)
    empty = {key: np.zeros(0) for key in ('xs', 'ys', 'ts', 'ps')}
    write_raw_events_h5(path, empty, SENSOR)
    recording = read_events(path)
    assert recording.num_events == 0 and recording.frames is None
    assert_reader_dtypes(recording)
    with pytest.raises(ValueError):
        write_raw_events_h5(tmp_path / 'bad.h5', toy_events() | {'ts': toy_events()['ts'][::-1]}, SENSOR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['seq.h5']


@pytest.mark.parametrize('short_keys', [False, True])
def test_npz(tmp_path, short_keys):
    events, frames = toy_events(signed=short_keys), toy_frames()
    names = dict(zip(('xs', 'ys', 'ts', 'ps'), ('x', 'y', 't', 'p'))) if short_keys else {}
    path = tmp_path / 'seq.npz'
    np.savez(
        path,
        **{names.get(key, key): values for key, values in events.items()},
        frames=frames,
        frame_timestamps=np.array([0.1, 0.3, 0.5, 0.7]),
    )
    recording = read_events(path)
    assert_reader_dtypes(recording)
    assert_events_equal(recording.events(), events)
    assert recording.sensor_size == SENSOR and recording.source == 'seq.npz'  # from the frames
    np.testing.assert_array_equal(recording.frames, frames)
    window = read_events(path, t_start=0.2, t_end=0.6, load_frames=False)
    keep = (events['ts'] >= 0.2) & (events['ts'] < 0.6)
    assert_events_equal(window.events(), {key: values[keep] for key, values in events.items()})
    assert window.frames is None
    assert read_events(path, t_start=0.2, t_end=0.6).frame_timestamps.tolist() == [0.3, 0.5]

    np.savez(tmp_path / 'sized.npz', **events, sensor_size=np.array([20, 30]))
    assert read_events(tmp_path / 'sized.npz').sensor_size == (20, 30)
    np.savez(tmp_path / 'bare.npz', **events)
    bare = read_events(tmp_path / 'bare.npz')
    assert bare.sensor_size == (events['ys'].max() + 1, events['xs'].max() + 1) and bare.frames is None


def write_text(path, events, header=None, delimiter=' '):
    rows = [
        delimiter.join(f'{v}' for v in (t, x, y, p))
        for t, x, y, p in zip(events['ts'], events['xs'], events['ys'], events['ps'])
    ]
    path.write_text('\n'.join(([header] if header else []) + rows) + '\n')


def test_text_files(tmp_path):
    events = toy_events(signed=False)
    write_text(tmp_path / 'with_size.txt', events, header=f'{SENSOR[1]} {SENSOR[0]}')  # "width height"
    recording = read_events(tmp_path / 'with_size.txt')
    assert_reader_dtypes(recording)
    assert_events_equal(recording.events(), events)
    assert recording.sensor_size == SENSOR and recording.frames is None

    write_text(tmp_path / 'bare.txt', events)
    bare = read_events(tmp_path / 'bare.txt')
    assert_events_equal(bare.events(), events)
    assert bare.sensor_size == (events['ys'].max() + 1, events['xs'].max() + 1)

    write_text(tmp_path / 'named.csv', toy_events(), header='t,x,y,p', delimiter=',')
    assert_events_equal(read_events(tmp_path / 'named.csv').events(), toy_events())
    write_text(tmp_path / 'sized.csv', events, header=f'{SENSOR[1]},{SENSOR[0]}', delimiter=',')
    window = read_events(tmp_path / 'sized.csv', t_start=0.25, t_end=0.75)
    keep = (events['ts'] >= 0.25) & (events['ts'] < 0.75)
    assert_events_equal(window.events(), {key: values[keep] for key, values in events.items()})
    assert window.sensor_size == SENSOR

    (tmp_path / 'header_only.txt').write_text('346 260\n')
    assert read_events(tmp_path / 'header_only.txt').num_events == 0


def test_aedat4_recording():
    pytest.importorskip('aedat')
    recording = read_events(STREET)
    assert_reader_dtypes(recording)
    assert recording.num_events == 78830 and recording.sensor_size == (260, 346)
    assert round(float((recording.ps > 0).mean()), 2) == 0.52
    assert (np.diff(recording.ts) >= 0).all()
    assert recording.xs.max() < 346 and recording.ys.max() < 260
    assert recording.frames.shape == (59, 260, 346) and recording.frames.dtype == np.uint8
    np.testing.assert_allclose(np.diff(recording.frame_timestamps), 0.04, atol=1e-5)  # 25 fps
    np.testing.assert_allclose(recording.exposure_end - recording.exposure_start, 0.0005, atol=1e-6)
    assert recording.ts[-1] - recording.ts[0] == pytest.approx(2.36, abs=0.01)

    t_start, t_end = recording.frame_timestamps[10], recording.frame_timestamps[20]
    window = read_events(STREET, t_start=t_start, t_end=t_end, load_frames=False)
    keep = (recording.ts >= t_start) & (recording.ts < t_end)
    assert window.frames is None and window.num_events == int(keep.sum()) > 1000
    np.testing.assert_array_equal(window.ts, recording.ts[keep])
    framed = read_events(STREET, t_start=t_start, t_end=t_end)
    np.testing.assert_array_equal(framed.frames, recording.frames[10:20])


def test_aedat4_without_the_package(tmp_path, monkeypatch):
    path = tmp_path / 'x.aedat4'
    path.write_bytes(b'')
    monkeypatch.setitem(sys.modules, 'aedat', None)
    with pytest.raises(ImportError, match="needs the optional package 'aedat': pip install aedat"):
        read_events(path)


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="events file '.*missing.h5' does not exist"):
        read_events(tmp_path / 'missing.h5')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        RawEventH5(tmp_path / 'missing.h5')
    (tmp_path / 'x.bin').write_bytes(b'')
    with pytest.raises(
        ValueError,
        match=r"unsupported extension '.bin'; supported: .h5, .hdf5, .npz, .txt, .csv, "
        r'.aedat4',
    ):
        read_events(tmp_path / 'x.bin')

    with h5py.File(tmp_path / 'no_ts.h5', 'w') as f:
        for key in ('xs', 'ys', 'ps'):
            f[f'events/{key}'] = np.zeros(3)
        f['images/image000000000'] = np.zeros((2, 2), np.uint8)
        f.attrs['sensor_resolution'] = [2, 2]
    with pytest.raises(
        KeyError,
        match=r"events file '.*no_ts.h5' has no dataset 'events/ts' \(found: events/, "
        r'events/ps, events/xs, events/ys, images/\)',
    ):
        read_events(tmp_path / 'no_ts.h5')

    with h5py.File(tmp_path / 'no_size.h5', 'w') as f:
        for key in ('xs', 'ys', 'ts', 'ps'):
            f[f'events/{key}'] = np.zeros(3)
    with pytest.raises(KeyError, match="has no file attribute 'sensor_resolution'.*add it as \\[H, W\\]"):
        RawEventH5(tmp_path / 'no_size.h5')

    with h5py.File(tmp_path / 'bad_size.h5', 'w') as f:
        for key in ('xs', 'ys', 'ts', 'ps'):
            f[f'events/{key}'] = np.zeros(3)
        f.attrs['sensor_resolution'] = [2, 2, 3]
    with pytest.raises(ValueError, match=r"attribute 'sensor_resolution' must be \[H, W\], got \[2, 2, 3\]"):
        read_events(tmp_path / 'bad_size.h5')

    with h5py.File(tmp_path / 'ragged.h5', 'w') as f:
        for key, n in (('xs', 3), ('ys', 3), ('ts', 4), ('ps', 3)):
            f[f'events/{key}'] = np.zeros(n)
        f.attrs['sensor_resolution'] = [2, 2]
    with pytest.raises(ValueError, match='must be 1-D of equal length'):
        read_events(tmp_path / 'ragged.h5')

    with h5py.File(tmp_path / 'no_stamp.h5', 'w') as f:
        for key in ('xs', 'ys', 'ts', 'ps'):
            f[f'events/{key}'] = np.zeros(3)
        f['images/image000000000'] = np.zeros((2, 2), np.uint8)
        f.attrs['sensor_resolution'] = [2, 2]
    with pytest.raises(KeyError, match="frame 'images/image000000000' has no attribute 'timestamp'"):
        read_events(tmp_path / 'no_stamp.h5')
    assert read_events(tmp_path / 'no_stamp.h5', load_frames=False).num_events == 3

    path = tmp_path / 'seq.h5'
    write_raw_events_h5(path, toy_events(), SENSOR, toy_frames(), [0.1, 0.2, 0.3, 0.4])
    with RawEventH5(path) as f:
        with pytest.raises(IndexError, match=r'event slice \[5, 300\) is outside \[0, 200\]'):
            f.events_slice(5, 300)
        with pytest.raises(IndexError, match="frame index 4 is outside the 4 frames of 'images'"):
            f.read_frame(4)
    with h5py.File(path, 'a') as f:
        del f['images/image000000003']
        f['sharp_images/image000000000'] = np.zeros(SENSOR, np.uint8)
        f['sharp_images/image000000001'] = np.zeros(SENSOR, np.uint8)
        f['images/image000000002'].attrs['exposure_start'] = 0.0
    with pytest.raises(ValueError, match='has 2 sharp_images for 3 images'):
        read_events(path)
    with RawEventH5(path) as f:
        assert f.exposures is None  # only one frame has exposure attributes


def test_npz_and_text_errors(tmp_path):
    events = toy_events()
    np.savez(tmp_path / 'keys.npz', a=np.zeros(3), ts=np.zeros(3))
    with pytest.raises(KeyError, match=r"has neither keys xs, ys, ts, ps nor x, y, t, p \(found: \['a', 'ts'\]\)"):
        read_events(tmp_path / 'keys.npz')
    np.savez(tmp_path / 'frames.npz', **events, frames=toy_frames())
    with pytest.raises(KeyError, match="has 'frames' but no 'frame_timestamps'"):
        read_events(tmp_path / 'frames.npz')
    np.savez(tmp_path / 'stamps.npz', **events, frames=toy_frames(), frame_timestamps=np.zeros(3))
    with pytest.raises(ValueError, match=r'expected 4 frame timestamps, got shape \(3,\)'):
        read_events(tmp_path / 'stamps.npz')
    np.savez(tmp_path / 'size.npz', **events, sensor_size=np.array([3, 4, 5]))
    with pytest.raises(ValueError, match=r"'sensor_size' must be \(H, W\), got \[3, 4, 5\]"):
        read_events(tmp_path / 'size.npz')
    np.savez(tmp_path / 'unsorted.npz', **(events | {'ts': events['ts'][::-1]}))
    with pytest.raises(ValueError, match=r"'.*unsorted.npz': events must be sorted by time, but ts\[0\] = "):
        read_events(tmp_path / 'unsorted.npz')
    np.savez(tmp_path / 'outside.npz', **events, sensor_size=np.array([3, 30]))
    with pytest.raises(ValueError, match=r'ys must lie in \[0, H\) = \[0, 3\) for sensor size \(H, W\) = \(3, 30\)'):
        read_events(tmp_path / 'outside.npz')
    np.savez(tmp_path / 'polarity.npz', **(events | {'ps': events['ps'] * 2}))
    with pytest.raises(ValueError, match=r"'.*polarity.npz': polarities must be in \{0, 1\} or \{-1, \+1\}"):
        read_events(tmp_path / 'polarity.npz')
    np.savez(tmp_path / 'fractional.npz', **(events | {'xs': events['xs'] + 0.5}))
    with pytest.raises(ValueError, match='xs must hold integer pixel coordinates'):
        read_events(tmp_path / 'fractional.npz')
    np.savez(tmp_path / 'empty.npz', **{key: np.zeros(0) for key in events})
    with pytest.raises(ValueError, match=r'has no events and no sensor size; store the sensor size \(H, W\)'):
        read_events(tmp_path / 'empty.npz')

    (tmp_path / 'columns.txt').write_text('0.1 1 2\n0.2 1 2\n')
    with pytest.raises(ValueError, match='expected 4 columns "t x y p" per row, found 3'):
        read_events(tmp_path / 'columns.txt')
    (tmp_path / 'words.txt').write_text('0.1 1 2 1\n0.2 one 2 1\n')
    with pytest.raises(ValueError, match='\'.*words.txt\': expected rows "t x y p" of numbers'):
        read_events(tmp_path / 'words.txt')


def test_writer_errors(tmp_path):
    events, frames = toy_events(), toy_frames()
    path = tmp_path / 'out.h5'
    cases = [
        ({'events': {'xs': events['xs']}}, KeyError, r"events must be a dict with keys xs, ys, ts, ps, got \['xs'\]"),
        ({'events': events | {'xs': events['xs'] + 9}}, ValueError, r'xs must lie in \[0, W\) = \[0, 9\)'),
        ({'frames': frames[..., :5]}, ValueError, r'frames must be \(F, 6, 9\) or \(F, 6, 9, 3\) uint8'),
        ({'frames': frames.astype(np.float32)}, ValueError, 'uint8, got .* float32'),
        ({'frames': frames, 'frame_timestamps': None}, ValueError, r'frames need frame_timestamps, \(F,\) seconds'),
        ({'frames': frames, 'frame_timestamps': [0.1]}, ValueError, r'frame_timestamps must have shape \(4,\)'),
        (
            {'frames': frames, 'frame_timestamps': [0.1] * 4, 'exposures': np.zeros(4)},
            ValueError,
            r'exposures must have shape \(4, 2\)',
        ),
        (
            {'frames': frames, 'frame_timestamps': [0.1] * 4, 'sharp_frames': frames[:2]},
            ValueError,
            'sharp_frames must be uint8 shaped like frames',
        ),
        ({'frame_timestamps': [0.1]}, ValueError, 'frame_timestamps, exposures and sharp_frames need frames'),
    ]
    for change, error, message in cases:
        kwargs = {'path': path, 'events': events, 'sensor_size': SENSOR} | change
        with pytest.raises(error, match=message):
            write_raw_events_h5(**kwargs)
    assert not any(tmp_path.iterdir())
