"""The ESIM simulator against a naive per-pixel loop, exact formulas, and the real DAVIS346 recording."""

from pathlib import Path

import numpy as np
import pytest

from basicsr.events import EventSimulator, concatenate_events, read_events, simulate_events

STREET = Path(__file__).parent / 'data' / 'davis346_street' / 'street.aedat4'


def naive_esim(frames, times, c_pos, c_neg, refractory, log_eps):
    """ESIM written the plain way: a loop over pixels and over crossings, one level after the other."""
    log_frames = [np.log(frame + log_eps) for frame in frames]
    height, width = log_frames[0].shape
    reference = log_frames[0].copy()
    last_event = np.full((height, width), -np.inf)
    events = []
    for i in range(1, len(frames)):
        t0, t1 = times[i - 1], times[i]
        for y in range(height):
            for x in range(width):
                l0, l1 = log_frames[i - 1][y, x], log_frames[i][y, x]
                if abs(l1 - l0) <= 1e-6:
                    continue
                polarity = 1 if l1 >= l0 else -1
                threshold = c_pos if polarity > 0 else c_neg
                level = reference[y, x]
                while True:
                    level += polarity * threshold
                    if not (l0 < level <= l1 if polarity > 0 else l1 <= level < l0):
                        break
                    t = t0 + (level - l0) * (t1 - t0) / (l1 - l0)
                    if t - last_event[y, x] >= refractory:
                        events.append((t, y * width + x, x, y, polarity))
                        last_event[y, x] = t
                    reference[y, x] = level
    events.sort(key=lambda e: (e[0], e[1]))
    return {
        'ts': np.array([e[0] for e in events]),
        'xs': np.array([e[2] for e in events]),
        'ys': np.array([e[3] for e in events]),
        'ps': np.array([e[4] for e in events]),
    }


def frames_from_log(log_values, log_eps):
    """Grey frames whose log(I + eps) equals ``log_values``."""
    return np.exp(np.asarray(log_values, dtype=np.float64)) - log_eps


@pytest.mark.parametrize('refractory', [0.0, 0.004])
@pytest.mark.parametrize('thresholds', [(0.2, 0.2), (0.15, 0.3)])
def test_matches_a_naive_per_pixel_loop(refractory, thresholds):
    rng = np.random.default_rng(11)
    frames = rng.uniform(0.02, 1.0, size=(14, 6, 7))
    frames[5] = frames[4]  # an interval without change
    times = np.cumsum(rng.uniform(0.005, 0.02, size=14))
    expected = naive_esim(frames, times, *thresholds, refractory, 1e-3)
    got = simulate_events(frames, times, *thresholds, refractory_period=refractory, log_eps=1e-3)
    assert len(expected['ts']) > 300
    assert got['xs'].dtype == np.int32 and got['ys'].dtype == np.int32
    assert got['ts'].dtype == np.float64 and got['ps'].dtype == np.int8
    np.testing.assert_allclose(got['ts'], expected['ts'], rtol=0, atol=1e-12)
    for key in ('xs', 'ys', 'ps'):
        np.testing.assert_array_equal(got[key], expected[key])


def test_slow_ramp_gives_the_exact_count_from_the_formula():
    # A 1 %/frame intensity ramp over 40 intervals: Δlog ≈ 40·log(1.01) ≈ 0.398, one crossing of C = 0.2 per pixel,
    # which only a simulator that keeps the sub-threshold change between frames produces.
    start = np.linspace(0.2, 0.6, 48).reshape(6, 8)
    frames = np.stack([start * 1.01**k for k in range(41)])
    log_eps, threshold = 1e-3, 0.2
    expected_per_pixel = np.floor((np.log(frames[-1] + log_eps) - np.log(frames[0] + log_eps)) / threshold)
    events = simulate_events(frames, np.arange(41) / 240, threshold, threshold, log_eps=log_eps)
    counts = np.bincount(events['ys'] * 8 + events['xs'], minlength=48).reshape(6, 8)
    np.testing.assert_array_equal(counts, expected_per_pixel)
    assert counts.sum() == 48 and (events['ps'] == 1).all()


def test_a_single_crossing_is_stamped_by_linear_interpolation():
    log_eps, threshold = 1e-3, 0.2
    l0, l1 = np.log(0.2 + log_eps), np.log(0.2 + log_eps) + 0.3
    frames = frames_from_log([[[l0]], [[l1]]], log_eps)
    t0, t1 = 0.25, 0.29
    events = simulate_events(frames, [t0, t1], threshold, threshold, log_eps=log_eps)
    assert events['ts'].size == 1 and events['ps'][0] == 1
    assert abs(events['ts'][0] - (t0 + (l0 + threshold - l0) * (t1 - t0) / (l1 - l0))) < 1e-12

    # Falling by 0.45 with C- = 0.2: crossings at l0 - 0.2 and l0 - 0.4.
    frames = frames_from_log([[[l1]], [[l1 - 0.45]]], log_eps)
    events = simulate_events(frames, [t0, t1], threshold, threshold, log_eps=log_eps)
    np.testing.assert_array_equal(events['ps'], [-1, -1])
    np.testing.assert_allclose(events['ts'], [t0 + k * 0.2 / 0.45 * (t1 - t0) for k in (1, 2)], rtol=0, atol=1e-12)


