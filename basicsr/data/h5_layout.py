"""The training/test HDF5 layout of EFNet (one file per video sequence), in one place.

Layout (also in datasets/README.md), item index ``n = 0 .. N-1`` contiguous, ``N`` = number of keys under
``images``:

=========================  =======  =========  ================================================
key                        dtype    shape      content
=========================  =======  =========  ================================================
``images/image%09d``       uint8    (3, H, W)  blurry frame, CHW, 0..255
``sharp_images/image%09d`` uint8    (3, H, W)  sharp ground-truth frame (optional group)
``voxels/voxel%09d``       float32  (C, H, W)  SCER voxel, signed event counts (C = 6 officially)
``masks/mask%09d``         uint8    (1, H, W)  event mask, 0 or 255
=========================  =======  =========  ================================================

Every dataset carries ``attrs['size']`` = its shape; the file carries ``attrs['sensor_resolution']``
= ``[H, W]``. Files written here add two optional extras that readers use when present and do not
need otherwise: ``voxels/voxel%09d.attrs['max_abs']`` (the largest ``|value|`` of that voxel, so a
cropped read does not need the whole voxel for the max-abs normalisation) and a few provenance file
attributes (``voxel_method``, ``num_bins``, ``event_window``, ``voxel_noise``, ``source``).

Channel order of the stored frames: **BGR** (OpenCV order). The official option files test with
``rgb2bgr: false`` ("to my h5 data, its false"), i.e. the stored frames are written to PNG by
OpenCV without a swap, which is right only if they are BGR already. The synthetic data of this
project is stored in BGR too, so ``rgb2bgr: false`` writes correct PNGs for every file made by
``scripts/data_preparation``. The network is trained on whatever order the file holds.

Writes are atomic: a :class:`TrainingH5Writer` writes ``<name>.tmp-<pid>`` beside the target and
renames it only after the last item, so a crashed run never leaves a half file under the final name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Self

import h5py
import numpy as np

logger = logging.getLogger(__name__)

IMAGES, SHARP_IMAGES, VOXELS, MASKS = 'images', 'sharp_images', 'voxels', 'masks'
KEY_TEMPLATES = {
    IMAGES: 'images/image{:09d}',
    SHARP_IMAGES: 'sharp_images/image{:09d}',
    VOXELS: 'voxels/voxel{:09d}',
    MASKS: 'masks/mask{:09d}',
}
MAX_ABS_ATTR = 'max_abs'
MAKE_HINT = 'make it with scripts/data_preparation/make_voxels.py (or make_synthetic_gopro.py)'


def item_key(group: str, index: int) -> str:
    """Full HDF5 key of item ``index`` in ``group`` (one of images, sharp_images, voxels, masks)."""
    return KEY_TEMPLATES[group].format(index)


class TrainingH5Error(ValueError):
    """A training HDF5 file that does not follow the layout; the message names file and key."""


@dataclass(frozen=True)
class TrainingH5Info:
    """What the metadata of a validated training HDF5 file says.

    Attributes:
        path: the file.
        num_items: N, items 0..N-1.
        frame_size: (H, W) in pixels, shared by frames, voxels and masks.
        voxel_channels: C of the voxels, None when the file has no ``voxels`` group.
        groups: the layout groups present (subset of images, sharp_images, voxels, masks).
    """

    path: str
    num_items: int
    frame_size: tuple[int, int]
    voxel_channels: int | None
    groups: tuple[str, ...]


def _expected_shape(group: str, frame_size: tuple[int, int], voxel_channels: int | None) -> tuple[int, ...] | None:
    height, width = frame_size
    if group in (IMAGES, SHARP_IMAGES):
        return (3, height, width)
    if group == MASKS:
        return (1, height, width)
    return None if voxel_channels is None else (voxel_channels, height, width)


def _check_group(handle: h5py.File, path: str, group: str, num_items: int) -> None:
    """Names of ``group`` must be exactly the templates for 0..num_items-1."""
    names = set(handle[group].keys())
    expected = {item_key(group, i).split('/', 1)[1] for i in range(num_items)}
    if names == expected:
        return
    missing, extra = sorted(expected - names), sorted(names - expected)
    if len(names) != num_items:
        problem = f'has {len(names)} items but group {IMAGES!r} has {num_items}'
    else:
        problem = 'has the same number of items as group images but different names'
    details = []
    if missing:
        details.append(f'missing {", ".join(missing[:3])}' + (' ...' if len(missing) > 3 else ''))
    if extra:
        details.append(f'unexpected {", ".join(extra[:3])}' + (' ...' if len(extra) > 3 else ''))
    raise TrainingH5Error(
        f"HDF5 file '{path}': group {group!r} {problem} ({'; '.join(details)}); every group must hold "
        f"{KEY_TEMPLATES[group].replace('{:09d}', '%09d')} for n = 0..N-1; {MAKE_HINT}"
    )


def _check_datasets(handle: h5py.File, path: str, group: str, num_items: int, frame_size, voxel_channels) -> int | None:
    """Check dtype and shape of every item of ``group``; return the voxel channel count for voxels."""
    for index in range(num_items):
        key = item_key(group, index)
        dataset = handle[key]
        if not isinstance(dataset, h5py.Dataset):
            raise TrainingH5Error(f"HDF5 file '{path}': '{key}' is a group, expected a dataset; {MAKE_HINT}")
        shape = tuple(dataset.shape)
        if group == VOXELS and voxel_channels is None:
            if len(shape) != 3:
                raise TrainingH5Error(
                    f"HDF5 file '{path}': '{key}' has shape {shape}, expected (C, H, W) voxels; {MAKE_HINT}"
                )
            voxel_channels = shape[0]
        expected = _expected_shape(group, frame_size, voxel_channels)
        if shape != expected:
            what = 'the first voxel and the frames' if group == VOXELS else f"'{item_key(IMAGES, 0)}'"
            raise TrainingH5Error(
                f"HDF5 file '{path}': '{key}' has shape {shape}, expected {expected} to match {what} "
                f'(layout: images (3,H,W), sharp_images (3,H,W), voxels (C,H,W), masks (1,H,W)); {MAKE_HINT}'
            )
        kind = np.dtype(dataset.dtype).kind
        if group == VOXELS and kind != 'f':
            raise TrainingH5Error(f"HDF5 file '{path}': '{key}' has dtype {dataset.dtype}, expected float32")
        if group != VOXELS and dataset.dtype != np.uint8:
            raise TrainingH5Error(f"HDF5 file '{path}': '{key}' has dtype {dataset.dtype}, expected uint8")
    return voxel_channels


def inspect_training_h5(path: str | os.PathLike, required: Iterable[str] = (IMAGES,)) -> TrainingH5Info:
    """Validate the layout of a training HDF5 file from its metadata (no pixel is read).

    Args:
        path: the ``.h5`` file.
        required: groups that must be present besides ``images`` (e.g. voxels, masks, sharp_images).

    Returns:
        a :class:`TrainingH5Info`.

    Raises:
        FileNotFoundError: the file does not exist.
        TrainingH5Error (a ValueError): unreadable file, missing group, item count or name mismatch
            between groups, wrong shape or dtype; the message names the file and key and how to fix it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"HDF5 file '{path}' does not exist")
    try:
        handle = h5py.File(path, 'r')
    except OSError as error:
        raise TrainingH5Error(
            f"HDF5 file '{path}' cannot be opened as HDF5 ({error}); it may be truncated or not an HDF5 file; "
            f'delete it and {MAKE_HINT}'
        ) from error
    with handle:
        present = tuple(g for g in KEY_TEMPLATES if isinstance(handle.get(g), h5py.Group))
        for group in (IMAGES, *required):
            if group not in present:
                found = ', '.join(handle.keys()) or 'nothing'
                raise TrainingH5Error(f"HDF5 file '{path}' has no group {group!r} (found: {found}); {MAKE_HINT}")
        num_items = len(handle[IMAGES])
        if num_items == 0:
            raise TrainingH5Error(f"HDF5 file '{path}': group 'images' is empty; {MAKE_HINT}")
        first = handle.get(item_key(IMAGES, 0))
        if first is None or len(first.shape) != 3:
            shape = None if first is None else tuple(first.shape)
            raise TrainingH5Error(
                f"HDF5 file '{path}': '{item_key(IMAGES, 0)}' is missing or not (3, H, W) (shape {shape}); {MAKE_HINT}"
            )
        frame_size = (int(first.shape[1]), int(first.shape[2]))
        voxel_channels = None
        for group in present:
            _check_group(handle, path, group, num_items)
            channels = _check_datasets(handle, path, group, num_items, frame_size, voxel_channels)
            if group == VOXELS:
                voxel_channels = channels
    return TrainingH5Info(path, num_items, frame_size, voxel_channels, present)


