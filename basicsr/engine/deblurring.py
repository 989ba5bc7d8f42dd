"""Deblurring a user's own frames with a trained EFNet: the :class:`Deblurrer` and the run behind ``deblur.py``.

Events become the network's input exactly as in training (:mod:`basicsr.data.scer_conversion`): SCER of the
window's events with float32 timestamps measured from the window's first event, the number of bins (and
``keep_middle``) read from the checkpoint's event channels, max-abs normalisation and the closed event mask. The
EFNet authors' recipe for real DAVIS346 events is available as ``voxel_norm='robust'`` (percentiles 35/65) and
``mask='nonzero'``:

* ``max_abs`` + ``closing`` (default): data like the training data (simulated GoPro events, REBlur files);
* ``robust`` + ``nonzero``: real DAVIS events with the GoPro weights. Where most pixels have no events both
  percentiles are 0 and the counts go in unscaled; a wider range (e.g. 25 75) reaches non-zero values, so every
  event pixel is clamped to about +-1, a strong uniform amplification of sparse events.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from basicsr.archs.efnet_arch import EFNet, efnet_options_from_state_dict
from basicsr.engine.options import OptionsError, load_yaml
from basicsr.events import event_mask, events_to_scer, nonzero_mask, normalize_max_abs, normalize_robust
from basicsr.models.evaluation import tiled_forward
from basicsr.utils.checkpoint import CheckpointError, load_network, read_state_dict
from basicsr.utils.errors import InvalidInputError, MissingInputError, WriteError
from basicsr.utils.performance import autocast, prepare_network, resolve_performance, to_memory_format

if TYPE_CHECKING:
    from basicsr.engine.deblur_inputs import EventSource, FrameJob

logger = logging.getLogger(__name__)

VOXEL_NORMS = ('max_abs', 'robust')
MASK_MODES = ('closing', 'nonzero', 'none')
AMP_MODES = ('auto', 'none', 'bf16', 'fp16')
SWITCHES = ('auto', 'on', 'off')
DEVICES = ('auto', 'cpu', 'cuda')
SPARSE_FRACTION = 1e-3
"""A window whose events touch fewer than this fraction of the pixels gets a warning."""
LISTED_WARNINGS = 5
"""Sparse windows warned about one by one; the others are counted in one summary line."""
_NETWORK_KEYS = ('type', 'in_chn', 'ev_chn', 'wf', 'depth', 'fuse_before_downsample', 'relu_slope', 'num_heads')
_SHAPE_SETTINGS = ('in_chn', 'ev_chn', 'wf', 'depth', 'num_heads')


@dataclass(frozen=True)
class EventSettings:
    """How a window of events becomes the network's event input.

    Attributes:
        num_bins: SCER bins (even); ``keep_middle`` adds the reference's zero middle channel (odd ev_chn).
        voxel_norm: 'max_abs' or 'robust' (module docstring).
        robust_percentiles: (low, high) percentiles of the robust normalisation.
        mask: 'closing' (the training mask), 'nonzero' (the authors' DAVIS mask) or 'none' (no EMGC gating).
    """

    num_bins: int
    keep_middle: bool
    voxel_norm: str = 'max_abs'
    robust_percentiles: tuple[float, float] = (35.0, 65.0)
    mask: str = 'closing'

    @classmethod
    def for_channels(cls, ev_chn: int, **kwargs: Any) -> EventSettings:
        """Settings for a network with ``ev_chn`` event channels: an odd count means ``keep_middle``."""
        return cls(num_bins=ev_chn - ev_chn % 2, keep_middle=bool(ev_chn % 2), **kwargs)


@dataclass
class NetworkInput:
    """One frame's event input. voxel: (C, H, W) float32 normalised; mask: (H, W) uint8 0/255 or None;
    counts: (C, H, W) float32 SCER before normalisation (signed event counts)."""

    voxel: np.ndarray
    mask: np.ndarray | None
    counts: np.ndarray


@dataclass
class DeblurredFrame:
    """The result for one frame.

    Attributes:
        image: the deblurred frame, uint8, shaped like the input ((H, W) grey or (H, W, 3) in its channel order).
        counts: (C, H, W) float32 SCER of the window before normalisation.
        num_events: events in the window.
        active_pixels: pixels with at least one event.
    """

    image: np.ndarray
    counts: np.ndarray
    num_events: int
    active_pixels: int


def event_input(
    events: Mapping[str, np.ndarray], sensor_size: tuple[int, int], settings: EventSettings
) -> NetworkInput:
    """SCER, normalisation and mask of one window's events.

    Args:
        events: (N,) arrays xs, ys (int, inside ``sensor_size``), ts (seconds, float64, sorted), ps ({-1, +1}).
        sensor_size: (H, W).
        settings: see :class:`EventSettings`.
    """
    ts = events['ts']
    relative = (ts - ts[0]).astype(np.float32) if ts.size else ts.astype(np.float32)
    counts = events_to_scer(
        events['xs'],
        events['ys'],
        relative,
        events['ps'],
        num_bins=settings.num_bins,
        sensor_size=sensor_size,
        keep_middle=settings.keep_middle,
    )
    if settings.voxel_norm == 'robust':
        voxel = normalize_robust(counts, settings.robust_percentiles)
    else:
        voxel = normalize_max_abs(counts)
    masks = {'closing': event_mask, 'nonzero': nonzero_mask}
    mask = masks[settings.mask](counts) if settings.mask in masks else None
    return NetworkInput(voxel, mask, counts)


def network_options(state_dict: Mapping[str, torch.Tensor], network_g: Mapping[str, Any] | None, weights: str) -> dict:
    """EFNet's constructor arguments: the shapes of ``state_dict``, plus ``relu_slope`` and
    ``fuse_before_downsample`` from an option file's ``network_g`` (whose shape settings must agree)."""
    options = efnet_options_from_state_dict(state_dict)
    if not network_g:
        return options
    unknown = sorted(set(network_g) - set(_NETWORK_KEYS))
    if unknown:
        raise InvalidInputError(
            f'network_g has unknown keys {", ".join(unknown)} for EFNet (known: {", ".join(_NETWORK_KEYS)})'
        )
    if network_g.get('type', 'EFNet') != 'EFNet':
        raise InvalidInputError(f'network_g.type is {network_g["type"]!r}; deblur.py runs EFNet')
    for key in _SHAPE_SETTINGS:
        given = network_g.get(key)
        expected = options[key]
        if given is not None and (tuple(given[: options['depth']]) if key == 'num_heads' else given) != expected:
            raise InvalidInputError(
                f"network_g.{key} is {given!r} but the weights '{weights}' have {key} = "
                f'{expected!r} (read from their shapes); remove the key or use matching weights'
            )
    for key in ('relu_slope', 'fuse_before_downsample'):
        if key in network_g:
            options[key] = network_g[key]
    return options


def read_network_g(option_file: str | os.PathLike) -> dict:
    """The ``network_g`` section of an option file (the other sections are not read and may be absent)."""
    try:
        tree = load_yaml(option_file)
    except FileNotFoundError as error:
        raise MissingInputError(str(error)) from error
    except OptionsError as error:
        raise InvalidInputError(str(error)) from error
    section = tree.get('network_g') if isinstance(tree, Mapping) else None
    if not isinstance(section, Mapping):
        raise InvalidInputError(
            f"option file '{option_file}' has no network_g section; give the option file the "
            'weights were trained with (only its network_g section is read)'
        )
    return dict(section)


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when available), 'cpu' or 'cuda' as a torch device."""
    if name not in DEVICES:
        raise InvalidInputError(f'device must be one of {", ".join(DEVICES)}, got {name!r}')
    if name == 'cuda' and not torch.cuda.is_available():
        raise InvalidInputError('--device cuda was asked for, but torch sees no CUDA device; use --device cpu')
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(name)


class Deblurrer:
    """A trained EFNet, loaded once, that deblurs one frame per call.

    Usage::

        deblurrer = Deblurrer('EFNet-GoPro.pth')
        sharp = deblurrer(blurry, events)  # (H, W, 3) uint8 BGR + the events of its exposure -> (H, W, 3) uint8

    Args:
        weights: checkpoint file: ``{'params': state_dict}`` (the published weights), ours (``params``,
            ``params_ema``) or a bare state dict; loaded strictly, with ``weights_only=True``.
        param_key: the entry holding the weights ('params' or 'params_ema').
        network_g: an option file's ``network_g`` section, for what shapes cannot tell (``relu_slope``).
        device: 'auto', 'cpu' or 'cuda'.
        amp: 'auto' (bf16 where the hardware runs it natively, else float32), 'none', 'bf16' or 'fp16' (CUDA
            only) mixed precision; see :func:`basicsr.utils.performance.resolve_performance`.
        channels_last: 'auto', 'on' or 'off': the channels_last memory format.
        tile: run on tiles of this side (pixels) with ``tile_overlap``, to bound memory on large frames; None =
            the whole frame at once.
        voxel_norm, robust_percentiles, mask: see :class:`EventSettings`.

    Raises:
        MissingInputError / InvalidInputError: missing, unreadable or non-EFNet weights; bad settings.
    """

    def __init__(
        self,
        weights: str | os.PathLike,
        *,
        param_key: str = 'params',
        network_g: Mapping[str, Any] | None = None,
        device: str = 'auto',
        amp: str = 'auto',
        channels_last: str = 'auto',
        tile: int | None = None,
        tile_overlap: int = 32,
        voxel_norm: str = 'max_abs',
        robust_percentiles: Sequence[float] = (35, 65),
        mask: str = 'closing',
    ) -> None:
        _check_choice('voxel_norm', voxel_norm, VOXEL_NORMS)
        _check_choice('mask', mask, MASK_MODES)
        _check_choice('amp', amp, AMP_MODES)
        _check_choice('channels_last', channels_last, SWITCHES)
        if tile is not None and tile < 16:
            raise InvalidInputError(f'tile must be at least 16 pixels, got {tile}')
        self.device = resolve_device(device)
        switch = {'auto': 'auto', 'on': True, 'off': False}
        perf = {'amp': None if amp == 'none' else amp, 'channels_last': switch[channels_last], 'compile': False}
        self.perf = resolve_performance(perf, self.device)
        logger.info(self.perf.describe())
        self.tile, self.tile_overlap = tile, tile_overlap
        self.options = network_options(_read_weights(weights, param_key), network_g, os.fspath(weights))
        self.events = EventSettings.for_channels(
            self.options['ev_chn'], voxel_norm=voxel_norm, robust_percentiles=tuple(robust_percentiles), mask=mask
        )
        try:
            network = EFNet(**self.options)
            load_network(network, weights, strict=True, param_key=param_key)
            self.net = prepare_network(network.eval(), self.perf)
        except CheckpointError as error:
            raise InvalidInputError(str(error)) from error
        except ValueError as error:  # the network's or the device's settings
            raise InvalidInputError(f"cannot run the weights '{weights}': {error}") from error
        logger.info(
            'EFNet %s from %s; events: %d SCER bins%s, %s normalisation, %s mask',
            self.options,
            weights,
            self.events.num_bins,
            ' + middle channel' if self.events.keep_middle else '',
            self.events.voxel_norm,
            self.events.mask,
        )

    def __call__(self, frame: np.ndarray, events: Mapping[str, np.ndarray]) -> np.ndarray:
        """The deblurred frame (see :meth:`deblur`)."""
        return self.deblur(frame, events).image

    def deblur(self, frame: np.ndarray, events: Mapping[str, np.ndarray]) -> DeblurredFrame:
        """Deblur one frame with the events of its exposure window.

        Args:
            frame: (H, W) grey or (H, W, 3) uint8, in the channel order of the training frames (BGR, as OpenCV
                reads files); grey frames go in as three equal channels and come out grey.
            events: (N,) arrays ``xs``, ``ys`` (pixels inside the frame), ``ts`` (sorted; seconds, or any unit: only
                differences matter), ``ps`` ({0, 1} or {-1, +1}); N may be 0 (then the network sees no events).

        Returns:
            A :class:`DeblurredFrame`; its ``image`` is uint8 shaped like ``frame``.

        Raises:
            InvalidInputError: a frame that is not uint8 (H, W) / (H, W, 1) / (H, W, 3), or events outside it.
        """
        frame = _checked_frame(frame)
        events = _checked_events(events)
        height, width = frame.shape[:2]
        try:
            prepared = event_input(events, (height, width), self.events)
        except ValueError as error:
            raise InvalidInputError(f'the events do not fit the {width}x{height} (WxH) frame: {error}') from error
        colour = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=2)
        output = self._forward(colour, prepared)
        image = output if frame.ndim == 3 else _grey(output)
        touched = (
            np.count_nonzero(
                np.bincount(events['ys'].astype(np.int64) * width + events['xs'], minlength=height * width)
            )
            if len(events['ts'])
            else 0
        )
        return DeblurredFrame(image, prepared.counts, int(len(events['ts'])), int(touched))

    @torch.inference_mode()
    def _forward(self, frame: np.ndarray, prepared: NetworkInput) -> np.ndarray:
        """(H, W, 3) uint8 frame + event input -> (H, W, 3) uint8 output of the last stage."""

        def tensor(array: np.ndarray) -> torch.Tensor:
            return to_memory_format(torch.from_numpy(array)[None].to(self.device), self.perf)

        mask = None if prepared.mask is None else tensor((prepared.mask[None] > 0).astype(np.float32))
        inputs = [
            tensor(np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32) / 255),
            tensor(prepared.voxel),
            mask,
        ]

        def forward(frame: torch.Tensor, voxel: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            with autocast(self.perf):
                return self.net(frame, voxel, mask)[-1].float()

        if self.tile is None:
            output = forward(*inputs)
        else:
            output = tiled_forward(forward, inputs, self.tile, self.tile_overlap, max_minibatch=1)
        output = (output[0].clamp(0, 1) * 255).round().to(torch.uint8)
        return output.permute(1, 2, 0).cpu().numpy()


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InvalidInputError(f'{name} must be one of {", ".join(choices)}, got {value!r}')


def _read_weights(weights: str | os.PathLike, param_key: str) -> dict[str, torch.Tensor]:
    try:
        return read_state_dict(weights, param_key)
    except FileNotFoundError as error:
        raise MissingInputError(
            f"weights file '{os.fspath(weights)}' does not exist; give the checkpoint of a "
            'trained EFNet (--weights), e.g. EFNet-GoPro.pth or experiments/<name>/models/'
            'net_g_latest.pth'
        ) from error
    except CheckpointError as error:
        raise InvalidInputError(
            f'{error} (on the command line: --param_key)' if 'param_key' in str(error) else str(error)
        ) from error


def _checked_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[..., 0]
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3):
        raise InvalidInputError(
            f'a frame must be (H, W) grey or (H, W, 3) colour uint8, got shape {frame.shape} '
            f'{frame.dtype}; drop an alpha channel and convert 16-bit frames to 8-bit'
        )
    return frame


def _checked_events(events: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [key for key in ('xs', 'ys', 'ts', 'ps') if key not in events]
    if missing:
        raise InvalidInputError(f'events must be a mapping with keys xs, ys, ts, ps; missing {", ".join(missing)}')
    return {key: np.asarray(events[key]) for key in ('xs', 'ys', 'ts', 'ps')}


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8, the rounded mean of the three channels (they were fed equal)."""
    return np.round(image.astype(np.float32).mean(axis=2)).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Pictures: event images, side-by-side panels, the contact sheet and the video