def test_sub_threshold_change_is_carried_to_the_next_interval():
    log_eps = 1e-3
    l0 = np.log(0.1 + log_eps)
    frames = frames_from_log([[[l0]], [[l0 + 0.15]], [[l0 + 0.30]]], log_eps)
    events = simulate_events(frames, [0.0, 1.0, 2.0], 0.2, 0.2, log_eps=log_eps)
    # Nothing in the first interval; the level l0 + 0.2 is crossed a third of the way through the second.
    np.testing.assert_allclose(events['ts'], [1.0 + 0.05 / 0.15], rtol=0, atol=1e-12)


def test_refractory_period_suppresses_events_and_the_reference_still_advances():
    log_eps = 1e-3
    # log intensity rises by 2 per second from -2.5: C = 0.2 is crossed at t = 0.1, 0.2, ..., 1.0.
    frames = frames_from_log([[[-2.5]], [[-0.45]], [[-0.25]]], log_eps)
    times = [0.0, 1.025, 2.0]
    events = simulate_events(frames, times, 0.2, 0.2, refractory_period=0.35, log_eps=log_eps)
    # Emitted: 0.1, then the first crossing >= 0.45 (0.5), then >= 0.85 (0.9); 1.0 is suppressed but the reference
    # still moves to -0.5, so the last interval crosses only -0.3 (it would also cross -0.5 if the reference had
    # stayed at the last emitted level -0.7).
    last = 1.025 + (-0.3 + 0.45) / 0.2 * (2.0 - 1.025)
    np.testing.assert_allclose(events['ts'], [0.1, 0.5, 0.9, last], rtol=0, atol=1e-12)
    without = simulate_events(frames, times, 0.2, 0.2, refractory_period=0.0, log_eps=log_eps)
    assert without['ts'].size == 11


def test_threshold_noise_is_drawn_per_pixel_and_per_interval():
    log_eps, sigma = 1e-3, 0.03
    ramp = np.array([-4.0, -2.0, 0.0])  # +2 per interval: about ten crossings per pixel and interval
    frames = frames_from_log(np.broadcast_to(ramp[:, None, None], (3, 20, 30)), log_eps)
    times = [0.0, 1.0, 2.0]
    events = simulate_events(frames, times, 0.2, 0.2, sigma_threshold=sigma, log_eps=log_eps, seed=4)
    pixel = events['ys'] * 30 + events['xs']
    thresholds = []
    for interval in range(2):
        inside = (events['ts'] > times[interval]) & (events['ts'] <= times[interval + 1])
        for p in range(600):
            stamps = events['ts'][inside & (pixel == p)]
            gaps = np.diff(stamps)
            np.testing.assert_allclose(gaps, gaps[0], rtol=1e-9)  # one threshold within an interval
            thresholds.append(gaps[0] * 2.0)  # slope 2 log units per second
    thresholds = np.array(thresholds).reshape(2, 600)
    assert not np.allclose(thresholds[0], thresholds[1])  # redrawn for the next interval
    assert abs(thresholds.mean() - 0.2) < 0.005 and abs(thresholds.std() - sigma) < 0.006

    again = simulate_events(frames, times, 0.2, 0.2, sigma_threshold=sigma, log_eps=log_eps, seed=4)
    other = simulate_events(frames, times, 0.2, 0.2, sigma_threshold=sigma, log_eps=log_eps, seed=5)
    np.testing.assert_array_equal(again['ts'], events['ts'])
    assert other['ts'].size != events['ts'].size or not np.array_equal(other['ts'], events['ts'])

    # Huge noise: thresholds are clipped at 0.01, so a rise of 0.1 gives at most 10 events per pixel.
    frames = frames_from_log([np.full((10, 10), -1.0), np.full((10, 10), -0.9)], log_eps)
    events = simulate_events(frames, [0.0, 1.0], 0.2, 0.2, sigma_threshold=5.0, log_eps=log_eps, seed=0)
    assert np.bincount(events['ys'] * 10 + events['xs'], minlength=100).max() <= 10


