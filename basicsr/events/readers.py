"""Reading and writing event recordings: raw-event HDF5, npz, text (RPG/ECD style) and AEDAT4.

All readers return events in one convention: ``xs``, ``ys`` int32 pixel column/row, ``ts`` float64 seconds,
``ps`` int8 in {-1, +1}, sorted by time. Time windows are half-open: ``t_start <= t < t_end``.

Raw-event HDF5 layout (the "Monash event_utils" format that EFNet's converters read):

* ``events/xs``, ``events/ys`` (int), ``events/ts`` (float seconds), ``events/ps`` ({0, 1});
* ``images/<name>``: (H, W) or (H, W, 3) uint8 frames with attrs ``timestamp`` (seconds) and ``event_idx``, optional
  ``exposure_start``, ``exposure_end``, ``exposure_time``; names sort in frame order (``image%09d``);
* ``sharp_images/image%09d``: optional ground-truth frames, one per image;
* file attrs ``sensor_resolution`` = [H, W], ``num_events``, ``num_imgs``, optional ``source``.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import h5py
import numpy as np

from basicsr.events.checks import EVENT_KEYS, check_events, normalised_events
from basicsr.utils.errors import InvalidInputError, MissingInputError, MissingKeyError, MissingPackageError, UserError
from basicsr.utils.file_io import AtomicFile, write_errors_named

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = ('.h5', '.hdf5', '.npz', '.txt', '.csv', '.aedat4')
_NPZ_SHORT_KEYS = ('x', 'y', 't', 'p')
TIME_UNITS = {'s': 1.0, 'ms': 1e-3, 'us': 1e-6}
"""Seconds per unit of the timestamps of formats that do not store their unit (.npz, .txt, .csv)."""
_SUSPICIOUS_SPAN_S = 3600.0
"""A recording read as seconds that spans more than this probably holds microseconds or milliseconds."""


@dataclass
class EventRecording:
    """Events of a recording, with its frames when it has them.

    Attributes:
        xs, ys: (N,) int32 pixel column and row.
        ts: (N,) float64 seconds, sorted ascending (absolute camera time for AEDAT4 files: keep float64).
        ps: (N,) int8 polarity in {-1, +1}.
        sensor_size: (H, W) pixels.
        frames: (F, H, W) or (F, H, W, 3) uint8 frames, or None.
        frame_timestamps: (F,) float64 seconds, or None.
        exposure_start, exposure_end: (F,) float64 seconds, or None.
        sharp_frames: ground-truth frames shaped like ``frames``, or None.
        source: where the data came from (the HDF5 ``source`` attribute, else the file name).
    """

    xs: np.ndarray
    ys: np.ndarray
    ts: np.ndarray
    ps: np.ndarray
    sensor_size: tuple[int, int]
    frames: np.ndarray | None = None
    frame_timestamps: np.ndarray | None = None
    exposure_start: np.ndarray | None = None
    exposure_end: np.ndarray | None = None
    sharp_frames: np.ndarray | None = None
    source: str = ''

    @property
    def num_events(self) -> int:
        return int(self.ts.size)

    def events(self) -> dict[str, np.ndarray]:
        """The events as a dict with keys xs, ys, ts, ps (the arrays themselves, not copies)."""
        return {'xs': self.xs, 'ys': self.ys, 'ts': self.ts, 'ps': self.ps}


def concatenate_events(chunks: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join time-ordered event dicts into one, in the reader convention (xs, ys int32, ts float64, ps int8).

    An empty sequence gives empty arrays.
    """
    dtypes = {'xs': np.int32, 'ys': np.int32, 'ts': np.float64, 'ps': np.int8}
    return {
        key: np.concatenate([np.zeros(0, dtype)] + [chunk[key] for chunk in chunks]).astype(dtype, copy=False)
        for key, dtype in dtypes.items()
    }


