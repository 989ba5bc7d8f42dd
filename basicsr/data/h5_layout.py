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

Writes are atomic: a :class:`TrainingH5Writer` writes ``.<name>.tmp-<pid>-<random>`` beside the target and
renames it only after the last item (:class:`basicsr.utils.file_io.AtomicFile`), so a crashed run never leaves a
half file under the final name; a full disk or a read-only folder is a
:class:`~basicsr.utils.errors.WriteError` naming the file.

Reading checks what a metadata scan cannot: :meth:`TrainingH5Reader.read` names the file and key of an item that
cannot be read (truncated or corrupt file) or that holds NaN or infinity.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Self

import h5py
import numpy as np

from basicsr.utils.errors import InvalidInputError, MissingInputError, UserError
from basicsr.utils.file_io import AtomicFile, write_errors_named

logger = logging.getLogger(__name__)

IMAGES, SHARP_IMAGES, VOXELS, MASKS = 'images', 'sharp_images', 'voxels', 'masks'
KEY_TEMPLATES = {
    IMAGES: 'images/image{:09d}',
    SHARP_IMAGES: 'sharp_images/image{:09d}',
    VOXELS: 'voxels/voxel{:09d}',
    MASKS: 'masks/mask{:09d}',
}
MAX_ABS_ATTR = 'max_abs'
_H5_FAILURES = (OSError, RuntimeError, KeyError, TypeError, ValueError)
"""What h5py raises on a damaged file, depending on where the damage is."""
MAKE_HINT = 'make it with scripts/data_preparation/make_voxels.py (or make_synthetic_gopro.py)'


def item_key(group: str, index: int) -> str:
    """Full HDF5 key of item ``index`` in ``group`` (one of images, sharp_images, voxels, masks)."""
    return KEY_TEMPLATES[group].format(index)


class TrainingH5Error(InvalidInputError):
    """A training HDF5 file that breaks the layout or cannot be read; the message names file and key (a ValueError)."""


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
        f'{KEY_TEMPLATES[group].replace("{:09d}", "%09d")} for n = 0..N-1; {MAKE_HINT}'
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
            raise TrainingH5Error(
                f"HDF5 file '{path}': '{key}' has dtype {dataset.dtype}, expected uint8 (0..255); "
                f'16-bit or float frames must be converted to 8 bits; {MAKE_HINT}'
            )
    return voxel_channels


