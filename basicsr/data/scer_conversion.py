"""Raw-event HDF5 -> training items: frame-aligned event windows, SCER voxels and event masks.

Both layouts are described in datasets/README.md.

Shared by ``scripts/data_preparation/make_voxels.py`` (writes training HDF5 files) and
:class:`basicsr.data.raw_event_dataset.RawEventDataset` (computes the same items on the fly).

Event windows per item (the reference converters), with idx(t) = first event index with ts >= t:

* ``gopro`` (frame-centred, the GoPro converter): item n is raw frame i = n + 1 for i = 1 .. F-2 (the first and
  last frame are dropped) and takes the events [idx((t_{i-1} + t_i) / 2), idx((t_i + t_{i+1}) / 2)), where t_i is
  frame i's ``timestamp`` attribute;
* ``reblur`` (exposure, the REBlur converter): item n is raw frame n for every frame and takes the events
  [idx(exposure_start_n), idx(exposure_end_n)).

SCER timestamps are float32, as in the reference converters, but measured from the file's first event: absolute
camera clocks (AEDAT4 files count from 1970) would otherwise round to a useless float32 grid. For files whose
clock starts near 0 (the GoPro ESIM files) this is the reference computation up to float32 rounding of window
boundaries.

Frames: raw (H, W, 3) frames are transposed to (3, H, W) without a channel swap (the files hold BGR, see
:mod:`basicsr.data.h5_layout`); grey (H, W) frames (DAVIS APS) are repeated to 3 channels.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from basicsr.data.h5_layout import TrainingH5Writer
from basicsr.events import RawEventH5, add_voxel_noise, event_mask, events_to_scer
from basicsr.utils.errors import InvalidInputError

logger = logging.getLogger(__name__)

WINDOW_MODES = ('gopro', 'reblur')


@dataclass(frozen=True)
class ItemWindow:
    """One training item of a raw file: its raw frame index and event slice [begin, end)."""

    frame_index: int
    begin: int
    end: int


def item_windows(raw: RawEventH5, mode: str) -> list[ItemWindow]:
    """The items of a raw-event file for a window ``mode`` (see the module docstring).

    Raises:
        ValueError: unknown mode, too few frames for ``gopro`` (needs 3), or no exposure attributes for ``reblur``;
            the message names the file.
    """
    if mode not in WINDOW_MODES:
        raise InvalidInputError(f'event window mode must be one of {", ".join(WINDOW_MODES)}, got {mode!r}')
    times = raw.frame_timestamps
    if mode == 'gopro':
        if times.size < 3:
            raise InvalidInputError(
                f"raw-event file '{raw.path}' has {times.size} frame(s) under 'images'; mode "
                'gopro drops the first and last frame, so it needs at least 3'
            )
        bounds = [raw.index_at_time(t) for t in (times[:-1] + times[1:]) / 2]
        return [ItemWindow(i, bounds[i - 1], bounds[i]) for i in range(1, times.size - 1)]
    exposures = raw.exposures
    if exposures is None or exposures.shape[0] == 0:
        raise InvalidInputError(
            f"raw-event file '{raw.path}': mode reblur needs the attributes 'exposure_start' "
            "and 'exposure_end' on every frame under 'images'; use mode gopro (frame-centred "
            'windows) for files without exposures'
        )
    return [ItemWindow(i, raw.index_at_time(start), raw.index_at_time(end)) for i, (start, end) in enumerate(exposures)]


def time_origin(raw: RawEventH5) -> float:
    """Timestamp (s) of the file's first event, subtracted before the float32 conversion; 0 without events."""
    return float(raw.events_slice(0, 1)['ts'][0]) if raw.num_events else 0.0