def read_events(
    path: str | os.PathLike,
    t_start: float | None = None,
    t_end: float | None = None,
    load_frames: bool = True,
    time_unit: str = 's',
) -> EventRecording:
    """Read an event recording, choosing the reader by file extension.

    Supported: ``.h5``/``.hdf5`` (raw-event layout of the module docstring; only the requested time slice is read),
    ``.npz`` (keys xs/ys/ts/ps or x/y/t/p, t in ``time_unit``, ps in {0, 1} or {-1, +1}; optional ``frames``,
    ``frame_timestamps`` (same unit), ``sensor_size`` = (H, W)), ``.txt``/``.csv`` (rows ``t x y p``, t in
    ``time_unit``, separated by spaces or commas; an optional first line ``width height`` as in the RPG/ECD data
    sets, or a line of column names), ``.aedat4`` (iniVation AEDAT 4 through the optional ``aedat`` package; the
    first event stream and the frame stream). Without a sensor size in the file (npz/txt), it is taken from the
    frames or else as (max y + 1, max x + 1).

    Every reader checks what it returns: finite timestamps sorted by time, coordinates inside the sensor,
    polarities in {0, 1} or {-1, +1}; truncated or corrupt files are named. A .npz/.txt/.csv recording read as
    seconds that spans more than an hour gets a warning: its timestamps are probably microseconds.

    Args:
        path: the file.
        t_start, t_end: keep events (and frames, by timestamp) with t_start <= t < t_end, seconds; None = open end.
        load_frames: read frames and their timestamps; False skips them (faster, less memory).
        time_unit: unit of the timestamps stored in .npz/.txt/.csv files, 's', 'ms' or 'us'; they are scaled to
            seconds. The other formats store their unit, and only 's' is accepted for them.

    Returns:
        An :class:`EventRecording`, timestamps in seconds.

    Raises:
        MissingInputError (a FileNotFoundError): the file does not exist.
        InvalidInputError (a ValueError): unsupported extension, truncated or corrupt file, malformed content (the
            message names the file and what was found).
        MissingKeyError (a KeyError and ValueError): a required dataset, key or attribute is missing.
        MissingPackageError (an ImportError): an ``.aedat4`` file without the ``aedat`` package installed.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"events file '{path}' does not exist")
    readers = {
        '.h5': _read_h5,
        '.hdf5': _read_h5,
        '.npz': _read_npz,
        '.txt': _read_text,
        '.csv': _read_text,
        '.aedat4': _read_aedat4,
    }
    extension = path.suffix.lower()
    if extension not in readers:
        raise InvalidInputError(
            f"events file '{path}' has an unsupported extension '{path.suffix}'; supported: "
            f'{", ".join(SUPPORTED_EXTENSIONS)}'
        )
    if time_unit not in TIME_UNITS:
        raise InvalidInputError(f'time_unit must be one of {", ".join(TIME_UNITS)}, got {time_unit!r}')
    if extension in ('.npz', '.txt', '.csv'):
        return readers[extension](path, t_start, t_end, load_frames, TIME_UNITS[time_unit])
    if time_unit != 's':
        raise InvalidInputError(
            f"events file '{path}': {extension} files store their own time unit; time_unit "
            "(--time_unit) applies to .npz, .txt and .csv files only, leave it at 's'"
        )
    return readers[extension](path, t_start, t_end, load_frames)


_H5_FAILURES = (OSError, RuntimeError, KeyError, TypeError, ValueError)
"""What h5py raises on a damaged file, depending on where the damage is."""


def _damage_message(path: Path, error: BaseException, key: str | None = None) -> str:
    what = f"cannot read '{key}'" if key else 'cannot be read'
    return (
        f"events file '{path}' {what} ({type(error).__name__}: {error}); the file is truncated or corrupt; copy "
        'or convert it again'
    )


def _names_damage(method: Callable) -> Callable:
    """Turn h5py's errors on a damaged file inside a RawEventH5 method into an InvalidInputError naming the file."""

    @functools.wraps(method)
    def wrapper(self: RawEventH5, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except UserError:
            raise
        except _H5_FAILURES as error:
            raise InvalidInputError(_damage_message(self.path, error)) from error

    return wrapper


class RawEventH5:
    """Lazy access to a raw-event HDF5 file (layout in the module docstring); reads only what is asked for.

    Use as a context manager (or call :meth:`close`)::

        with RawEventH5('seq.h5') as f:
            i0, i1 = f.index_at_time(t0), f.index_at_time(t1)
            events = f.events_slice(i0, i1)

    Every slice read is checked (finite sorted timestamps, coordinates inside the sensor, polarities): bisection
    assumes sorted events, so a file that breaks the layout is named when its events are read.

    Raises (constructor):
        MissingInputError (a FileNotFoundError): the file does not exist.
        InvalidInputError (a ValueError): not an HDF5 file, truncated or corrupt; event datasets that are not 1-D of
            equal length.
        MissingKeyError (a KeyError): a required dataset or the ``sensor_resolution`` attribute is missing.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingInputError(f"events file '{self.path}' does not exist")
        try:
            self._file = h5py.File(self.path, 'r')
        except OSError as error:
            raise InvalidInputError(
                f"events file '{self.path}' cannot be opened as HDF5 ({error}); it is truncated, "
                'corrupt or not an HDF5 file; copy or convert it again'
            ) from error
        try:
            self._datasets = {key: self._required_dataset(f'events/{key}') for key in EVENT_KEYS}
            self._check_event_shapes()
            self.sensor_size = self._sensor_resolution()
            self.num_events = int(self._datasets['ts'].shape[0])
            self.source = str(self._file.attrs.get('source', ''))
        except BaseException as error:
            self._file.close()
            if isinstance(error, _H5_FAILURES) and not isinstance(error, UserError):
                raise InvalidInputError(_damage_message(self.path, error)) from error
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @functools.cached_property
    @_names_damage
    def frame_names(self) -> list[str]:
        """Names under ``images/``, sorted (frame order for ``image%09d`` names); [] if there is no such group."""
        return sorted(self._file['images'].keys()) if 'images' in self._file else []

    @functools.cached_property
    @_names_damage
    def sharp_frame_names(self) -> list[str]:
        """Names under ``sharp_images/``, sorted; [] if there is no such group."""
        return sorted(self._file['sharp_images'].keys()) if 'sharp_images' in self._file else []

    @functools.cached_property
    @_names_damage
    def frame_timestamps(self) -> np.ndarray:
        """(F,) float64 seconds: the ``timestamp`` attribute of each frame."""
        return np.array([self._frame_attr(name, 'timestamp') for name in self.frame_names], dtype=np.float64)

    @functools.cached_property
    @_names_damage
    def exposures(self) -> np.ndarray | None:
        """(F, 2) float64 seconds [exposure_start, exposure_end] per frame; None without frames or if one lacks them."""
        images = self._file['images'] if self.frame_names else None
        if images is None or not all(
            {'exposure_start', 'exposure_end'} <= set(images[n].attrs) for n in self.frame_names
        ):
            return None
        return np.array(
            [[self._frame_attr(n, 'exposure_start'), self._frame_attr(n, 'exposure_end')] for n in self.frame_names],
            dtype=np.float64,
        ).reshape(-1, 2)

    @_names_damage
    def read_frame(self, i: int) -> np.ndarray:
        """Frame i: (H, W) or (H, W, 3) uint8, as stored (another dtype is an InvalidInputError naming the frame)."""
        return self._read_frame(f'images/{self.frame_names[self._frame_index(i, len(self.frame_names), "images")]}')

    @_names_damage
    def read_sharp_frame(self, i: int) -> np.ndarray | None:
        """Ground-truth frame i like :meth:`read_frame`, or None if the file has no ``sharp_images`` group."""
        if not self.sharp_frame_names:
            return None
        name = self.sharp_frame_names[self._frame_index(i, len(self.sharp_frame_names), 'sharp_images')]
        return self._read_frame(f'sharp_images/{name}')

    def _read_frame(self, key: str) -> np.ndarray:
        frame = self._read(key)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise InvalidInputError(
                f"events file '{self.path}': frame '{key}' is {frame.shape} {frame.dtype}, "
                'expected (H, W) or (H, W, 3) uint8; convert the frames to 8 bits'
            )
        return frame

    def _read(self, key: str, selection: Any = ()) -> np.ndarray:
        """``self._file[key][selection]``; a read error (corrupt or truncated data) names the file and key."""
        try:
            return self._file[key][selection]
        except _H5_FAILURES as error:
            raise InvalidInputError(_damage_message(self.path, error, key)) from error

    @_names_damage
    def index_at_time(self, t: float) -> int:
        """First event index with ts >= t (numpy ``searchsorted`` side='left'), by bisection on the file.

        Reads O(log N) single timestamps, not the whole dataset.
        """
        ts = self._datasets['ts']
        low, high = 0, self.num_events
        while low < high:
            middle = (low + high) // 2
            if ts[middle] < t:
                low = middle + 1
            else:
                high = middle
        return low

    @_names_damage
    def events_slice(self, i0: int, i1: int) -> dict[str, np.ndarray]:
        """Events i0..i1-1 as a dict: xs, ys int32, ts float64 seconds, ps int8 in {-1, +1}."""
        if not 0 <= i0 <= i1 <= self.num_events:
            raise IndexError(f"events file '{self.path}': event slice [{i0}, {i1}) is outside [0, {self.num_events}]")
        raw = {key: self._read(f'events/{key}', slice(i0, i1)) for key in EVENT_KEYS}
        where = f"events file '{self.path}' (events {i0}..{i1 - 1})"
        events = normalised_events(raw, where)
        check_events(events, self.sensor_size, where)
        return events

    def _required_dataset(self, name: str) -> h5py.Dataset:
        if name not in self._file or not isinstance(self._file[name], h5py.Dataset):
            raise MissingKeyError(
                f"events file '{self.path}' has no dataset '{name}' (found: "
                f'{_h5_overview(self._file)}); expected the raw-event layout events/xs, events/ys, '
                'events/ts, events/ps'
            )
        return self._file[name]

    def _check_event_shapes(self) -> None:
        shapes = {key: ds.shape for key, ds in self._datasets.items()}
        if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) != 1:
            raise InvalidInputError(
                f"events file '{self.path}': events/xs, ys, ts, ps must be 1-D of equal length, got shapes {shapes}"
            )

    def _sensor_resolution(self) -> tuple[int, int]:
        if 'sensor_resolution' not in self._file.attrs:
            raise MissingKeyError(
                f"events file '{self.path}' has no file attribute 'sensor_resolution' (found: "
                f'{sorted(self._file.attrs)}); add it as [H, W]'
            )
        resolution = np.asarray(self._file.attrs['sensor_resolution']).reshape(-1)
        if resolution.size != 2 or np.any(resolution <= 0):
            raise InvalidInputError(
                f"events file '{self.path}': attribute 'sensor_resolution' must be [H, W], got {resolution.tolist()}"
            )
        return int(resolution[0]), int(resolution[1])

    def _frame_attr(self, name: str, attr: str) -> float:
        attrs = self._file['images'][name].attrs
        if attr not in attrs:
            raise MissingKeyError(
                f"events file '{self.path}': frame 'images/{name}' has no attribute '{attr}' (found: {sorted(attrs)})"
            )
        return float(attrs[attr])

    def _frame_index(self, i: int, count: int, group: str) -> int:
        if not -count <= i < count:
            raise IndexError(f"events file '{self.path}': frame index {i} is outside the {count} frames of '{group}'")
        return i


def write_raw_events_h5(
    path: str | os.PathLike,
    events: dict[str, np.ndarray],
    sensor_size: tuple[int, int],
    frames: np.ndarray | None = None,
    frame_timestamps: np.ndarray | None = None,
    exposures: np.ndarray | None = None,
    sharp_frames: np.ndarray | None = None,
    source: str = '',
) -> None:
    """Write events (and frames) in the raw-event HDF5 layout of the module docstring, atomically.

    The file is written under a temporary name in the same folder and renamed over ``path`` at the end, so readers
    never see a half-written file (:class:`basicsr.utils.file_io.AtomicFile`); the folder is created.

    Args:
        path: destination ``.h5`` file.
        events: dict of (N,) arrays xs, ys (int, inside ``sensor_size``), ts (seconds, sorted), ps ({-1, +1} or
            {0, 1}); stored as int16 (int32 beyond 32767 pixels), float64, and uint8 {0, 1}.
        sensor_size: (H, W) pixels.
        frames: (F, H, W) or (F, H, W, 3) uint8, stored as ``images/image%09d``; needs ``frame_timestamps``.
        frame_timestamps: (F,) seconds; each frame also gets ``event_idx`` = first event index with ts >= timestamp.
        exposures: (F, 2) seconds [start, end], stored as ``exposure_start``/``exposure_end``/``exposure_time``.
        sharp_frames: ground truth shaped like ``frames``, stored as ``sharp_images/image%09d``.
        source: free text stored as the file attribute ``source``.

    Raises:
        InvalidInputError / MissingKeyError (ValueError / KeyError): malformed events or frames (the message says
            what was expected).
        WriteError: the file cannot be written (full disk, permissions); names the path, the cause, the bytes free.
    """
    path = Path(path)
    height, width = sensor_size
    stored = _events_for_storage(events, sensor_size, f"write_raw_events_h5('{path}')")
    frames, frame_timestamps, exposures, sharp_frames = _frames_for_storage(
        frames, frame_timestamps, exposures, sharp_frames, sensor_size, f"write_raw_events_h5('{path}')"
    )
    target = AtomicFile(path)
    try:
        with write_errors_named(path), h5py.File(target.temporary, 'w') as f:
            for key, values in stored.items():
                f.create_dataset(f'events/{key}', data=values)
            num_frames = 0 if frames is None else len(frames)
            for i in range(num_frames):
                image = f.create_dataset(f'images/image{i:09d}', data=frames[i])
                image.attrs['timestamp'] = frame_timestamps[i]
                image.attrs['event_idx'] = int(np.searchsorted(stored['ts'], frame_timestamps[i], side='left'))
                if exposures is not None:
                    image.attrs['exposure_start'], image.attrs['exposure_end'] = exposures[i]
                    image.attrs['exposure_time'] = exposures[i, 1] - exposures[i, 0]
                if sharp_frames is not None:
                    f.create_dataset(f'sharp_images/image{i:09d}', data=sharp_frames[i])
            f.attrs['sensor_resolution'] = np.array([height, width], dtype=np.int64)
            f.attrs['num_events'] = stored['ts'].size
            f.attrs['num_imgs'] = num_frames
            f.attrs['source'] = source
        target.commit()
    finally:
        target.discard()


def _events_for_storage(
    events: dict[str, np.ndarray], sensor_size: tuple[int, int], where: str
) -> dict[str, np.ndarray]:
    """Validated events in their on-disk dtypes: xs/ys int16 (int32 if needed), ts float64, ps uint8 {0, 1}."""
    if not isinstance(events, dict) or any(key not in events for key in EVENT_KEYS):
        found = sorted(events) if isinstance(events, dict) else type(events).__name__
        raise MissingKeyError(f'{where}: events must be a dict with keys xs, ys, ts, ps, got {found}')
    normalised = normalised_events({key: np.asarray(events[key]) for key in EVENT_KEYS}, where)
    check_events(normalised, sensor_size, where)
    coordinate_dtype = np.int16 if max(sensor_size) <= np.iinfo(np.int16).max else np.int32
    return {
        'xs': normalised['xs'].astype(coordinate_dtype),
        'ys': normalised['ys'].astype(coordinate_dtype),
        'ts': normalised['ts'],
        'ps': (normalised['ps'] > 0).astype(np.uint8),
    }


def _frames_for_storage(
    frames: np.ndarray | None,
    frame_timestamps: np.ndarray | None,
    exposures: np.ndarray | None,
    sharp_frames: np.ndarray | None,
    sensor_size: tuple[int, int],
    where: str,
) -> tuple[Any, Any, Any, Any]:
    """Validated (frames, frame_timestamps float64, exposures float64 (F, 2), sharp_frames); Nones when absent."""
    if frames is None:
        if any(v is not None for v in (frame_timestamps, exposures, sharp_frames)):
            raise InvalidInputError(f'{where}: frame_timestamps, exposures and sharp_frames need frames')
        return None, None, None, None
    frames = np.asarray(frames)
    expected = f'(F, {sensor_size[0]}, {sensor_size[1]}) or (F, {sensor_size[0]}, {sensor_size[1]}, 3) uint8'
    if (
        frames.dtype != np.uint8
        or frames.ndim not in (3, 4)
        or frames.shape[1:3] != tuple(sensor_size)
        or (frames.ndim == 4 and frames.shape[3] != 3)
    ):
        raise InvalidInputError(f'{where}: frames must be {expected}, got {frames.shape} {frames.dtype}')
    if frame_timestamps is None:
        raise InvalidInputError(f'{where}: frames need frame_timestamps, (F,) seconds')
    frame_timestamps = np.asarray(frame_timestamps, dtype=np.float64)
    if frame_timestamps.shape != (len(frames),):
        raise InvalidInputError(
            f'{where}: frame_timestamps must have shape ({len(frames)},), got {frame_timestamps.shape}'
        )
    if exposures is not None:
        exposures = np.asarray(exposures, dtype=np.float64)
        if exposures.shape != (len(frames), 2):
            raise InvalidInputError(
                f'{where}: exposures must have shape ({len(frames)}, 2) [start, end], got {exposures.shape}'
            )
    if sharp_frames is not None:
        sharp_frames = np.asarray(sharp_frames)
        if sharp_frames.shape != frames.shape or sharp_frames.dtype != np.uint8:
            raise InvalidInputError(
                f'{where}: sharp_frames must be uint8 shaped like frames {frames.shape}, got '
                f'{sharp_frames.shape} {sharp_frames.dtype}'
            )
    return frames, frame_timestamps, exposures, sharp_frames


def _time_window(ts: np.ndarray, t_start: float | None, t_end: float | None) -> slice:
    """The slice of sorted ``ts`` with t_start <= t < t_end (None = open end)."""
    first = 0 if t_start is None else int(np.searchsorted(ts, t_start, side='left'))
    last = ts.size if t_end is None else int(np.searchsorted(ts, t_end, side='left'))
    return slice(first, max(first, last))


def _in_window(times: np.ndarray, t_start: float | None, t_end: float | None) -> np.ndarray:
    """Boolean mask of ``times`` with t_start <= t < t_end (None = open end)."""
    keep = np.ones(times.shape, dtype=bool)
    if t_start is not None:
        keep &= times >= t_start
    if t_end is not None:
        keep &= times < t_end
    return keep


def _read_h5(path: Path, t_start: float | None, t_end: float | None, load_frames: bool) -> EventRecording:
    with RawEventH5(path) as f:
        first = 0 if t_start is None else f.index_at_time(t_start)
        last = f.num_events if t_end is None else max(first, f.index_at_time(t_end))
        recording = EventRecording(
            **f.events_slice(first, last), sensor_size=f.sensor_size, source=f.source or path.name
        )
        if load_frames and f.frame_names:
            selected = np.flatnonzero(_in_window(f.frame_timestamps, t_start, t_end))
            recording.frames = _stack_frames(f.read_frame, selected)
            recording.frame_timestamps = f.frame_timestamps[selected]
            if f.exposures is not None:
                recording.exposure_start, recording.exposure_end = f.exposures[selected].T
            if f.sharp_frame_names:
                if len(f.sharp_frame_names) != len(f.frame_names):
                    raise InvalidInputError(
                        f"events file '{path}' has {len(f.sharp_frame_names)} sharp_images for "
                        f'{len(f.frame_names)} images; expected one ground-truth frame per image'
                    )
                recording.sharp_frames = _stack_frames(f.read_sharp_frame, selected)
    return recording


def _stack_frames(read: Callable[[int], np.ndarray], indices: np.ndarray) -> np.ndarray:
    """(F, H, W[, 3]) stack of ``read(i)`` for ``indices``; an empty selection gives (0, ...) shaped like frame 0."""
    if indices.size == 0:
        example = read(0)
        return np.zeros((0, *example.shape), dtype=example.dtype)
    return np.stack([read(int(i)) for i in indices])


def _read_npz(
    path: Path, t_start: float | None, t_end: float | None, load_frames: bool, seconds_per_unit: float
) -> EventRecording:
    where = f"events file '{path}'"
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            names = next((names for names in (EVENT_KEYS, _NPZ_SHORT_KEYS) if set(names) <= keys), None)
            if names is None:
                raise MissingKeyError(f'{where} has neither keys xs, ys, ts, ps nor x, y, t, p (found: {sorted(keys)})')
            events = normalised_events({key: data[name] for key, name in zip(EVENT_KEYS, names)}, where)
            frames = data['frames'] if load_frames and 'frames' in keys else None
            if frames is not None and 'frame_timestamps' not in keys:
                raise MissingKeyError(f"{where} has 'frames' but no 'frame_timestamps' (found: {sorted(keys)})")
            frame_timestamps = data['frame_timestamps'].astype(np.float64) if frames is not None else None
            sensor_size = _npz_sensor_size(data, keys, frames, events, where)
    except UserError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise InvalidInputError(
            f'{where} cannot be read as .npz ({type(error).__name__}: {error}); it is truncated, '
            'corrupt or not a numpy .npz archive; write or copy it again'
        ) from error
    events['ts'] = _in_seconds(events['ts'], seconds_per_unit, where)
    if frame_timestamps is not None:
        frame_timestamps = frame_timestamps * seconds_per_unit
    return _windowed_recording(events, sensor_size, frames, frame_timestamps, t_start, t_end, path.name, where)


def _in_seconds(ts: np.ndarray, seconds_per_unit: float, where: str) -> np.ndarray:
    """``ts * seconds_per_unit``; warns when timestamps read as seconds span more than an hour."""
    if seconds_per_unit != 1.0:
        return ts * seconds_per_unit
    span = float(ts.max() - ts.min()) if ts.size else 0.0
    if span > _SUSPICIOUS_SPAN_S:
        warnings.warn(
            f'{where}: the timestamps, read as seconds, span {span:.4g} s ({span / 3600:.1f} hours); if '
            'they are microseconds or milliseconds, pass --time_unit us (or ms), i.e. '
            "read_events(..., time_unit='us')",
            UserWarning,
            stacklevel=4,
        )
    return ts


def _npz_sensor_size(
    data: Any, keys: set[str], frames: np.ndarray | None, events: dict[str, np.ndarray], where: str
) -> tuple[int, int]:
    for key in ('sensor_size', 'sensor_resolution'):
        if key in keys:
            size = np.asarray(data[key]).reshape(-1)
            if size.size != 2:
                raise InvalidInputError(f"{where}: '{key}' must be (H, W), got {size.tolist()}")
            return int(size[0]), int(size[1])
    if frames is not None:
        return int(frames.shape[1]), int(frames.shape[2])
    return _inferred_sensor_size(events, where)


def _inferred_sensor_size(events: dict[str, np.ndarray], where: str) -> tuple[int, int]:
    if events['ts'].size == 0:
        raise InvalidInputError(f'{where} has no events and no sensor size; store the sensor size (H, W) in the file')
    logger.info('%s stores no sensor size; using (max y + 1, max x + 1)', where)
    return int(events['ys'].max()) + 1, int(events['xs'].max()) + 1


def _windowed_recording(
    events: dict[str, np.ndarray],
    sensor_size: tuple[int, int],
    frames: np.ndarray | None,
    frame_timestamps: np.ndarray | None,
    t_start: float | None,
    t_end: float | None,
    source: str,
    where: str,
) -> EventRecording:
    """An EventRecording of the events and frames inside [t_start, t_end), after validating the events."""
    check_events(events, sensor_size, where)
    window = _time_window(events['ts'], t_start, t_end)
    recording = EventRecording(
        **{key: values[window] for key, values in events.items()}, sensor_size=sensor_size, source=source
    )
    if frames is not None:
        if frame_timestamps.shape != (len(frames),):
            raise InvalidInputError(
                f'{where}: expected {len(frames)} frame timestamps, got shape {frame_timestamps.shape}'
            )
        keep = _in_window(frame_timestamps, t_start, t_end)
        recording.frames, recording.frame_timestamps = frames[keep], frame_timestamps[keep]
    return recording


def _read_text(
    path: Path, t_start: float | None, t_end: float | None, load_frames: bool, seconds_per_unit: float
) -> EventRecording:
    del load_frames  # text files hold no frames
    where = f"events file '{path}'"
    try:
        with open(path, encoding='utf-8') as f:
            first_line = f.readline().strip()
    except UnicodeDecodeError as error:
        raise InvalidInputError(f'{where} is not a text file ({error}); expected rows "t x y p" of numbers') from error
    delimiter = ',' if ',' in first_line else None
    fields = first_line.replace(',', ' ').split()
    numeric = all(_is_number(field) for field in fields)
    header_size = (int(float(fields[1])), int(float(fields[0]))) if numeric and len(fields) == 2 else None
    skip_rows = 0 if numeric and len(fields) != 2 else 1
    try:
        with warnings.catch_warnings():  # a file with a header and no events is valid
            warnings.simplefilter('ignore', UserWarning)
            table = np.loadtxt(path, delimiter=delimiter, skiprows=skip_rows, ndmin=2, dtype=np.float64)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInputError(
            f'{where}: expected rows "t x y p" of numbers ({error}); a short last row means a truncated file'
        ) from error
    if table.size and table.shape[1] != 4:
        raise InvalidInputError(f'{where}: expected 4 columns "t x y p" per row, found {table.shape[1]}')
    table = table.reshape(-1, 4)
    events = normalised_events({'xs': table[:, 1], 'ys': table[:, 2], 'ts': table[:, 0], 'ps': table[:, 3]}, where)
    events['ts'] = _in_seconds(events['ts'], seconds_per_unit, where)
    sensor_size = header_size or _inferred_sensor_size(events, where)
    return _windowed_recording(events, sensor_size, None, None, t_start, t_end, path.name, where)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_aedat4(path: Path, t_start: float | None, t_end: float | None, load_frames: bool) -> EventRecording:
    try:
        import aedat
    except ImportError as error:
        raise MissingPackageError(
            f"reading '{path}' (AEDAT4) needs the optional package 'aedat': pip install aedat "
            '(or pip install -e .[aedat])'
        ) from error
    where = f"events file '{path}'"
    chunks: list[dict[str, np.ndarray]] = []
    frames: list[dict[str, Any]] = []
    try:
        decoder = aedat.Decoder(str(path))
        streams = decoder.id_to_stream()
        event_streams = sorted(i for i, info in streams.items() if info['type'] == 'events')
        if not event_streams:
            raise InvalidInputError(
                f'{where} has no event stream (streams: {sorted(s["type"] for s in streams.values())})'
            )
        event_stream = event_streams[0]
        sensor_size = (int(streams[event_stream]['height']), int(streams[event_stream]['width']))
        for packet in decoder:
            if 'events' in packet and packet['stream_id'] == event_stream:
                chunks.append(_aedat_events(packet['events'], t_start, t_end))
            elif load_frames and 'frame' in packet:
                frame = packet['frame']
                if _in_window(np.array([frame['t'] / 1e6]), t_start, t_end)[0]:
                    frames.append(frame)
    except (RuntimeError, OSError) as error:  # the decoder reports a truncated file as 'failed to fill whole buffer'
        read = f' after {sum(c["ts"].size for c in chunks)} events' if chunks else ''
        raise InvalidInputError(
            f'{where} cannot be read as AEDAT4{read} ({error}); it is truncated or corrupt (an '
            'interrupted recording or copy); record, export or copy it again'
        ) from error
    recording = _windowed_recording(concatenate_events(chunks), sensor_size, None, None, None, None, path.name, where)
    if load_frames:
        recording.frames = (
            np.stack([f['pixels'] for f in frames]) if frames else np.zeros((0, *sensor_size), dtype=np.uint8)
        )
        times = (
            np.array([[f['t'], f['exposure_begin_t'], f['exposure_end_t']] for f in frames], dtype=np.float64).reshape(
                -1, 3
            )
            / 1e6
        )
        recording.frame_timestamps, recording.exposure_start, recording.exposure_end = times.T
    return recording


def _aedat_events(packet: np.ndarray, t_start: float | None, t_end: float | None) -> dict[str, np.ndarray]:
    """One AEDAT4 event packet (structured: t µs, x, y, on) in the reader convention, cut to [t_start, t_end)."""
    ts = packet['t'].astype(np.float64) / 1e6
    keep = _in_window(ts, t_start, t_end)
    return {
        'xs': packet['x'][keep].astype(np.int32),
        'ys': packet['y'][keep].astype(np.int32),
        'ts': ts[keep],
        'ps': np.where(packet['on'][keep], 1, -1).astype(np.int8),
    }


def _h5_overview(f: h5py.File, limit: int = 12) -> str:
    """A short listing of an HDF5 file's top-level entries and of its 'events' group, for error messages."""
    names = [f'{key}/' if isinstance(f[key], h5py.Group) else key for key in f]
    if 'events' in f and isinstance(f['events'], h5py.Group):
        names += [f'events/{key}' for key in f['events']]
    shown = ', '.join(sorted(names)[:limit])
    return shown + (', ...' if len(names) > limit else '') if names else 'nothing'
