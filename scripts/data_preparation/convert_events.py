"""Convert an event recording into the raw-event HDF5 layout that make_voxels.py reads (see datasets/README.md).

Inputs: DAVIS ``.aedat4`` recordings (events and APS frames with their exposure times, via the ``aedat`` package),
``.npz``, ``.txt``/``.csv`` (rows ``t x y p``) and raw-event ``.h5`` files (to cut a time window), read by
:func:`basicsr.events.read_events`. Frames keep their exposure window when the input has one, so the result can be
turned into training files with exposure windows::

    python scripts/data_preparation/convert_events.py --input recording.aedat4 --output raw/recording.h5
    python scripts/data_preparation/make_voxels.py --input_path raw --save_path datasets/MyData/test --mode reblur

``--t_start``/``--t_end`` are seconds after the file's first event (``--absolute_time``: in the file's own clock,
e.g. Unix seconds for AEDAT4); the file's time range is printed, and a window without events is an error.
Timestamps are stored in seconds exactly as read (absolute camera time for AEDAT4); make_voxels measures SCER time
from each file's first event. Files without frames give an events-only file (make_voxels needs frames). A
recording without ground truth gives no ``sharp_images``; use it with ``return_gt_frame: false``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from basicsr.engine.entry_point import run_main
from basicsr.events import SUPPORTED_EXTENSIONS, EventRecording, read_events, write_raw_events_h5
from basicsr.events.readers import TIME_UNITS
from basicsr.utils.errors import InvalidInputError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument('--input', required=True, help=f'recording ({", ".join(SUPPORTED_EXTENSIONS)})')
    parser.add_argument('--output', required=True, help='raw-event .h5 file to write')
    parser.add_argument(
        '--t_start', type=float, default=None, help='keep events and frames from this time (s after the first event)'
    )
    parser.add_argument(
        '--t_end', type=float, default=None, help='keep events and frames before this time (s after the first event)'
    )
    parser.add_argument(
        '--absolute_time',
        action='store_true',
        help="--t_start/--t_end are in the file's own clock (e.g. Unix seconds for AEDAT4)",
    )
    parser.add_argument(
        '--time_unit',
        choices=tuple(TIME_UNITS),
        default='s',
        help='unit of the timestamps stored in .npz/.txt/.csv files (they do not say); converted to seconds',
    )
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    args = parser.parse_args(argv)
    if args.t_start is not None and args.t_end is not None and args.t_end <= args.t_start:
        parser.error(f'--t_end ({args.t_end}) must be greater than --t_start ({args.t_start})')
    return args


def time_range(recording: EventRecording) -> str:
    """The events' time range, in the file's clock and relative to the first event, for messages."""
    if not recording.num_events:
        return 'no events'
    first, last = recording.ts[0], recording.ts[-1]
    return f"events from {first:.6f} to {last:.6f} s in the file's clock (0 to {last - first:.6f} s after the first)"


def cut(recording: EventRecording, t_start: float | None, t_end: float | None) -> EventRecording:
    """The events and frames with t_start <= t < t_end (absolute seconds; None = open end)."""
    ts = recording.ts
    first = 0 if t_start is None else int(np.searchsorted(ts, t_start, side='left'))
    last = ts.size if t_end is None else max(first, int(np.searchsorted(ts, t_end, side='left')))
    events = {key: values[first:last] for key, values in recording.events().items()}
    result = EventRecording(**events, sensor_size=recording.sensor_size, source=recording.source)
    if recording.frames is not None and recording.frame_timestamps is not None:
        stamps = recording.frame_timestamps
        keep = (stamps >= (-np.inf if t_start is None else t_start)) & (stamps < (np.inf if t_end is None else t_end))
        result.frames, result.frame_timestamps = recording.frames[keep], stamps[keep]
        for name in ('exposure_start', 'exposure_end', 'sharp_frames'):
            values = getattr(recording, name)
            setattr(result, name, None if values is None else values[keep])
    return result


def convert(
    input_path: str,
    output_path: str,
    t_start: float | None = None,
    t_end: float | None = None,
    absolute_time: bool = False,
    time_unit: str = 's',
) -> str:
    """Read ``input_path`` and write it as raw-event HDF5 to ``output_path``; returns a one-line summary.

    ``t_start``/``t_end`` are seconds after the first event, or in the file's clock with ``absolute_time``.

    Raises:
        InvalidInputError: the window holds no events (the message gives the file's time range).
    """
    whole = read_events(input_path, time_unit=time_unit)
    print(f'{input_path}: {time_range(whole)}')
    origin = whole.ts[0] if whole.num_events and not absolute_time else 0.0
    window = tuple(None if t is None else t + origin for t in (t_start, t_end))
    recording = cut(whole, *window) if window != (None, None) else whole
    if not recording.num_events:
        asked = (
            ', '.join(
                f'{name} {value}' for name, value in (('--t_start', t_start), ('--t_end', t_end)) if value is not None
            )
            or 'the whole file'
        )
        clock = "in the file's clock (--absolute_time)" if absolute_time else 'in seconds after the first event'
        raise InvalidInputError(
            f"no events to write from '{input_path}' for {asked} ({clock}); the file has "
            f'{time_range(whole)}; choose a window inside that range'
        )
    has_frames = recording.frames is not None and len(recording.frames) > 0
    exposures = None
    if has_frames and recording.exposure_start is not None and recording.exposure_end is not None:
        exposures = np.stack([recording.exposure_start, recording.exposure_end], axis=1)
    write_raw_events_h5(
        output_path,
        recording.events(),
        recording.sensor_size,
        frames=recording.frames if has_frames else None,
        frame_timestamps=recording.frame_timestamps if has_frames else None,
        exposures=exposures,
        sharp_frames=recording.sharp_frames if has_frames else None,
        source=recording.source or os.path.basename(input_path),
    )
    frames = len(recording.frames) if has_frames else 0
    span = f'{recording.ts[-1] - recording.ts[0]:.3f} s'
    return (
        f'{input_path} -> {output_path}: {recording.num_events} events ({span}), {frames} frames'
        f'{" with exposures" if exposures is not None else ""}, sensor {recording.sensor_size[0]}x'
        f'{recording.sensor_size[1]} (HxW)'
    )


def main(argv: list[str] | None = None) -> int:
    """Returns 0; anticipated errors raise UserError (exit 2 with one ``error:`` paragraph under run_main)."""
    args = parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:
        print(f"'{args.output}' exists; skipped (--overwrite replaces it)")
        return 0
    print(convert(args.input, args.output, args.t_start, args.t_end, args.absolute_time, args.time_unit))
    return 0


if __name__ == '__main__':
    run_main(main)