def inspect_training_h5(path: str | os.PathLike, required: Iterable[str] = (IMAGES,)) -> TrainingH5Info:
    """Validate the layout of a training HDF5 file from its metadata (no pixel is read).

    Args:
        path: the ``.h5`` file.
        required: groups that must be present besides ``images`` (e.g. voxels, masks, sharp_images).

    Returns:
        a :class:`TrainingH5Info`.

    Raises:
        MissingInputError (a FileNotFoundError): the file does not exist.
        TrainingH5Error (a ValueError): unreadable file, missing group, item count or name mismatch
            between groups, wrong shape or dtype; the message names the file and key and how to fix it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingInputError(f"HDF5 file '{path}' does not exist")
    try:
        handle = h5py.File(path, 'r')
    except OSError as error:
        raise TrainingH5Error(
            f"HDF5 file '{path}' cannot be opened as HDF5 ({error}); it may be truncated or not an HDF5 file; "
            f'delete it and {MAKE_HINT}'
        ) from error
    try:
        with handle:
            return _inspect_open_file(handle, path, required)
    except UserError:
        raise
    except _H5_FAILURES as error:
        raise TrainingH5Error(
            f"HDF5 file '{path}' cannot be read ({type(error).__name__}: {error}); it is truncated "
            f'or corrupt; delete it and {MAKE_HINT}'
        ) from error


def _inspect_open_file(handle: h5py.File, path: str, required: Iterable[str]) -> TrainingH5Info:
    """The checks of :func:`inspect_training_h5` on the open file."""
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
        raise InvalidInputError(f'{name} must have shape {want} (CHW), got {array.shape}')
    return np.ascontiguousarray(array, dtype=dtype)


class TrainingH5Writer:
    """Write one training HDF5 file item by item, atomically.

    Example::

        with TrainingH5Writer('out/seq.h5', sensor_size=(720, 1280)) as writer:
            for blurry, sharp, voxel, mask in items:
                writer.add(blurry, voxel=voxel, mask=mask, sharp=sharp)

    Args:
        path: final file name (its folder is created); the data go to a temporary beside it first, renamed on
            success.
        sensor_size: (H, W) stored as ``sensor_resolution``; default: taken from the first frame.
        attrs: extra file attributes (provenance), e.g. ``{'num_bins': 6}``.
        compression: h5py compression of every dataset (None: uncompressed, fastest to read).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sensor_size: tuple[int, int] | None = None,
        attrs: Mapping[str, object] | None = None,
        compression: str | None = None,
    ):
        self.path = os.fspath(path)
        self.sensor_size = sensor_size
        self.attrs = dict(attrs or {})
        self.compression = compression
        self.num_items = 0
        self._handle: h5py.File | None = None
        self._target: AtomicFile | None = None
        self._groups: tuple[str, ...] | None = None

    def __enter__(self) -> Self:
        self._target = AtomicFile(self.path)
        with write_errors_named(self.path):
            self._handle = h5py.File(self._target.temporary, 'w')
        return self

    def _write(self, group: str, array: np.ndarray) -> h5py.Dataset:
        with write_errors_named(self.path):
            dataset = self._handle.create_dataset(
                item_key(group, self.num_items), data=array, compression=self.compression
            )
            dataset.attrs['size'] = np.asarray(array.shape, dtype=np.int64)
        return dataset

    def add(
        self,
        blurry: np.ndarray,
        voxel: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        sharp: np.ndarray | None = None,
    ) -> None:
        """Append one item.

        Args:
            blurry: (3, H, W) uint8 blurry frame, BGR.
            voxel: (C, H, W) float32 SCER voxel, or None for a file without voxels.
            mask: (1, H, W) uint8 event mask, 0/255, or None.
            sharp: (3, H, W) uint8 sharp frame, BGR, or None for a file without ground truth.
        Every item must provide the same arrays (a group is all or nothing).

        Raises:
            InvalidInputError: wrong shapes, groups that differ from the earlier items, a voxel with NaN or infinity.
            WriteError: the file cannot be written (full disk, permissions).
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
            raise InvalidInputError(f'item {self.num_items} provides {groups}, earlier items provided {self._groups}')
        size = arrays[IMAGES].shape[1:]
        for group, array in arrays.items():
            if array.shape[1:] != size:
                raise InvalidInputError(f'{group} item {self.num_items} is {array.shape[1:]} pixels, blurry is {size}')
            if group == VOXELS:
                check_finite(array, self.path, item_key(VOXELS, self.num_items))
            dataset = self._write(group, array)
            if group == VOXELS:
                dataset.attrs[MAX_ABS_ATTR] = float(np.abs(array).max(initial=0.0))
        self.num_items += 1

    def __exit__(self, exc_type, exc, traceback) -> None:
        handle, target = self._handle, self._target
        self._handle = self._target = None
        try:
            with write_errors_named(self.path):
                if exc_type is None:
                    if self.num_items == 0:
                        raise InvalidInputError(f"no item was added to '{self.path}'; refusing to write an empty file")
                    size = self.sensor_size or handle[item_key(IMAGES, 0)].shape[1:]
                    handle.attrs['sensor_resolution'] = np.asarray(size, dtype=np.int64)
                    for name, value in self.attrs.items():
                        handle.attrs[name] = value
                handle.close()
            if exc_type is None:
                target.commit()
        finally:
            handle.close()
            target.discard()


class TrainingH5Reader:
    """An open training HDF5 file (validated by :func:`inspect_training_h5`); reads items or windows of items.

    Keep one per process (:class:`basicsr.utils.file_io.ProcessLocalHandles` does this for the data sets): h5py
    handles must not cross processes. Use as a context manager or call :meth:`close`.

    Args:
        info: the file's :class:`TrainingH5Info`.
    """

    def __init__(self, info: TrainingH5Info):
        self.info = info
        try:
            self._handle = h5py.File(info.path, 'r')
        except OSError as error:
            raise TrainingH5Error(f"HDF5 file '{info.path}' cannot be opened as HDF5 ({error}); {MAKE_HINT}") from error

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def read(self, group: str, index: int, window: tuple[slice, slice] | None = None) -> np.ndarray:
        """Item ``index`` of ``group`` as stored ((C, H, W), file dtype), or only its (rows, cols) window.

        Only the window is read from disk (h5py hyperslab).

        Raises:
            TrainingH5Error: the item cannot be read (truncated or corrupt file), or a voxel holds NaN or infinity;
                the message names the file and the key.
        """
        key = item_key(group, index)
        try:
            dataset = self._handle[key]
            array = dataset[:] if window is None else dataset[:, window[0], window[1]]
        except _H5_FAILURES as error:
            raise TrainingH5Error(
                f"HDF5 file '{self.info.path}': cannot read '{key}' ({error}); the file is "
                f'truncated or corrupt; {MAKE_HINT}'
            ) from error
        if array.dtype.kind == 'f':
            check_finite(array, self.info.path, key)
        return array

    def voxel_max_abs(self, index: int) -> float | None:
        """The stored ``max_abs`` attribute of voxel ``index``; None when the file lacks it (official files).

        Raises:
            TrainingH5Error: the attribute is NaN or infinite (the voxel holds such values).
        """
        key = item_key(VOXELS, index)
        try:
            value = self._handle[key].attrs.get(MAX_ABS_ATTR)
        except _H5_FAILURES as error:
            raise TrainingH5Error(
                f"HDF5 file '{self.info.path}': cannot read the attributes of '{key}' ({error}); the "
                f'file is truncated or corrupt; {MAKE_HINT}'
            ) from error
        if value is not None and not np.isfinite(value):
            raise TrainingH5Error(
                f"HDF5 file '{self.info.path}': '{key}' has the attribute {MAX_ABS_ATTR} = {value}, "
                f'so the voxel contains NaN or infinity; {MAKE_HINT}'
            )
        return None if value is None else float(value)


def check_finite(array: np.ndarray, path: str, key: str) -> None:
    """Raise TrainingH5Error naming ``path``, ``key`` and the first bad value unless ``array`` is all finite.

    One reduction over the array when it is finite (the common case); the search only runs on failure.
    """
    if np.isfinite(array.sum(dtype=np.float64)):
        return
    bad = ~np.isfinite(array)
    if not bad.any():  # the float64 sum overflowed on huge finite values
        return
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    kinds = ' and '.join(
        name for name, found in (('NaN', np.isnan(array).any()), ('infinity', np.isinf(array).any())) if found
    )
    raise TrainingH5Error(
        f"HDF5 file '{path}': '{key}' contains {kinds} ({int(bad.sum())} of {array.size} values, "
        f'the first at (channel, row, column) = {first}); the events or the conversion that made it '
        f'are broken; {MAKE_HINT}'
    )
