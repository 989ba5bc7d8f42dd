"""What ``basicsr/deblur.py`` deblurs: frames with their exposure windows, and the events to cut those windows from.

Three input modes give a list of :class:`FrameJob`:

* one frame: an image file and its exposure window ``[t0, t1)`` (:func:`single_frame_job`);
* a folder of images: exposure windows from a sidecar file (one line per frame: ``name start end``) or from file
  names that are timestamps, with a fixed exposure time and a sync mode (:func:`folder_jobs`);
* a recording with frames and exposure windows, e.g. a DAVIS ``.aedat4`` file (:func:`recording_jobs`).

Times are seconds inside this module. Command-line times, and the timestamps of ``.npz``/``.txt``/``.csv`` files
(which do not state their unit), are given in ``time_unit`` and converted here; raw-event HDF5 and AEDAT4 files
carry their own unit.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from basicsr.events import read_events
from basicsr.events.readers import TIME_UNITS
from basicsr.utils.errors import InvalidInputError, MissingInputError

logger = logging.getLogger(__name__)

SYNC_MODES = ('start', 'mid')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
UNITLESS_EXTENSIONS = ('.npz', '.txt', '.csv')
"""Event files whose timestamps are read in ``time_unit`` and that may not state a sensor size."""
SIDECAR_NAME = 'exposures.txt'


@dataclass
class FrameJob:
    """One frame to deblur.

    Attributes:
        index: position in the run (0-based).
        name: output file name (no folder).
        label: how messages name the frame (its file, or its index in a recording).
        window: exposure window [start, end) in seconds, in the clock of the events.
        image: (H, W) or (H, W, 3) uint8 frame, or None to read ``path`` when needed.
        path: the image file, for frames read lazily.
    """

    index: int
    name: str
    label: str
    window: tuple[float, float]
    image: np.ndarray | None = None
    path: Path | None = None

    def frame(self) -> np.ndarray:
        """The frame: (H, W) grey or (H, W, 3) uint8 in the file's channel order (BGR for colour files)."""
        return self.image if self.image is not None else read_frame_image(self.path)


class EventSource:
    """All events of a file in memory, cut into exposure windows by time.

    Attributes:
        path: the events file.
        recording: the events (ts in seconds), and the file's frames when it has them.
        states_sensor_size: False for formats that may infer the sensor size from the events (npz, text).
    """

    def __init__(self, path: str | os.PathLike, time_unit: str = 's', load_frames: bool = False) -> None:
        self.path = Path(path)
        unitless = self.path.suffix.lower() in UNITLESS_EXTENSIONS
        self.recording = read_events(self.path, load_frames=load_frames, time_unit=time_unit if unitless else 's')
        self.states_sensor_size = not unitless

    @property
    def sensor_size(self) -> tuple[int, int]:
        return self.recording.sensor_size

    def time_range(self) -> str:
        """The events' first and last timestamps, for messages."""
        ts = self.recording.ts
        return f'[{ts[0]:.6f}, {ts[-1]:.6f}] s' if ts.size else 'nothing (the file has no events)'

    def window(self, start: float, end: float) -> dict[str, np.ndarray]:
        """The events with start <= t < end (searchsorted, left side for both ends): dict of (N,) arrays xs, ys
        int32, ts float64 seconds, ps int8 in {-1, +1}; views, not copies."""
        ts = self.recording.ts
        first, last = np.searchsorted(ts, [start, end], side='left')
        return {key: values[first:last] for key, values in self.recording.events().items()}

    def covers(self, start: float, end: float) -> bool:
        """Whether [start, end) overlaps the time span of the events."""
        ts = self.recording.ts
        return bool(ts.size) and start <= ts[-1] and end > ts[0]

    def check_frame_size(self, frame_size: tuple[int, int], label: str) -> None:
        """Raise InvalidInputError if a frame of (H, W) ``frame_size`` does not fit these events."""
        if self.states_sensor_size and tuple(frame_size) != tuple(self.sensor_size):
            raise InvalidInputError(
                f"image {label} is {frame_size[1]}x{frame_size[0]} (WxH) but the events file '{self.path}' is from a "
                f'{self.sensor_size[1]}x{self.sensor_size[0]} sensor; use the frames of the same camera, at full '
                'sensor resolution (no crop or resize)'
            )
        recording = self.recording
        if recording.num_events and (recording.xs.max() >= frame_size[1] or recording.ys.max() >= frame_size[0]):
            raise InvalidInputError(
                f"events in '{self.path}' lie outside image {label}: x up to {int(recording.xs.max())}, y up to "
                f'{int(recording.ys.max())}, but the image is {frame_size[1]}x{frame_size[0]} (WxH); use the '
                'events of the camera that took the image'
            )