# ----------------------------------------------------------------------------------------------
def event_picture(counts: np.ndarray) -> np.ndarray:
    """(C, H, W) SCER counts -> (H, W, 3) BGR uint8 of the net polarity over the window: red ON, blue OFF, white
    none. The last channel holds the second half's sum and the first minus the first half's, so their difference
    is the per-pixel polarity sum."""
    net = counts[-1] - counts[0]
    scale = max(float(np.abs(net).max()), 1.0)
    strength = np.clip(np.abs(net) / scale * 2.0, 0, 1)[..., None]
    colour = np.where(net[..., None] > 0, np.array([40, 40, 220.0]), np.array([220, 90, 30.0]))
    return (255.0 * (1 - strength) + colour * strength).astype(np.uint8)


def side_by_side(frame: np.ndarray, result: DeblurredFrame) -> np.ndarray:
    """(H, 3W, 3) BGR uint8: blurry | events | deblurred."""

    def bgr(image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image

    return np.concatenate([bgr(frame), event_picture(result.counts), bgr(result.image)], axis=1)


def labelled(panel: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """A side-by-side panel with a caption above each third."""
    band = np.full((24, panel.shape[1], 3), 255, np.uint8)
    third = panel.shape[1] // len(labels)
    for i, text in enumerate(labels):
        cv2.putText(band, text, (i * third + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


class VideoWriter:
    """An mp4 of side-by-side panels, opened on the first frame."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self._writer = path, fps, None

    def add(self, panel: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*'mp4v'), self.fps, (panel.shape[1], panel.shape[0])
            )
            if not self._writer.isOpened():
                raise WriteError(
                    f"cannot write the video '{self.path}' (OpenCV has no mp4v encoder here, or the "
                    'folder is not writable); use a .mp4 or .avi name in a writable folder'
                )
        self._writer.write(panel)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def write_image(image: np.ndarray, path: Path) -> None:
    """Write an image with OpenCV (format from the extension); WriteError on failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(path.suffix or '.png', image)
        if not ok:
            raise ValueError('encoding failed')
        encoded.tofile(str(path))
    except (OSError, ValueError, cv2.error) as error:
        raise WriteError(
            f"cannot write '{path}' ({error}); give a writable path ending in .png, .jpg, .bmp or .tif"
        ) from error


def sparse_window_warning(
    label: str, result: DeblurredFrame, window: tuple[float, float], num_pixels: int
) -> str | None:
    """The warning for a window whose events touch fewer than 0.1 % of the pixels, else None."""
    if result.active_pixels >= SPARSE_FRACTION * num_pixels:
        return None
    return (
        f'frame {label}: {result.num_events} events touching {result.active_pixels} of {num_pixels} pixels '
        f'({100 * result.active_pixels / num_pixels:.3f} %) in its exposure window [{window[0]:.6f}, '
        f'{window[1]:.6f}) s: the output stays close to the input'
    )


@dataclass
class RunOutputs:
    """Where a run writes: ``images`` maps job names to files; optional video, contact sheet, event images."""

    folder: Path | None
    single: Path | None = None
    video: Path | None = None
    video_fps: float = 25.0
    contact_sheet: Path | None = None
    sheet_rows: int = 4
    event_folder: Path | None = None

    def image_path(self, name: str) -> Path:
        return self.single if self.single is not None else self.folder / name


def deblur_jobs(
    deblurrer: Deblurrer, jobs: Sequence[FrameJob], source: EventSource, outputs: RunOutputs, strict_windows: bool
) -> int:
    """Deblur every job, write its outputs, warn about empty or sparse windows; returns the frames written.

    Args:
        jobs: the frames, with their exposure windows.
        source: the events.
        strict_windows: an empty window, or one outside the events, is an error (one-frame mode) instead of a
            warning.
    """
    video = VideoWriter(outputs.video, outputs.video_fps) if outputs.video is not None else None
    sheet_rows = _sheet_indices(len(jobs), outputs.sheet_rows) if outputs.contact_sheet is not None else set()
    sheet: list[np.ndarray] = []
    checked_size = None
    sparse = []
    start = time.perf_counter()
    try:
        for job in tqdm(jobs, desc='deblur', unit='frame', disable=len(jobs) < 2):
            frame = job.frame()
            if frame.shape[:2] != checked_size:
                source.check_frame_size(frame.shape[:2], job.label)
                checked_size = frame.shape[:2]
            events = source.window(*job.window)
            _check_window(job, source, len(events['ts']), strict_windows)
            result = deblurrer.deblur(frame, events)
            warning = sparse_window_warning(job.label, result, job.window, frame.shape[0] * frame.shape[1])
            if warning and len(events['ts']):
                sparse.append(job.label)
                if len(sparse) <= LISTED_WARNINGS:
                    logger.warning(warning)
            write_image(result.image, outputs.image_path(job.name))
            if outputs.event_folder is not None:
                write_image(event_picture(result.counts), outputs.event_folder / job.name)
            if video is not None or job.index in sheet_rows:
                panel = side_by_side(frame, result)
                if video is not None:
                    video.add(panel)
                if job.index in sheet_rows:
                    sheet.append(labelled(panel, (f'blurry {job.name}', 'events', 'deblurred')))
    finally:
        if video is not None:
            video.close()
    elapsed = time.perf_counter() - start
    if len(sparse) > LISTED_WARNINGS:
        logger.warning(
            '%d of %d frames have exposure windows whose events touch under %.1f %% of the pixels (the '
            'first %d are listed above; also frames %s): their outputs stay close to their inputs',
            len(sparse),
            len(jobs),
            100 * SPARSE_FRACTION,
            LISTED_WARNINGS,
            ', '.join(label.split(' ')[0] for label in sparse[LISTED_WARNINGS:]),
        )
    logger.info(
        'Deblurred %d frame(s) in %.1f s (%.2f frames/s) on %s',
        len(jobs),
        elapsed,
        len(jobs) / max(elapsed, 1e-9),
        deblurrer.device,
    )
    if sheet:
        write_image(np.concatenate(sheet, axis=0), outputs.contact_sheet)
    return len(jobs)


def _sheet_indices(count: int, rows: int) -> set[int]:
    """``rows`` job indices spread evenly over ``count`` jobs."""
    return {round(i * (count - 1) / max(rows - 1, 1)) for i in range(min(rows, count))} if count else set()


def _check_window(job: FrameJob, source: EventSource, num_events: int, strict: bool) -> None:
    if num_events:
        return
    start, end = job.window
    where = 'outside the events' if not source.covers(start, end) else 'without events'
    message = (
        f'frame {job.label}: its exposure window [{start:.6f}, {end:.6f}) s is {where} (the events of '
        f"'{source.path}' span {source.time_range()})"
    )
    if strict:
        raise InvalidInputError(message + '; give --exposure T0 T1 in the clock of the events file, in --time_unit')
    logger.warning('%s; written with no events, so the output stays close to the input', message)
