"""Make a small GoPro-like event deblurring data set from photographs that ship inside installed packages.

For every sequence (the recipe of GoPro-like triples: one latent sharp video gives blur and events):

1. a photograph (scikit-image's ``skimage.data`` colour images, matplotlib's ``grace_hopper.jpg``) is warped along a
   smooth random camera path (translation of about 0.5-1.3 pixels per 240 fps frame, small rotation and zoom), with a
   pasted foreground object on its own path, giving a virtual 240 fps sharp video;
2. each blurry frame averages N in {7, 9, 11, 13} consecutive sharp frames in linear light (inverse gamma 2.2,
   mean, gamma 2.2), the ground truth is the middle one (odd N keeps it at the exposure centre); consecutive
   blurry frames use consecutive, disjoint groups of sharp frames, as in GoPro;
3. events come from ESIM (:class:`basicsr.events.EventSimulator`) run on the grey video, rendered with enough
   sub-steps that nothing moves by more than one pixel per step;
4. the raw-event HDF5 file (frames with ``timestamp`` = time of the sharp frame and exposure window) is written
   to ``--raw_path``, then converted to the training layout (both layouts: datasets/README.md) exactly as
   ``make_voxels.py --mode gopro`` does: frame-centred SCER windows, 6 bins, first and last frame dropped.

ESIM parameters (an assumption; the thresholds behind the released GoPro events are not published): contrast
thresholds C+ = C- = 0.2 (natural log), threshold noise sigma 0.03, log_eps 0.1, no refractory period.
log_eps = 0.1 rather than 1e-3: with 1e-3, small interpolation changes of nearly black pixels become large log
changes, giving 5x more events on the Hubble deep field and 2-3x on the other photographs; 0.1 also matched the
event count of a real DAVIS recording (tests/data/davis346_street). Per 256x256 blurry frame this gives roughly
0.2-3 events per pixel.

Frames are stored in BGR order (OpenCV), like the official files, so ``rgb2bgr: false`` writes correct PNGs.
Train and test use different photographs. Everything is a deterministic function of ``--seed`` and the sizes;
existing complete outputs are skipped (``--overwrite`` rebuilds them).

Example (the default set: 10 train sequences x 8 items, 3 test sequences x 6 items, 256x256, blurry PSNR about
27 dB; 10-20 s on 2 CPU cores)::

    python scripts/data_preparation/make_synthetic_gopro.py
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from basicsr.data.h5_layout import inspect_training_h5
from basicsr.data.scer_conversion import convert_raw_to_training
from basicsr.engine.entry_point import run_main
from basicsr.events import (
    EventSimulator,
    RawEventH5,
    concatenate_events,
    write_raw_events_h5,
)

FPS = 240.0
GAMMA = 2.2
BLUR_FRAME_COUNTS = (7, 9, 11, 13)
SPEED_RANGE = (0.5, 1.3)  # camera translation, pixels per 240 fps frame
ESIM = {'pos_threshold': 0.2, 'neg_threshold': 0.2, 'sigma_threshold': 0.03, 'log_eps': 0.1}
# Photographs by split (no photograph in both). Stereo pairs stay together.
TRAIN_PHOTOS = (
    'astronaut',
    'rocket',
    'immunohistochemistry',
    'motorcycle_left',
    'motorcycle_right',
    'hubble_deep_field',
    'retina',
)
TEST_PHOTOS = ('chelsea', 'coffee', 'grace_hopper')


def load_photo(name: str) -> np.ndarray:
    """A photograph shipped with scikit-image or matplotlib, as (H, W, 3) uint8 RGB."""
    if name == 'grace_hopper':
        from matplotlib import cbook

        with cbook.get_sample_data('grace_hopper.jpg') as handle:
            data = np.frombuffer(handle.read(), np.uint8)
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    from skimage import data

    if name.startswith('motorcycle_'):
        left, right, _ = data.stereo_motorcycle()
        return left if name == 'motorcycle_left' else right
    return getattr(data, name)()


@dataclass(frozen=True)
class CameraPath:
    """A smooth camera motion: position (pixels), rotation (radians) and log zoom as functions of time in frames.

    position(t) = velocity * t + wobble * sin(2 pi t / period + phase), per axis.
    """

    velocity: np.ndarray
    wobble: np.ndarray
    period: float
    phase: np.ndarray
    rotation_rate: float
    zoom_rate: float

    @classmethod
    def random(cls, rng: np.random.Generator, speed: float) -> CameraPath:
        angle = rng.uniform(0, 2 * np.pi)
        return cls(
            velocity=speed * np.array([np.cos(angle), np.sin(angle)]),
            wobble=rng.uniform(0.5, 3.0, 2),
            period=rng.uniform(60, 200),
            phase=rng.uniform(0, 2 * np.pi, 2),
            rotation_rate=math.radians(rng.uniform(-0.04, 0.04)),
            zoom_rate=rng.uniform(-0.0008, 0.0008),
        )

    def pose(self, t: float) -> tuple[np.ndarray, float, float]:
        """(offset (2,) pixels x/y, rotation radians, scale) at time ``t`` in frames."""
        offset = self.velocity * t + self.wobble * np.sin(2 * np.pi * t / self.period + self.phase)
        return offset, self.rotation_rate * t, math.exp(self.zoom_rate * t)

    def max_scale(self, duration: float) -> float:
        """Largest zoom factor (or its inverse) reached within ``duration`` frames."""
        return math.exp(abs(self.zoom_rate) * duration)

    def max_offset(self, duration: float) -> float:
        """Upper bound of |position(t)| in photo pixels for 0 <= t <= ``duration`` frames."""
        return float(np.linalg.norm(self.velocity)) * duration + float(np.linalg.norm(self.wobble))

    def max_speed(self, radius: float, duration: float) -> float:
        """Upper bound of the image motion, in output pixels per frame, of points within ``radius`` of the output
        centre during ``duration`` frames.

        An output point q moves as dq/dt = (zoom_rate - rotation_rate J)(q - c) - scale R^-1 d position/dt.
        """
        wobble_speed = float(np.linalg.norm(self.wobble)) * 2 * np.pi / self.period
        translation = self.max_scale(duration) * (float(np.linalg.norm(self.velocity)) + wobble_speed)
        return translation + (abs(self.rotation_rate) + abs(self.zoom_rate)) * radius


class SceneRenderer:
    """Renders frames of one sequence at any time (in 240 fps frames): a warped photo plus a moving object.

    Args:
        photo: (H, W, 3) uint8 RGB background photograph.
        object_photo: (H', W', 3) uint8 RGB photograph the foreground object is cut from.
        size: output (height, width).
        rng: draws the camera path, the photo region and the object.
        speed: camera translation speed in pixels per frame.
        duration: length of the sequence in frames (sizes the photo so the view never leaves it).
    """

    def __init__(
        self,
        photo: np.ndarray,
        object_photo: np.ndarray,
        size: tuple[int, int],
        rng: np.random.Generator,
        speed: float,
        duration: float,
    ):
        height, width = size
        self.size = size
        self.path = CameraPath.random(rng, speed)
        self.duration = duration
        # photo pixels the view needs: its diagonal at the widest zoom, plus the camera travel on both sides
        needed = math.hypot(height, width) * self.path.max_scale(duration) + 2 * (self.path.max_offset(duration) + 8)
        zoom = max(needed / min(photo.shape[:2]), rng.uniform(0.9, 1.3))
        self.photo = cv2.resize(photo, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC).astype(np.float32)
        self.photo /= 255.0
        margin = needed / 2
        center_range = [(margin, s - margin) for s in self.photo.shape[1::-1]]
        self.center = np.array([rng.uniform(lo, hi) if hi > lo else (lo + hi) / 2 for lo, hi in center_range])
        self._make_object(object_photo, rng, size, speed)

    def _make_object(
        self, object_photo: np.ndarray, rng: np.random.Generator, size: tuple[int, int], speed: float
    ) -> None:
        height, width = size
        radius = int(min(height, width) * rng.uniform(0.12, 0.2))
        diameter = 2 * radius + 1
        scale = max(1.0, 1.2 * diameter / min(object_photo.shape[:2]))
        source = cv2.resize(object_photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        top = rng.integers(0, source.shape[0] - diameter + 1)
        left = rng.integers(0, source.shape[1] - diameter + 1)
        self.object = source[top : top + diameter, left : left + diameter].astype(np.float32) / 255.0
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        axes = rng.uniform(0.6, 1.0, 2) * radius
        inside = (xx / axes[0]) ** 2 + (yy / axes[1]) ** 2
        self.object_alpha = np.clip((1.0 - inside) * radius / 2, 0, 1).astype(np.float32)[..., None]
        angle = rng.uniform(0, 2 * np.pi)
        self.object_velocity = rng.uniform(0.5, 1.5) * speed * np.array([np.cos(angle), np.sin(angle)])
        self.object_start = np.array([rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height])
        self.object_radius = radius

    def max_speed(self) -> float:
        """Upper bound of the image motion of any pixel, pixels per frame."""
        radius = math.hypot(*self.size) / 2
        return max(self.path.max_speed(radius, self.duration), float(np.linalg.norm(self.object_velocity)))

    def render(self, t: float) -> np.ndarray:
        """(H, W, 3) float32 RGB frame in [0, 1] (gamma-encoded) at time ``t`` in frames."""
        height, width = self.size
        offset, angle, scale = self.path.pose(t)
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        out_center = np.array([(width - 1) / 2, (height - 1) / 2])
        src_center = self.center + offset
        # output pixel q -> photo pixel R(angle) S(1/scale) (q - out_center) + src_center
        linear = np.array([[cos, -sin], [sin, cos]])
        matrix = np.hstack([linear, (src_center - linear @ out_center)[:, None]])
        frame = cv2.warpAffine(
            self.photo,
            matrix,
            (width, height),
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        return self._paste_object(frame, t)

    def _paste_object(self, frame: np.ndarray, t: float) -> np.ndarray:
        height, width = self.size
        x, y = self.object_start + self.object_velocity * t - self.object_radius
        shift = np.array([[1.0, 0.0, x], [0.0, 1.0, y]])
        object_layer = cv2.warpAffine(self.object, shift, (width, height), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(self.object_alpha, shift, (width, height), flags=cv2.INTER_LINEAR)[..., None]
        return np.clip(frame * (1 - alpha) + object_layer * alpha, 0.0, 1.0)


def grey(frame: np.ndarray) -> np.ndarray:
    """(H, W) float64 luma in [0, 1] of an (H, W, 3) float RGB frame (Rec. 601 weights on gamma-encoded values)."""
    return np.clip(frame @ np.array([0.299, 0.587, 0.114]), 0.0, 1.0)


def to_bgr_uint8(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR of an (H, W, 3) float RGB frame in [0, 1]."""
    return np.round(np.clip(frame[..., ::-1], 0, 1) * 255).astype(np.uint8)


