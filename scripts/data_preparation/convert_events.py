"""Convert an event recording into the raw-event HDF5 layout that make_voxels.py reads (see datasets/README.md).

Inputs: DAVIS ``.aedat4`` recordings (events and APS frames with their exposure times, via the ``aedat`` package),
``.npz``, ``.txt``/``.csv`` (rows ``t x y p``) and raw-event ``.h5`` files (to cut a time window), read by
:func:`basicsr.events.read_events`. Frames keep their exposure window when the input has one, so the result can be
turned into training files with exposure windows::

    python scripts/data_preparation/convert_events.py --input recording.aedat4 --output raw/recording.h5
    python scripts/data_preparation/make_voxels.py --input_path raw --save_path datasets/MyData/test --mode reblur

Timestamps are stored in seconds exactly as read (absolute camera time for AEDAT4); make_voxels measures SCER time
from each file's first event. Files without frames give an events-only file (make_voxels needs frames). A
recording without ground truth gives no ``sharp_images``; use it with ``return_gt_frame: false``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from basicsr.events import SUPPORTED_EXTENSIONS, read_events, write_raw_events_h5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--input', required=True, help=f"recording ({', '.join(SUPPORTED_EXTENSIONS)})")
    parser.add_argument('--output', required=True, help='raw-event .h5 file to write')
    parser.add_argument('--t_start', type=float, default=None, help='keep events and frames from this time (s)')
    parser.add_argument('--t_end', type=float, default=None, help='keep events and frames before this time (s)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    args = parser.parse_args(argv)
    if args.t_start is not None and args.t_end is not None and args.t_end <= args.t_start:
        parser.error(f'--t_end ({args.t_end}) must be greater than --t_start ({args.t_start})')
    return args


def convert(input_path: str, output_path: str, t_start: float | None = None, t_end: float | None = None) -> str:
    """Read ``input_path`` and write it as raw-event HDF5 to ``output_path``; returns a one-line summary."""
    recording = read_events(input_path, t_start=t_start, t_end=t_end)
    has_frames = recording.frames is not None and len(recording.frames) > 0
    exposures = None
    if has_frames and recording.exposure_start is not None and recording.exposure_end is not None:
        exposures = np.stack([recording.exposure_start, recording.exposure_end], axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    write_raw_events_h5(output_path, recording.events(), recording.sensor_size,
                        frames=recording.frames if has_frames else None,
                        frame_timestamps=recording.frame_timestamps if has_frames else None,
                        exposures=exposures,
                        sharp_frames=recording.sharp_frames if has_frames else None,
                        source=recording.source or os.path.basename(input_path))
    frames = len(recording.frames) if has_frames else 0
    span = (f'{recording.ts[-1] - recording.ts[0]:.3f} s' if recording.num_events else 'no events')
    return (f"{input_path} -> {output_path}: {recording.num_events} events ({span}), {frames} frames"
            f"{' with exposures' if exposures is not None else ''}, sensor {recording.sensor_size[0]}x"
            f'{recording.sensor_size[1]} (HxW)')


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:
        print(f"'{args.output}' exists; skipped (--overwrite replaces it)")
        return 0
    try:
        print(convert(args.input, args.output, args.t_start, args.t_end))
    except (OSError, KeyError, ValueError, ImportError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f'error: {message}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