def _to_chw(array: np.ndarray, name: str, channels: int | None, dtype) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3 or (channels is not None and array.shape[0] != channels):
        want = f'({channels}, H, W)' if channels is not None else '(C, H, W)'
        raise ValueError(f'{name} must have shape {want} (CHW), got {array.shape}')
    return np.ascontiguousarray(array, dtype=dtype)


class TrainingH5Writer:
    """Write one training HDF5 file item by item, atomically.

    Example::

        with TrainingH5Writer('out/seq.h5', sensor_size=(720, 1280)) as writer:
            for blurry, sharp, voxel, mask in items:
                writer.add(blurry, voxel=voxel, mask=mask, sharp=sharp)

    Args:
        path: final file name; the data go to ``<path>.tmp-<pid>`` first, renamed on success.
        sensor_size: (H, W) stored as ``sensor_resolution``; default: taken from the first frame.
        attrs: extra file attributes (provenance), e.g. ``{'num_bins': 6}``.
        compression: h5py compression of every dataset (None: uncompressed, fastest to read).
    """

    def __init__(self, path: str | os.PathLike, sensor_size: tuple[int, int] | None = None,
                 attrs: Mapping[str, object] | None = None, compression: str | None = None):
        self.path = os.fspath(path)
        self.tmp_path = f'{self.path}.tmp-{os.getpid()}'
        self.sensor_size = sensor_size
        self.attrs = dict(attrs or {})
        self.compression = compression
        self.num_items = 0
        self._handle: h5py.File | None = None
        self._groups: tuple[str, ...] | None = None

    def __enter__(self) -> Self:
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._handle = h5py.File(self.tmp_path, 'w')
        return self

    def _write(self, group: str, array: np.ndarray) -> h5py.Dataset:
        dataset = self._handle.create_dataset(item_key(group, self.num_items), data=array,
                                              compression=self.compression)
        dataset.attrs['size'] = np.asarray(array.shape, dtype=np.int64)
        return dataset

    def add(self, blurry: np.ndarray, voxel: np.ndarray | None = None, mask: np.ndarray | None = None,
            sharp: np.ndarray | None = None) -> None:
        """Append one item.

        Args:
            blurry: (3, H, W) uint8 blurry frame, BGR.
            voxel: (C, H, W) float32 SCER voxel, or None for a file without voxels.
            mask: (1, H, W) uint8 event mask, 0/255, or None.
            sharp: (3, H, W) uint8 sharp frame, BGR, or None for a file without ground truth.
        Every item must provide the same arrays (a group is all or nothing).
        """
        if self._handle is None:
            raise RuntimeError('TrainingH5Writer.add() called outside its "with" block')
        arrays = {IMAGES: _to_chw(blurry, 'blurry', 3, np.uint8)}
        if sharp is not None:
            arrays[SHARP_IMAGES] = _to_chw(sharp, 'sharp', 3, np.uint8)
        if voxel is not None:
            arrays[VOXELS] = _to_chw(voxel, 'voxel', None, np.float32)
        if mask is not None:
            arrays[MASKS] = _to_chw(mask, 'mask', 1, np.uint8)
        groups = tuple(arrays)
        if self._groups is None:
            self._groups = groups
        elif groups != self._groups:
            raise ValueError(f'item {self.num_items} provides {groups}, earlier items provided {self._groups}')
        size = arrays[IMAGES].shape[1:]
        for group, array in arrays.items():
            if array.shape[1:] != size:
                raise ValueError(f'{group} item {self.num_items} is {array.shape[1:]} pixels, blurry is {size}')
            dataset = self._write(group, array)
            if group == VOXELS:
                dataset.attrs[MAX_ABS_ATTR] = float(np.abs(array).max(initial=0.0))
        self.num_items += 1

    def __exit__(self, exc_type, exc, traceback) -> None:
        handle, self._handle = self._handle, None
        try:
            if exc_type is None:
                if self.num_items == 0:
                    raise ValueError(f"no item was added to '{self.path}'; refusing to write an empty file")
                size = self.sensor_size or handle[item_key(IMAGES, 0)].shape[1:]
                handle.attrs['sensor_resolution'] = np.asarray(size, dtype=np.int64)
                for name, value in self.attrs.items():
                    handle.attrs[name] = value
        finally:
            handle.close()
            if exc_type is None and self.num_items > 0:
                os.replace(self.tmp_path, self.path)
            elif os.path.exists(self.tmp_path):
                os.remove(self.tmp_path)


