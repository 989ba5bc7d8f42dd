"""ESIM-style event simulation from intensity frames (Rebecq, Gehrig and Scaramuzza, CoRL 2018).

Model, per pixel, with log intensity L = log(I + log_eps) for grey frames I in [0, 1]:

* the first frame sets the reference level ``ref = L``; it produces no events;
* for each next frame (L1 at t1) after (L0 at t0), where |L1 - L0| > 1e-6: the polarity is p = +1 if L1 >= L0
  else -1, the threshold is C = C+ or C- by polarity (plus N(0, sigma) threshold noise drawn per pixel and per
  interval, clipped at 0.01, when ``sigma_threshold`` > 0);
* every level ref + p·k·C (k = 1, 2, ...) inside (L0, L1] (p > 0) or [L1, L0) (p < 0) is a crossing, stamped
  t = t0 + (level - L0)·(t1 - t0)/(L1 - L0) (log intensity is assumed linear in time between frames);
* refractory period R: a crossing is emitted only if the pixel emitted no event during the R seconds before it;
  suppressed crossings still advance the reference;
* afterwards ref moves to the last crossed level, so the sub-threshold residual L1 - ref carries over to the next
  interval (without threshold noise this is exactly ref + p·n·C for n crossings; ESIM's own loop would stop at a
  first level that lies at or behind L0, which only noise that shrinks C between intervals can produce).

Vectorisation: one interval is handled at a time, over the pixels whose log intensity changed. The crossings of one
pixel in one interval are equally spaced in time (spacing s = C·(t1 - t0)/|L1 - L0|), so which of them survive the
refractory period follows arithmetically from the pixel's last emitted time T: the first emitted crossing is the
first j >= 0 with t_j >= T + R, then every m-th with m = max(1, ceil(R/s)). The events are then expanded with
``np.repeat`` and sorted by time with a stable sort (ties keep pixel order y·W + x). Frames must move by at most
about one pixel between samples for the linear interpolation to hold; render sub-frames when they do not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from basicsr.events.readers import concatenate_events

# |ΔL| at or below this counts as "no change" (ESIM's tolerance).
_CHANGE_TOLERANCE = 1e-6
# With threshold noise, a drawn threshold is clipped to at least this value (as ESIM does).
_MIN_THRESHOLD = 0.01


class EventSimulator:
    """Streaming ESIM: feed frames one at a time, get the events of each interval.

    Usage::

        sim = EventSimulator(pos_threshold=0.2, neg_threshold=0.2, seed=0)
        sim.reset(frame0, t0)
        events = sim.step(frame1, t1)  # events in (t0, t1]

    Args:
        pos_threshold, neg_threshold: contrast thresholds C+ and C- (> 0), in natural-log intensity units.
        sigma_threshold: std of the Gaussian threshold noise (>= 0), drawn per changed pixel per interval.
        refractory_period: seconds (>= 0) after an emitted event during which the pixel emits no event.
        log_eps: offset (> 0) in L = log(I + log_eps); larger values suppress events in dark pixels.
        seed: seed of the threshold-noise generator (``reset`` does not reseed it).
    """

    def __init__(
        self,
        pos_threshold: float = 0.2,
        neg_threshold: float = 0.2,
        sigma_threshold: float = 0.0,
        refractory_period: float = 0.0,
        log_eps: float = 1e-3,
        seed: int | None = None,
    ) -> None:
        if not (pos_threshold > 0 and neg_threshold > 0 and log_eps > 0):
            raise ValueError(
                f'EventSimulator: pos_threshold, neg_threshold and log_eps must be > 0, got '
                f'{pos_threshold}, {neg_threshold}, {log_eps}'
            )
        if not (sigma_threshold >= 0 and refractory_period >= 0):
            raise ValueError(
                f'EventSimulator: sigma_threshold and refractory_period must be >= 0, got '
                f'{sigma_threshold}, {refractory_period}'
            )
        self.pos_threshold = float(pos_threshold)
        self.neg_threshold = float(neg_threshold)
        self.sigma_threshold = float(sigma_threshold)
        self.refractory_period = float(refractory_period)
        self.log_eps = float(log_eps)
        self._rng = np.random.default_rng(seed)
        self._time: float | None = None

    def reset(self, frame: np.ndarray, t: float) -> None:
        """Start a new recording at ``frame`` (H, W), grey uint8 or float in [0, 1], taken at ``t`` seconds.

        Sets every pixel's reference level to the frame's log intensity and forgets the last event times.
        """
        log_image = self._log_image(frame, t)
        self._shape = frame.shape
        self._log_previous = log_image
        self._reference = log_image.copy()
        self._last_event_time = np.full(log_image.size, -np.inf)
        self._time = float(t)

    def step(self, frame: np.ndarray, t: float) -> dict[str, np.ndarray]:
        """Events between the previous frame and ``frame`` (H, W), taken at ``t`` seconds (> the previous time).

        Returns:
            dict with (M,) arrays sorted by time (stable; ties in pixel order y·W + x): ``xs``, ``ys`` int32 pixel
            column/row, ``ts`` float64 seconds in (t_previous, t], ``ps`` int8 in {-1, +1}.
        """
        if self._time is None:
            raise RuntimeError('EventSimulator.step: call reset(first_frame, t0) before step()')
        if frame.shape != self._shape:
            raise ValueError(
                f'EventSimulator.step: frame shape {frame.shape} differs from the first frame {self._shape}'
            )
        t = float(t)
        if not t > self._time:
            raise ValueError(f'EventSimulator.step: timestamps must increase strictly, got {t!r} after {self._time!r}')
        log_now = self._log_image(frame, t)
        pixel, ts, ps = self._interval_events(self._log_previous, log_now, self._time, t)
        self._log_previous = log_now
        self._time = t
        order = np.argsort(ts, kind='stable')
        width = self._shape[1]
        return {
            'xs': (pixel[order] % width).astype(np.int32),
            'ys': (pixel[order] // width).astype(np.int32),
            'ts': ts[order],
            'ps': ps[order],
        }

    def _interval_events(
        self, log_before: np.ndarray, log_after: np.ndarray, t0: float, t1: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Crossings of one interval as (pixel int64, ts float64, ps int8), pixel-major, time-ordered per pixel.

        Updates the reference levels and last event times of the pixels involved.
        """
        changed = np.flatnonzero(np.abs(log_after - log_before) > _CHANGE_TOLERANCE)
        l0, l1, reference = log_before[changed], log_after[changed], self._reference[changed]
        polarity = np.where(l1 >= l0, 1, -1)
        threshold = self._thresholds(polarity)

        # Along the polarity direction the crossed levels are ref + k·C with u0 < k·C <= u1.
        k_first = np.maximum(1, np.floor(polarity * (l0 - reference) / threshold) + 1)
        k_last = np.floor(polarity * (l1 - reference) / threshold)
        num_crossings = np.maximum(0, k_last - k_first + 1).astype(np.int64)
        crossed = num_crossings > 0
        self._reference[changed[crossed]] = (reference + polarity * k_last * threshold)[crossed]

        seconds_per_log = (t1 - t0) / (l1 - l0)

        def crossing_time(k: np.ndarray, i: np.ndarray | slice = slice(None)) -> np.ndarray:
            level = reference[i] + polarity[i] * k * threshold[i]
            return np.clip(t0 + (level - l0[i]) * seconds_per_log[i], t0, t1)

        first_emitted, stride, num_emitted = self._refractory_selection(
            num_crossings, crossing_time(k_first), threshold * np.abs(seconds_per_log), self._last_event_time[changed]
        )

        owner = np.repeat(np.arange(changed.size), num_emitted)
        rank = np.arange(owner.size) - np.repeat(np.cumsum(num_emitted) - num_emitted, num_emitted)
        k = k_first[owner] + first_emitted[owner] + rank * stride[owner]
        ts = crossing_time(k, owner)

        emitted = num_emitted > 0
        last_k = k_first + first_emitted + (num_emitted - 1) * stride
        self._last_event_time[changed[emitted]] = crossing_time(last_k)[emitted]
        return changed[owner], ts, polarity[owner].astype(np.int8)

    def _thresholds(self, polarity: np.ndarray) -> np.ndarray:
        """(P,) float64 contrast threshold per changed pixel for this interval."""
        threshold = np.where(polarity > 0, self.pos_threshold, self.neg_threshold)
        if self.sigma_threshold > 0:
            noise = self._rng.normal(0.0, self.sigma_threshold, size=threshold.size)
            threshold = np.maximum(threshold + noise, _MIN_THRESHOLD)
        return threshold

    def _refractory_selection(
        self, num_crossings: np.ndarray, first_time: np.ndarray, spacing: np.ndarray, last_event_time: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which of each pixel's equally spaced crossings are emitted: indices first + i·stride, i < count.

        Args:
            num_crossings: (P,) int64 crossings per pixel in this interval.
            first_time: (P,) float64 seconds of each pixel's first crossing.
            spacing: (P,) float64 seconds between consecutive crossings of a pixel.
            last_event_time: (P,) float64 seconds of each pixel's last emitted event (-inf if none).

        Returns:
            (first, stride, count), each (P,) int64.
        """
        if self.refractory_period == 0:
            return np.zeros_like(num_crossings), np.ones_like(num_crossings), num_crossings
        # last_event_time = -inf (no event yet) gives first = 0.
        first = np.maximum(np.ceil((last_event_time + self.refractory_period - first_time) / spacing), 0)
        first = first.astype(np.int64)
        stride = np.maximum(np.ceil(self.refractory_period / spacing), 1).astype(np.int64)
        count = np.where(first < num_crossings, (num_crossings - first + stride - 1) // stride, 0)
        return first, stride, count

    def _log_image(self, frame: np.ndarray, t: float) -> np.ndarray:
        """(H·W,) float64 log(I + log_eps) of a grey frame."""
        grey = _grey_intensity(frame, f'EventSimulator: the frame at t = {float(t)!r}')
        return np.log(grey + self.log_eps).reshape(-1)


def _grey_intensity(frame: np.ndarray, where: str) -> np.ndarray:
    """A grey frame as float64 intensity in [0, 1].

    Args:
        frame: (H, W) uint8 (scaled by 1/255) or float in [0, 1].
        where: names the frame in error messages.

    Raises:
        ValueError: for other shapes, dtypes, or float values outside [0, 1] (including NaN).
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 2:
        raise ValueError(
            f'{where}: expected a grey (H, W) frame as a numpy array, got '
            f'{getattr(frame, "shape", type(frame).__name__)}; convert colour frames to grey first'
        )
    if frame.dtype == np.uint8:
        return frame / 255.0
    if not np.issubdtype(frame.dtype, np.floating):
        raise ValueError(f'{where}: frames must be uint8 or float in [0, 1], got dtype {frame.dtype}')
    low, high = float(frame.min()), float(frame.max())
    if not (0 <= low and high <= 1):
        raise ValueError(
            f'{where}: float frames must lie in [0, 1], found values in [{low}, {high}]; '
            'divide 8-bit data by 255 or pass it as uint8'
        )
    return frame.astype(np.float64)


def simulate_events(
    frames: np.ndarray | Sequence[np.ndarray],
    timestamps: np.ndarray | Sequence[float],
    pos_threshold: float = 0.2,
    neg_threshold: float = 0.2,
    sigma_threshold: float = 0.0,
    refractory_period: float = 0.0,
    log_eps: float = 1e-3,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Simulate the events of a frame sequence with :class:`EventSimulator` (see the module docstring).

    Args:
        frames: (N, H, W) grey frames, uint8 or float in [0, 1] (or a sequence of N (H, W) frames).
        timestamps: (N,) seconds, strictly increasing.
        pos_threshold, neg_threshold, sigma_threshold, refractory_period, log_eps, seed: see :class:`EventSimulator`.

    Returns:
        dict of (M,) arrays sorted by time: ``xs``, ``ys`` int32, ``ts`` float64 seconds in (t_0, t_{N-1}],
        ``ps`` int8 in {-1, +1}.

    Raises:
        ValueError: mismatched lengths, fewer than one frame, non-increasing timestamps, or invalid frames.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if timestamps.ndim != 1 or len(frames) != timestamps.size or timestamps.size == 0:
        raise ValueError(
            f'simulate_events: expected N >= 1 frames and N timestamps, got {len(frames)} frames and '
            f'timestamps of shape {timestamps.shape}'
        )
    if np.any(np.diff(timestamps) <= 0):
        i = int(np.flatnonzero(np.diff(timestamps) <= 0)[0])
        raise ValueError(
            f'simulate_events: timestamps must increase strictly, but timestamps[{i + 1}] = '
            f'{float(timestamps[i + 1])!r} <= timestamps[{i}] = {float(timestamps[i])!r}'
        )
    simulator = EventSimulator(pos_threshold, neg_threshold, sigma_threshold, refractory_period, log_eps, seed)
    simulator.reset(frames[0], timestamps[0])
    chunks = [simulator.step(frame, t) for frame, t in zip(frames[1:], timestamps[1:], strict=True)]
    return concatenate_events(chunks)
