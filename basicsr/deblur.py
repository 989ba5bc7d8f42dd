"""Deblur your own data with a trained EFNet: one frame, a folder of frames, or a whole DAVIS recording.

    python basicsr/deblur.py --weights EFNet-GoPro.pth --image blurry.png --events events.h5 \\
        --exposure 1.020 1.045 --output sharp.png
    python basicsr/deblur.py --weights EFNet-GoPro.pth --image frames/ --events events.npz --time_unit us \\
        --exposure_time 25000 --sync mid --output sharp/
    python basicsr/deblur.py --weights EFNet-REBlur.pth --recording street.aedat4 --output street/ \\
        --video street.mp4 --voxel_norm robust --mask nonzero

Images are read and written as OpenCV does (BGR, the order of the training frames); grey frames stay grey.
Exposure times are in the clock of the events file, in --time_unit (which also gives the unit of the timestamps
of .npz/.txt/.csv events; HDF5 and AEDAT4 files carry their own unit). The same is available in Python:
``from basicsr.deblur import Deblurrer``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

if not __package__:  # run as a script from a clone
    import _clone_path  # noqa: F401

from basicsr.engine.deblur_inputs import (
    IMAGE_EXTENSIONS,
    SYNC_MODES,
    TIME_UNITS,
    EventSource,
    folder_jobs,
    recording_jobs,
    seconds,
    single_frame_job,
)
from basicsr.engine.deblurring import (
    AMP_MODES,
    DEVICES,
    MASK_MODES,
    SWITCHES,
    VOXEL_NORMS,
    Deblurrer,
    RunOutputs,
    deblur_jobs,
    read_network_g,
)
from basicsr.engine.entry_point import run_main
from basicsr.utils.errors import InvalidInputError, MissingInputError
from basicsr.utils.logger import get_root_logger

__all__ = ['Deblurrer', 'main', 'run_deblur']


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='basicsr-deblur',
        description=__doc__.split('\n\n')[0],
        epilog='Event settings: the defaults (max_abs, closing) are the training '
        "convention; for real DAVIS346 events with the GoPro weights try the authors' "
        'recipe --voxel_norm robust --robust_percentiles 35 65 --mask nonzero.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    model = parser.add_argument_group('model')
    model.add_argument('--weights', required=True, help="checkpoint: {'params': ...} (published) or ours")
    model.add_argument('--param_key', default='params', help='entry holding the weights (params or params_ema)')
    model.add_argument(
        '-opt',
        dest='option_file',
        default=None,
        help='option file whose network_g section gives what shapes cannot tell (relu_slope)',
    )
    inputs = parser.add_argument_group('input (one of --image and --recording)')
    source = inputs.add_mutually_exclusive_group(required=True)
    source.add_argument('--image', help='a blurry image file, or a folder of them (with --events)')
    source.add_argument('--recording', help='a recording with frames and exposure windows (DAVIS .aedat4)')
    inputs.add_argument('--events', help='events of --image: raw-event .h5, .npz, .txt/.csv or .aedat4')
    inputs.add_argument(
        '--exposure',
        nargs=2,
        type=float,
        metavar=('T0', 'T1'),
        help='one image: its exposure window [T0, T1) in the clock of the events',
    )
    inputs.add_argument('--sidecar', help='a folder: file with lines "name start end" (default DIR/exposures.txt)')
    inputs.add_argument('--exposure_time', type=float, help='a folder of frames named by timestamp: exposure time')
    inputs.add_argument(
        '--sync',
        choices=SYNC_MODES,
        default='mid',
        help='timestamp names: start of the exposure (start) or its middle (mid)',
    )
    inputs.add_argument(
        '--time_unit',
        choices=tuple(TIME_UNITS),
        default='s',
        help='unit of the times given here and of .npz/.txt/.csv timestamps',
    )
    events = parser.add_argument_group('events to network input')
    events.add_argument('--voxel_norm', choices=VOXEL_NORMS, default='max_abs')
    events.add_argument('--robust_percentiles', nargs=2, type=float, default=(35.0, 65.0), metavar=('LOW', 'HIGH'))
    events.add_argument(
        '--mask',
        choices=MASK_MODES,
        default='closing',
        help="event mask: closing (training), nonzero (authors' DAVIS recipe), none",
    )
    outputs = parser.add_argument_group('output')
    outputs.add_argument('--output', required=True, help='image file (one frame) or folder (folder, recording)')
    outputs.add_argument('--video', help='also write blurry | events | deblurred side by side to this .mp4')
    outputs.add_argument('--video_fps', type=float, default=25.0)
    outputs.add_argument('--contact_sheet', help='also write a few blurry | events | deblurred rows to this image')
    outputs.add_argument('--sheet_rows', type=int, default=4)
    outputs.add_argument('--save_events', action='store_true', help='also write event images to OUTPUT/events/')
    speed = parser.add_argument_group('speed')
    speed.add_argument('--device', choices=DEVICES, default='auto')
    speed.add_argument(
        '--amp',
        choices=AMP_MODES,
        default='auto',
        help='mixed precision: auto (bf16 where the hardware runs it natively), none, bf16, fp16 (CUDA)',
    )
    speed.add_argument(
        '--channels_last',
        choices=SWITCHES,
        default='auto',
        help='channels_last memory format: auto (CPU; CUDA with mixed precision), on or off',
    )
    speed.add_argument('--tile', type=int, default=None, help='tile side in pixels for large frames')
    speed.add_argument('--tile_overlap', type=int, default=32)
    return parser


def plan(args: argparse.Namespace):
    """(jobs, event source, outputs, strict windows) for the chosen input mode."""
    output = Path(args.output)
    if args.recording is not None:
        source = EventSource(args.recording, args.time_unit, load_frames=True)
        return recording_jobs(source), source, _folder_outputs(args, output), False
    if args.events is None:
        raise InvalidInputError('--image needs --events FILE: the events recorded during the exposure')
    image = Path(args.image)
    if not image.exists():
        raise MissingInputError(f"--image '{image}' does not exist")
    if image.is_dir():
        jobs = folder_jobs(
            image, args.time_unit, Path(args.sidecar) if args.sidecar else None, args.exposure_time, args.sync
        )
        return jobs, EventSource(args.events, args.time_unit), _folder_outputs(args, output), False
    if args.exposure is None:
        raise InvalidInputError(
            f"one image ('{image}') needs --exposure T0 T1, its exposure window in the clock of "
            'the events (in --time_unit)'
        )
    start, end = (seconds(t, args.time_unit) for t in args.exposure)
    if not end > start:
        raise InvalidInputError(f'--exposure T0 T1 needs T1 > T0, got {args.exposure[0]} {args.exposure[1]}')
    if output.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InvalidInputError(
            f"--output '{output}' must be an image file name ({', '.join(IMAGE_EXTENSIONS)}) when --image is one image"
        )
    outputs = RunOutputs(folder=output.parent, single=output, **_extras(args, output.parent))
    return [single_frame_job(image, (start, end), output.name)], EventSource(args.events, args.time_unit), outputs, True


def _folder_outputs(args: argparse.Namespace, output: Path) -> RunOutputs:
    if output.suffix.lower() in IMAGE_EXTENSIONS:
        raise InvalidInputError(
            f"--output '{output}' looks like an image file; a folder or recording writes one "
            'image per frame, so give a folder'
        )
    return RunOutputs(folder=output, **_extras(args, output))


def _extras(args: argparse.Namespace, folder: Path) -> dict:
    return {
        'video': Path(args.video) if args.video else None,
        'video_fps': args.video_fps,
        'contact_sheet': Path(args.contact_sheet) if args.contact_sheet else None,
        'sheet_rows': args.sheet_rows,
        'event_folder': folder / 'events' if args.save_events else None,
    }


def run_deblur(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring) without the error boundary: returns 0, raises UserError."""
    args = build_parser().parse_args(argv)
    get_root_logger()
    jobs, source, outputs, strict = plan(args)
    deblurrer = Deblurrer(
        args.weights,
        param_key=args.param_key,
        network_g=read_network_g(args.option_file) if args.option_file else None,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        voxel_norm=args.voxel_norm,
        robust_percentiles=args.robust_percentiles,
        mask=args.mask,
    )
    deblur_jobs(deblurrer, jobs, source, outputs, strict_windows=strict)
    return 0


def main(argv: list[str] | None = None) -> None:
    """The entry point (``basicsr-deblur``): :func:`run_deblur` inside the error boundary; exits 0, or 2 with one
    ``error:`` paragraph."""
    run_main(lambda: run_deblur(argv))


if __name__ == '__main__':
    main()