def write_training_h5(path: str | os.PathLike, blurry: Iterable[np.ndarray], sharp: Iterable[np.ndarray] | None,
                      voxels: Iterable[np.ndarray] | None, masks: Iterable[np.ndarray] | None,
                      sensor_size: tuple[int, int] | None = None, attrs: Mapping[str, object] | None = None) -> int:
    """Write a whole training file from iterables (consumed item by item, so generators stream).

    Args: as :meth:`TrainingH5Writer.add`, one iterable per group (None: group left out); all
        non-None iterables must have the same length.

    Returns:
        the number of items written.
    """
    sources = [iter(s) if s is not None else None for s in (blurry, sharp, voxels, masks)]
    with TrainingH5Writer(path, sensor_size=sensor_size, attrs=attrs) as writer:
        for frame in sources[0]:
            sharp_i, voxel_i, mask_i = (next(s, None) if s is not None else None for s in sources[1:])
            for name, source, value in zip(('sharp', 'voxels', 'masks'), sources[1:], (sharp_i, voxel_i, mask_i)):
                if source is not None and value is None:
                    raise ValueError(f'{name} has fewer items than blurry ({writer.num_items})')
            writer.add(frame, voxel=voxel_i, mask=mask_i, sharp=sharp_i)
        for name, source in zip(('sharp', 'voxels', 'masks'), sources[1:]):
            if source is not None and next(source, None) is not None:
                raise ValueError(f'{name} has more items than blurry ({writer.num_items})')
        return writer.num_items