def read_frame_image(path: Path) -> np.ndarray:
    """An 8-bit image file as OpenCV reads it: (H, W) grey or (H, W, 3) BGR uint8.

    Raises:
        MissingInputError: the file does not exist.
        InvalidInputError: not decodable, not 8-bit, or not 1 or 3 channels (e.g. BGRA with alpha).
    """
    if not path.is_file():
        raise MissingInputError(f"image file '{path}' does not exist")
    quiet = cv2.utils.logging.LOG_LEVEL_ERROR  # a truncated file gets our message, not also OpenCV's warning
    previous = cv2.utils.logging.setLogLevel(quiet)
    try:
        image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if image is None:
        raise InvalidInputError(
            f"image file '{path}' cannot be read as an image (not an image, truncated, or a "
            'format OpenCV cannot decode); give a PNG or JPEG file'
        )
    if image.dtype != np.uint8:
        raise InvalidInputError(
            f"image file '{path}' has {image.dtype} pixels; the network takes 8-bit frames: save "
            'it as an 8-bit PNG or JPEG'
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] != 3:
        raise InvalidInputError(
            f"image file '{path}' has {image.shape[2]} channels; expected 3 (colour) or 1 "
            '(grey). Remove the alpha channel (save it as RGB/BGR without transparency)'
        )
    return image


def seconds(value: float, time_unit: str) -> float:
    """A time given in ``time_unit`` ('s', 'ms', 'us') in seconds."""
    return value * TIME_UNITS[time_unit]


def single_frame_job(image: Path, exposure: tuple[float, float], output_name: str) -> FrameJob:
    """The job of one image with its exposure window [start, end) (seconds)."""
    return FrameJob(0, output_name, f"'{image}'", exposure, path=image)


def folder_jobs(
    folder: Path, time_unit: str, sidecar: Path | None = None, exposure_time: float | None = None, sync: str = 'mid'
) -> list[FrameJob]:
    """The jobs of a folder of images, in time order; each output is named like its image, as PNG.

    Windows come from ``sidecar`` (default ``<folder>/exposures.txt`` when it exists; lines ``name start end``
    separated by spaces or commas, ``#`` comments) or else from file names that are timestamps (``<t>.png``) with
    ``exposure_time``: ``sync`` ``start`` gives [t, t + exposure), ``mid`` gives [t - exposure/2, t + exposure/2).
    Times in ``time_unit``.

    Raises:
        MissingInputError / InvalidInputError: missing folder, no images, bad sidecar line or file name, missing
            ``exposure_time``.
    """
    if not folder.is_dir():
        raise MissingInputError(f"image folder '{folder}' does not exist")
    sidecar = sidecar if sidecar is not None else (folder / SIDECAR_NAME if (folder / SIDECAR_NAME).is_file() else None)
    if sidecar is not None:
        windows = read_sidecar(sidecar, folder, time_unit)
    else:
        windows = timestamp_windows(folder, time_unit, exposure_time, sync)
    ordered = sorted(windows.items(), key=lambda item: (item[1][0], item[0]))
    return [
        FrameJob(i, Path(name).stem + '.png', f"'{folder / name}'", window, path=folder / name)
        for i, (name, window) in enumerate(ordered)
    ]