def item_voxel(
    raw: RawEventH5,
    window: ItemWindow,
    num_bins: int = 6,
    keep_middle: bool = False,
    origin: float = 0.0,
    noise_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """SCER of one item's events over the full sensor, optionally with EFNet's synthetic voxel noise.

    Args:
        raw: the open raw-event file.
        window: the item (see :func:`item_windows`).
        num_bins: SCER bins (even).
        keep_middle: insert the reference's all-zero middle channel (num_bins + 1 channels).
        origin: seconds subtracted from the timestamps before they become float32 (see :func:`time_origin`).
        noise_rng: when given, :func:`basicsr.events.add_voxel_noise` is applied with it.

    Returns:
        (C, H, W) float32 signed event counts, C = num_bins (+1 with keep_middle).
    """
    events = raw.events_slice(window.begin, window.end)
    ts = (events['ts'] - origin).astype(np.float32)
    voxel = events_to_scer(
        events['xs'],
        events['ys'],
        ts,
        events['ps'],
        num_bins=num_bins,
        sensor_size=raw.sensor_size,
        keep_middle=keep_middle,
    )
    return add_voxel_noise(voxel, noise_rng) if noise_rng is not None else voxel


def item_mask(voxel: np.ndarray) -> np.ndarray:
    """(1, H, W) uint8 0/255 event mask of a (C, H, W) voxel (the reference's voxel2mask)."""
    return event_mask(voxel)[None]


def frame_chw(frame: np.ndarray) -> np.ndarray:
    """A raw (H, W) or (H, W, 3) uint8 frame as (3, H, W) uint8 (grey repeated, channel order kept)."""
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    return np.ascontiguousarray(frame.transpose(2, 0, 1))


def noise_generator(seed: int, raw_path: str | os.PathLike) -> np.random.Generator:
    """The voxel-noise generator of one file: a function of ``seed`` and the file name only, so results do not
    depend on the order or the process in which files are converted."""
    name = os.path.basename(os.fspath(raw_path)).encode()
    return np.random.default_rng([seed, zlib.crc32(name)])


def has_sharp_frames(raw: RawEventH5) -> bool:
    """Whether the file has ground-truth frames, one per frame under ``images``.

    Raises:
        ValueError: a ``sharp_images`` group whose size differs from ``images``.
    """
    if not raw.sharp_frame_names:
        return False
    if len(raw.sharp_frame_names) != len(raw.frame_names):
        raise InvalidInputError(
            f"raw-event file '{raw.path}' has {len(raw.sharp_frame_names)} frames under "
            f"'sharp_images' but {len(raw.frame_names)} under 'images'; expected one ground-truth "
            'frame per frame'
        )
    return True


def count_items(raw_path: str | os.PathLike, mode: str) -> int:
    """Number of training items ``raw_path`` gives in ``mode`` (reads metadata only)."""
    with RawEventH5(raw_path) as raw:
        return len(item_windows(raw, mode))


def convert_raw_to_training(
    raw_path: str | os.PathLike,
    out_path: str | os.PathLike,
    mode: str,
    num_bins: int = 6,
    keep_middle: bool = False,
    add_noise: bool = False,
    seed: int = 0,
    on_item: Callable[[], None] | None = None,
) -> int:
    """Convert one raw-event file into a training HDF5 file (atomically; see :mod:`basicsr.data.h5_layout`).

    The mask is computed from the stored (noisy, with ``add_noise``) voxel, as in the reference.
    ``sharp_images`` are written when the raw file has them.

    Args:
        raw_path: raw-event HDF5 input.
        out_path: training HDF5 output (replaced if it exists).
        mode: ``gopro`` or ``reblur`` event windows.
        num_bins, keep_middle: SCER settings.
        add_noise: add EFNet's synthetic voxel noise (seeded by ``seed`` and the file name).
        on_item: called after every item (progress bars).

    Returns:
        number of items written.

    Raises:
        MissingInputError, MissingKeyError, InvalidInputError (FileNotFoundError, KeyError, ValueError): unreadable,
            truncated or malformed input (messages name file and key).
        WriteError: the output cannot be written (full disk, permissions).
    """
    if num_bins < 2 or num_bins % 2:
        raise InvalidInputError(
            f'num_bins must be an even number >= 2 (SCER splits the window in two halves), got {num_bins}'
        )
    with RawEventH5(raw_path) as raw:
        windows = item_windows(raw, mode)
        origin = time_origin(raw)
        rng = noise_generator(seed, raw_path) if add_noise else None
        has_sharp = has_sharp_frames(raw)
        attrs = {
            'voxel_method': 'SCER',
            'num_bins': num_bins,
            'keep_middle': keep_middle,
            'event_window': mode,
            'voxel_noise': add_noise,
            'source': os.path.basename(os.fspath(raw_path)),
        }
        with TrainingH5Writer(out_path, sensor_size=raw.sensor_size, attrs=attrs) as writer:
            for window in windows:
                voxel = item_voxel(raw, window, num_bins, keep_middle, origin, rng)
                sharp = frame_chw(raw.read_sharp_frame(window.frame_index)) if has_sharp else None
                writer.add(
                    frame_chw(raw.read_frame(window.frame_index)), voxel=voxel, mask=item_mask(voxel), sharp=sharp
                )
                if on_item is not None:
                    on_item()
    logger.info('%s -> %s: %d items (%s windows, %d bins)', raw_path, out_path, len(windows), mode, num_bins)
    return len(windows)