def test_events_are_sorted_by_time_with_ties_in_pixel_order():
    frames = np.stack([np.full((2, 3), 0.2), np.full((2, 3), 0.9)])
    events = simulate_events(frames, [0.0, 1.0])
    assert events['ts'].size == 6 * 7  # log(0.901 / 0.201) = 1.50: seven crossings per pixel
    np.testing.assert_array_equal(events['ys'] * 3 + events['xs'], np.tile(np.arange(6), 7))
    assert (np.diff(events['ts']) >= 0).all()


def test_uint8_frames_are_scaled_and_streaming_matches_the_batch_call():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, size=(6, 5, 4), dtype=np.uint8)
    times = np.linspace(0.0, 0.05, 6)
    from_uint8 = simulate_events(frames, times, 0.25, 0.3, refractory_period=0.002, seed=1)
    from_float = simulate_events(frames / 255.0, times, 0.25, 0.3, refractory_period=0.002, seed=1)
    for key in from_uint8:
        np.testing.assert_array_equal(from_uint8[key], from_float[key])

    simulator = EventSimulator(0.25, 0.3, refractory_period=0.002, seed=1)
    simulator.reset(frames[0], times[0])
    streamed = concatenate_events([simulator.step(frame, t) for frame, t in zip(frames[1:], times[1:])])
    for key in from_uint8:
        np.testing.assert_array_equal(streamed[key], from_uint8[key])
    empty = concatenate_events([])
    assert empty['ts'].dtype == np.float64 and empty['xs'].size == 0 and empty['ps'].dtype == np.int8


def test_simulator_input_errors():
    frames = np.zeros((3, 2, 2))
    with pytest.raises(
        ValueError,
        match=r'frame at t = 1.0: float frames must lie in \[0, 1\], found values in '
        r'\[2.0, 2.0\]',
    ):
        simulate_events(np.stack([frames[0], frames[1] + 2]), [0, 1])
    with pytest.raises(ValueError, match=r'found values in \[nan, nan\]'):
        simulate_events(np.full((2, 1, 1), np.nan), [0, 1])
    with pytest.raises(ValueError, match='frames must be uint8 or float in \\[0, 1\\], got dtype int16'):
        simulate_events(frames.astype(np.int16), [0, 1, 2])
    with pytest.raises(ValueError, match=r'expected a grey \(H, W\) frame'):
        simulate_events(np.zeros((2, 2, 2, 3)), [0, 1])
    with pytest.raises(ValueError, match=r'timestamps must increase strictly, but timestamps\[2\] = 1.0'):
        simulate_events(frames, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match='expected N >= 1 frames and N timestamps, got 3 frames'):
        simulate_events(frames, [0.0, 1.0])
    with pytest.raises(ValueError, match='pos_threshold, neg_threshold and log_eps must be > 0'):
        EventSimulator(pos_threshold=0)
    with pytest.raises(ValueError, match='sigma_threshold and refractory_period must be >= 0'):
        EventSimulator(refractory_period=-1)
    simulator = EventSimulator()
    with pytest.raises(RuntimeError, match=r'call reset\(first_frame, t0\) before step'):
        simulator.step(frames[0], 1.0)
    simulator.reset(frames[0], 1.0)
    with pytest.raises(ValueError, match=r'frame shape \(3, 2\) differs from the first frame \(2, 2\)'):
        simulator.step(np.zeros((3, 2)), 2.0)
    with pytest.raises(ValueError, match='timestamps must increase strictly, got 1.0 after 1.0'):
        simulator.step(frames[1], 1.0)


def test_simulated_events_resemble_the_real_recording():
    pytest.importorskip('aedat')
    real = read_events(STREET)
    first, last = real.frame_timestamps[0], real.frame_timestamps[-1]
    between = (real.ts >= first) & (real.ts <= last)
    assert between.sum() == 77139

    simulated = simulate_events(real.frames, real.frame_timestamps, 0.2, 0.2, log_eps=0.1)
    count, real_count = simulated['ts'].size, int(between.sum())
    assert abs(count - real_count) <= 0.15 * real_count, (count, real_count)
    on_share, real_on_share = (simulated['ps'] > 0).mean(), (real.ps[between] > 0).mean()
    assert abs(on_share - real_on_share) <= 0.10, (on_share, real_on_share)

    def pooled_counts(xs, ys):  # 4x4 blocks over the 260x344 part of the 260x346 sensor
        counts = np.bincount(ys.astype(np.int64) * 346 + xs, minlength=260 * 346).reshape(260, 346)[:, :344]
        return counts.reshape(65, 4, 86, 4).sum(axis=(1, 3)).ravel()

    correlation = np.corrcoef(
        pooled_counts(simulated['xs'], simulated['ys']), pooled_counts(real.xs[between], real.ys[between])
    )[0, 1]
    assert correlation >= 0.9, correlation