class TrainingH5Reader:
    """Read items (or windows of items) of one validated training HDF5 file.

    Opens the file on first use, in the calling process; a reader that was pickled or inherited
    by a forked worker reopens its own handle (h5py handles must not cross processes).

    Args:
        info: the file's :class:`TrainingH5Info` (from :func:`inspect_training_h5`).
    """

    def __init__(self, info: TrainingH5Info):
        self.info = info
        self._handle: h5py.File | None = None
        self._pid: int | None = None

    @property
    def is_open(self) -> bool:
        return self._handle is not None and self._pid == os.getpid()

    def _file(self) -> h5py.File:
        if not self.is_open:
            self._handle = h5py.File(self.info.path, 'r')
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        """Close the handle if this process opened it."""
        if self.is_open:
            self._handle.close()
        self._handle = self._pid = None

    def __getstate__(self) -> dict:
        return {'info': self.info, '_handle': None, '_pid': None}

    def read(self, group: str, index: int, window: tuple[slice, slice] | None = None) -> np.ndarray:
        """Item ``index`` of ``group`` as stored ((C, H, W), file dtype), or only its (rows, cols) window.

        Only the window is read from disk (h5py hyperslab).
        """
        key = item_key(group, index)
        try:
            dataset = self._file()[key]
            return dataset[:] if window is None else dataset[:, window[0], window[1]]
        except (OSError, KeyError) as error:
            raise TrainingH5Error(f"HDF5 file '{self.info.path}': cannot read '{key}' ({error})") from error

    def voxel_max_abs(self, index: int) -> float | None:
        """The stored ``max_abs`` attribute of voxel ``index``; None when the file lacks it (official files)."""
        value = self._file()[item_key(VOXELS, index)].attrs.get(MAX_ABS_ATTR)
        return None if value is None else float(value)


def open_training_h5(path: str | os.PathLike, required: Iterable[str] = (IMAGES,)) -> TrainingH5Reader:
    """Validate ``path`` (see :func:`inspect_training_h5`) and return a lazy :class:`TrainingH5Reader`."""
    return TrainingH5Reader(inspect_training_h5(path, required))