@dataclass(frozen=True)
class SequenceSpec:
    """Everything that determines one sequence; ``seed`` seeds all its random draws."""

    name: str
    photo: str
    object_photo: str
    num_items: int
    size: tuple[int, int]
    seed: int
    raw_file: str
    training_file: str
    add_noise: bool


def render_sequence(spec: SequenceSpec) -> dict:
    """Render the blurry/sharp frames and simulate the events of one sequence.

    Frames are streamed (only the running linear-light sum of the current blurry frame is kept), so full-size
    sequences fit in memory.

    Returns:
        dict with ``blurry``, ``sharp`` (R, H, W, 3) uint8 BGR, ``timestamps`` (R,) s (time of each sharp frame),
        ``exposures`` (R, 2) s, ``events`` (dict xs, ys int32, ts float64 s, ps int8 +-1) for R = num_items + 2
        raw frames.
    """
    rng = np.random.default_rng(spec.seed)
    counts = rng.choice(BLUR_FRAME_COUNTS, size=spec.num_items + 2)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    renderer = SceneRenderer(
        load_photo(spec.photo),
        load_photo(spec.object_photo),
        spec.size,
        rng,
        speed=rng.uniform(*SPEED_RANGE),
        duration=float(counts.sum()),
    )
    sub_steps = max(1, math.ceil(renderer.max_speed()))
    simulator = EventSimulator(**ESIM, seed=int(rng.integers(2**31)))
    simulator.reset(grey(renderer.render(0.0)), 0.0)
    chunks, blurry, sharp = [], [], []
    for start, count in zip(starts, counts):
        linear_sum = np.zeros((*spec.size, 3), np.float64)
        for frame_index in range(start, start + count):
            frame = renderer.render(float(frame_index))
            if frame_index > 0:
                for step in range(1, sub_steps):
                    t = frame_index - 1 + step / sub_steps
                    chunks.append(simulator.step(grey(renderer.render(t)), t / FPS))
                chunks.append(simulator.step(grey(frame), frame_index / FPS))
            linear_sum += np.power(frame, GAMMA)
            if frame_index - start == count // 2:
                sharp.append(to_bgr_uint8(frame))
        blurry.append(to_bgr_uint8(np.power(linear_sum / count, 1.0 / GAMMA)))
    return {
        'blurry': np.stack(blurry),
        'sharp': np.stack(sharp),
        'timestamps': (starts + counts // 2) / FPS,
        'exposures': np.stack([(starts - 0.5) / FPS, (starts + counts - 0.5) / FPS], axis=1),
        'events': concatenate_events(chunks),
    }


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (peak 255)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float('inf') if mse == 0 else 10 * math.log10(255.0**2 / mse)


def spec_description(spec: SequenceSpec) -> str:
    """The raw file's ``source`` attribute: everything the content depends on (used to recognise a complete file)."""
    return (
        f'make_synthetic_gopro: photo={spec.photo} object={spec.object_photo} items={spec.num_items} '
        f'size={spec.size[0]}x{spec.size[1]} seed={spec.seed} esim={ESIM}'
    )


def is_complete(spec: SequenceSpec, num_bins: int) -> bool:
    """Whether both files of ``spec`` exist, were made from the same parameters and are complete."""
    if not (os.path.isfile(spec.raw_file) and os.path.isfile(spec.training_file)):
        return False
    try:
        with RawEventH5(spec.raw_file) as raw:
            if raw.source != spec_description(spec) or len(raw.frame_names) != spec.num_items + 2:
                return False
        info = inspect_training_h5(spec.training_file, ['sharp_images', 'voxels', 'masks'])
        with h5py.File(spec.training_file, 'r') as handle:
            noise = bool(handle.attrs.get('voxel_noise', False))
    except (OSError, KeyError, ValueError):
        return False
    return (info.num_items, info.frame_size, info.voxel_channels, noise) == (
        spec.num_items,
        spec.size,
        num_bins,
        spec.add_noise,
    )


def blurry_psnrs(training_file: str) -> list[float]:
    """PSNR (dB) of every blurry frame against its sharp frame in a training file."""
    with h5py.File(training_file, 'r') as handle:
        return [
            psnr_uint8(handle['images'][name][()], handle['sharp_images'][name][()])
            for name in sorted(handle['images'])
        ]


def make_sequence(spec: SequenceSpec, num_bins: int, noise_seed: int, overwrite: bool) -> tuple[str, bool, list[float]]:
    """Build (or skip, when complete) one sequence; returns (name, built, blurry PSNRs of its items)."""
    built = overwrite or not is_complete(spec, num_bins)
    if built:
        sequence = render_sequence(spec)
        height, width = spec.size
        write_raw_events_h5(
            spec.raw_file,
            sequence['events'],
            (height, width),
            frames=sequence['blurry'],
            frame_timestamps=sequence['timestamps'],
            exposures=sequence['exposures'],
            sharp_frames=sequence['sharp'],
            source=spec_description(spec),
        )
        convert_raw_to_training(
            spec.raw_file, spec.training_file, 'gopro', num_bins=num_bins, add_noise=spec.add_noise, seed=noise_seed
        )
    return spec.name, built, blurry_psnrs(spec.training_file)


def sequence_specs(args: argparse.Namespace) -> list[SequenceSpec]:
    """All sequences to make: train then test; photos cycle through each split's list, objects come from the next
    photo of the same split (so no photograph appears in both splits)."""
    specs = []
    for split, photos, count, items in (
        ('train', TRAIN_PHOTOS, args.num_train_seqs, args.frames_per_seq),
        ('test', TEST_PHOTOS, args.num_test_seqs, args.test_frames_per_seq),
    ):
        for index in range(count):
            photo, object_photo = photos[index % len(photos)], photos[(index + 1) % len(photos)]
            seed = int(np.random.SeedSequence([args.seed, 0 if split == 'train' else 1, index]).generate_state(1)[0])
            name = f'{split}_{index:03d}_{photo}'
            specs.append(
                SequenceSpec(
                    name=name,
                    photo=photo,
                    object_photo=object_photo,
                    num_items=items,
                    size=(args.height, args.width),
                    seed=seed,
                    raw_file=os.path.join(args.raw_path, split, f'{name}.h5'),
                    training_file=os.path.join(args.save_path, split, f'{name}.h5'),
                    add_noise=args.add_noise,
                )
            )
    return specs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument('--save_path', default='datasets/GoPro_synthetic', help='training HDF5 root ({train,test}/)')
    parser.add_argument('--raw_path', default='datasets/GoPro_synthetic_raw', help='raw-event HDF5 root')
    parser.add_argument('--num_train_seqs', type=int, default=10)
    parser.add_argument('--num_test_seqs', type=int, default=3)
    parser.add_argument('--frames_per_seq', type=int, default=8, help='training items per train sequence')
    parser.add_argument('--test_frames_per_seq', type=int, default=6, help='items per test sequence')
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--width', type=int, default=256)
    parser.add_argument('--full_size', action='store_true', help='GoPro frames: 720x1280 (overrides --height/--width)')
    parser.add_argument('--num_bins', type=int, default=6, help='SCER bins, even')
    parser.add_argument(
        '--add_noise',
        action=argparse.BooleanOptionalAction,
        default=False,
        help="add EFNet's synthetic voxel noise, as the official GoPro files have",
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=min(2, os.cpu_count() or 1), help='sequences in parallel')
    parser.add_argument('--overwrite', action='store_true', help='rebuild sequences that already exist')
    args = parser.parse_args(argv)
    if args.full_size:
        args.height, args.width = 720, 1280
    if args.num_bins < 2 or args.num_bins % 2:
        parser.error(f'--num_bins must be an even number >= 2, got {args.num_bins}')
    for name in ('num_train_seqs', 'num_test_seqs', 'frames_per_seq', 'test_frames_per_seq', 'workers'):
        if getattr(args, name) < (0 if name.startswith('num_') else 1):
            parser.error(f'--{name} is too small: {getattr(args, name)}')
    if min(args.height, args.width) < 32:
        parser.error(f'--height and --width must be at least 32, got {args.height}x{args.width}')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = sequence_specs(args)
    started = time.perf_counter()
    jobs = [(spec, args.num_bins, args.seed, args.overwrite) for spec in specs]
    if args.workers == 1:
        results = [make_sequence(*job) for job in tqdm(jobs, unit='seq', desc='make_synthetic_gopro')]
    else:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(make_sequence, *job) for job in jobs]
            results = [future.result() for future in tqdm(futures, unit='seq', desc='make_synthetic_gopro')]
    elapsed = time.perf_counter() - started
    for split in ('train', 'test'):
        chosen = [r for r, spec in zip(results, specs) if spec.name.startswith(split)]
        psnrs = [p for _, _, values in chosen for p in values]
        if chosen:
            print(
                f'{split}: {len(chosen)} files, {len(psnrs)} samples, blurry PSNR {np.mean(psnrs):.2f} dB '
                f'(min {min(psnrs):.2f}, max {max(psnrs):.2f}) -> {os.path.join(args.save_path, split)}'
            )
    built = sum(r[1] for r in results)
    print(
        f'{built} sequence(s) built, {len(results) - built} skipped (complete; --overwrite rebuilds) '
        f'in {elapsed:.1f} s; raw events in {args.raw_path}'
    )
    return 0


if __name__ == '__main__':
    run_main(main)