def read_sidecar(sidecar: Path, folder: Path, time_unit: str) -> dict[str, tuple[float, float]]:
    """``{image name: (start, end) seconds}`` from a sidecar file (see :func:`folder_jobs`)."""
    if not sidecar.is_file():
        raise MissingInputError(f"exposure file '{sidecar}' does not exist")
    windows: dict[str, tuple[float, float]] = {}
    for number, line in enumerate(sidecar.read_text(encoding='utf-8').splitlines(), start=1):
        fields = line.split('#')[0].replace(',', ' ').split()
        if not fields:
            continue
        where = f"exposure file '{sidecar}', line {number}"
        try:
            name, start, end = fields[0], float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            raise InvalidInputError(
                f'{where}: expected "name start end" (e.g. "frame_0001.png 0.010 0.035"), found {line.strip()!r}'
            ) from None
        if not end > start:
            raise InvalidInputError(f'{where}: the exposure end {end} must be after its start {start}')
        if not (folder / name).is_file():
            raise MissingInputError(f"{where} names '{name}', which is not in '{folder}'")
        windows[name] = (seconds(start, time_unit), seconds(end, time_unit))
    if not windows:
        raise InvalidInputError(f"exposure file '{sidecar}' lists no frames; write one line per frame: name start end")
    return windows


def timestamp_windows(
    folder: Path, time_unit: str, exposure_time: float | None, sync: str
) -> dict[str, tuple[float, float]]:
    """``{image name: (start, end) seconds}`` for images named by their timestamp (see :func:`folder_jobs`)."""
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not names:
        raise InvalidInputError(f"image folder '{folder}' holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if exposure_time is None or not exposure_time > 0:
        raise InvalidInputError(
            f"image folder '{folder}' has no {SIDECAR_NAME}: give --exposure_time (> 0, in "
            f'--time_unit) for frames named by their timestamp, or an exposure file (--sidecar)'
        )
    exposure = seconds(exposure_time, time_unit)
    windows = {}
    for name in names:
        try:
            stamp = seconds(float(Path(name).stem), time_unit)
        except ValueError:
            raise InvalidInputError(
                f"image '{folder / name}' is not named by its timestamp (e.g. "
                f"'1589163147368868.png' with --time_unit us); rename the frames or list their "
                f'exposure windows in {folder / SIDECAR_NAME} (lines: name start end)'
            ) from None
        start = stamp if sync == 'start' else stamp - exposure / 2
        windows[name] = (start, start + exposure)
    return windows


def recording_jobs(source: EventSource) -> list[FrameJob]:
    """One job per frame of a recording, with its own exposure window; outputs ``<index>_<timestamp µs>.png``.

    Colour frames with an alpha channel (BGRA) lose it; grey frames stay grey.

    Raises:
        InvalidInputError: the file has no frames or no exposure windows.
    """
    recording = source.recording
    if recording.frames is None or len(recording.frames) == 0:
        raise InvalidInputError(
            f"recording '{source.path}' has no frames; deblurring needs the camera's frames "
            '(APS frames of a DAVIS); for separate images use --image with --events'
        )
    if recording.exposure_start is None or recording.exposure_end is None:
        raise InvalidInputError(
            f"recording '{source.path}' has no exposure windows for its frames; use --image DIR "
            'with --events and an exposure file instead'
        )
    frames = recording.frames[..., :3] if recording.frames.ndim == 4 else recording.frames
    jobs = []
    for i, (stamp, start, end) in enumerate(
        zip(recording.frame_timestamps, recording.exposure_start, recording.exposure_end, strict=True)
    ):
        microseconds = math.floor(stamp * 1e6 + 0.5)
        jobs.append(
            FrameJob(
                i,
                f'{i:06d}_{microseconds}.png',
                f'{i} (t = {microseconds} µs)',
                (float(start), float(end)),
                image=frames[i],
            )
        )
    return jobs
