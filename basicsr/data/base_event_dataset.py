"""What H5ImageDataset and RawEventDataset share: options, the file list, the item index,
augmentation (crop and flips applied identically to frame, ground truth, voxel and mask) and the
conversion of an item to tensors.

Item dict returned by both (h, w = crop size, or the frame size without crop):

* ``frame``: (3, h, w) float32 blurry frame in [0, 1] (or ``(x - mean) / std``), channel order of the file (BGR);
* ``frame_gt``: (3, h, w) float32 sharp frame, same scaling (only with ``return_gt_frame``);
* ``voxel``: (C, h, w) float32 SCER, divided by the largest ``|value|`` of the full-frame voxel before cropping
  (``norm_voxel``), so in [-1, 1]; an all-zero voxel stays zero (only with ``return_voxel``);
* ``mask``: (1, h, w) float32 event mask in {0, 1} (only with ``return_mask``);
* ``seq``: str, the file's base name up to the first '.';
* ``index``: int, the item's index within its sequence; ``name``: str ``'<seq>/<index:09d>'``, unique.

Random numbers come from torch's global generator, which the DataLoader seeds differently in every worker.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from basicsr.data.data_sampler import SeededIndex
from basicsr.utils.errors import InvalidInputError, MissingInputError
from basicsr.utils.option_schema import Key

logger = logging.getLogger(__name__)


def _positive_or_null(value: Any) -> str | None:
    return None if value is None or value > 0 else f'must be a positive integer or null (~), got {value}'


def _three_numbers(value: Any) -> str | None:
    if value is None:
        return None
    if len(value) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return f'must be a list of 3 numbers (one per channel, file order BGR), got {value!r}'
    return None


def _nonzero_numbers(value: Any) -> str | None:
    error = _three_numbers(value)
    if error is None and value is not None and any(v == 0 for v in value):
        return f'must not contain 0 (frames are divided by it), got {value!r}'
    return error


def _h5_backend(value: Any) -> str | None:
    kind = value.get('type')
    return None if kind in ('h5', None) else f"type must be 'h5' (the only supported backend), got {kind!r}"


SHARED_OPTION_SCHEMA: dict[str, Key] = {
    'dataroot': Key(
        str,
        required=True,
        doc='folder of .h5 files (read in sorted order), or a text file listing '
        'them one per line (relative paths: from the list file folder)',
    ),
    'norm_voxel': Key(bool, default=True, doc='divide each voxel by its largest |value| (full frame, before crop)'),
    'return_voxel': Key(bool, default=True, doc='put the voxel in the item'),
    'return_mask': Key(bool, default=False, doc='put the event mask in the item'),
    'return_gt_frame': Key(bool, default=True, doc='put the sharp frame (frame_gt) in the item'),
    'use_mask': Key(bool, default=False, doc='read by the model (gate EFNet with the mask); needs return_mask'),
    'crop_size': Key(
        (int, None),
        default=None,
        check=_positive_or_null,
        doc='random square crop of this size (uniform corner); null: full frames',
    ),
    'use_flip': Key(bool, default=False, doc='with probability 0.5 flip H and W together (180 degree rotation)'),
    'use_rot': Key(bool, default=False, doc='accepted for compatibility; no effect, as in the reference'),
    'use_hflip': Key(bool, default=False, doc='extra: with probability 0.5 flip left-right (not in the reference)'),
    'use_vflip': Key(bool, default=False, doc='extra: with probability 0.5 flip up-down (not in the reference)'),
    'use_rot90': Key(bool, default=False, doc='extra: with probability 0.5 rotate by 90 degrees (needs crop_size)'),
    'filename_tmpl': Key(str, default='{}', doc='accepted for compatibility; no effect'),
    'io_backend': Key(dict, default={'type': 'h5'}, check=_h5_backend, doc='{type: h5}; the only backend'),
    'mean': Key((list, None), default=None, check=_three_numbers, doc='per-channel mean subtracted from frames'),
    'std': Key((list, None), default=None, check=_nonzero_numbers, doc='per-channel std dividing the frames'),
}


def shared_option_rules(opt: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rules across the shared keys, run by the option validator (``option_rules`` of the data sets)."""
    problems = []
    if opt['use_mask'] and not opt['return_mask']:
        problems.append(('use_mask', 'use_mask: true needs return_mask: true'))
    if opt['use_rot90'] and opt['crop_size'] is None:
        problems.append(
            (
                'use_rot90',
                'use_rot90 needs crop_size (rotating non-square full frames gives items of '
                'different shapes in one batch)',
            )
        )
    return problems


def list_dataroot_files(dataroot: str, suffixes: tuple[str, ...] = ('.h5', '.hdf5')) -> list[str]:
    """The data files named by ``dataroot``.

    Args:
        dataroot: a folder (its files ending in ``suffixes``, sorted by name), one data file (ending in
            ``suffixes``), or a text file with one path per line (blank lines and lines starting with '#' skipped;
            relative paths are taken from the list file's folder).

    Raises:
        MissingInputError (a FileNotFoundError): ``dataroot`` or a listed file does not exist, or no file was found.
        InvalidInputError (a ValueError): a list file that is not text (e.g. an HDF5 file with another extension).
    """
    if os.path.isdir(dataroot):
        files = [os.path.join(dataroot, name) for name in sorted(os.listdir(dataroot)) if name.endswith(suffixes)]
        if not files:
            raise MissingInputError(
                f"dataroot '{dataroot}' holds no {' or '.join(suffixes)} file; point it at a folder such as "
                'datasets/GoPro/train (see datasets/README.md)'
            )
        return files
    if not os.path.isfile(dataroot):
        raise MissingInputError(
            f"dataroot '{dataroot}' does not exist; it must be a folder of {' / '.join(suffixes)} files, one such "
            'file, or a text file listing them (see datasets/README.md)'
        )
    if dataroot.endswith(suffixes):
        return [dataroot]
    base = os.path.dirname(os.path.abspath(dataroot))
    lines = _list_file_lines(dataroot, suffixes)
    files = [os.path.normpath(os.path.join(base, line)) for line in lines if line and not line.startswith('#')]
    if not files:
        raise MissingInputError(f"list file '{dataroot}' names no file; write one path per line")
    missing = [path for path in files if not os.path.isfile(path)]
    if missing:
        raise MissingInputError(
            f"list file '{dataroot}' names {len(missing)} missing file(s), e.g. '{missing[0]}'; relative paths are "
            f"taken from the list file's folder '{base}'"
        )
    return files


_HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'


def _list_file_lines(path: str, suffixes: tuple[str, ...]) -> list[str]:
    """The stripped lines of a list file, or an InvalidInputError naming it when it is not UTF-8 text."""
    with open(path, 'rb') as handle:
        is_hdf5 = handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
    if is_hdf5:
        raise InvalidInputError(
            f"dataroot '{path}' is an HDF5 file, but only names ending in {' or '.join(suffixes)} "
            'are read as data files (anything else is read as a list file); rename it'
        )
    try:
        with open(path, encoding='utf-8') as handle:
            return [line.strip() for line in handle]
    except UnicodeDecodeError as error:
        raise InvalidInputError(
            f"dataroot '{path}' is neither a folder, nor a {' / '.join(suffixes)} file, nor a "
            f'text list of such files ({error.reason}: {error.object[error.start : error.end]!r}); '
            'point it at the data folder or write a list file with one path per line'
        ) from error


def sequence_name(path: str) -> str:
    """A file's base name up to the first '.' ('GOPR0384_11_00.h5' -> 'GOPR0384_11_00')."""
    return os.path.basename(path).split('.', 1)[0]


@dataclass(frozen=True)
class Augmentation:
    """One draw of the joint augmentation of an item.

    Attributes:
        top, left, size: crop window (size None: full frame).
        flip180: flip rows and columns (the reference's RandomFlip).
        hflip, vflip, rot90: the extra augmentations (off unless enabled).
        noise_seed: seed of the item's synthetic noise (drawn only when the options have ``add_noise: true``).
    """

    top: int = 0
    left: int = 0
    size: int | None = None
    flip180: bool = False
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False
    noise_seed: int = 0

    @property
    def window(self) -> tuple[slice, slice] | None:
        """(rows, cols) slices of the crop, None for the full frame."""
        if self.size is None:
            return None
        return slice(self.top, self.top + self.size), slice(self.left, self.left + self.size)

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Crop a (C, H, W) array held in memory."""
        window = self.window
        return array if window is None else array[:, window[0], window[1]]

    def flip(self, array: np.ndarray) -> np.ndarray:
        """Apply the flips/rotation to a (C, h, w) array (crop already done); returns a contiguous array."""
        if self.flip180:
            array = array[:, ::-1, ::-1]
        if self.hflip:
            array = array[:, :, ::-1]
        if self.vflip:
            array = array[:, ::-1, :]
        if self.rot90:
            array = np.rot90(array, k=1, axes=(1, 2))
        return np.ascontiguousarray(array)


def _coin(generator: torch.Generator | None) -> bool:
    return bool(torch.rand((), generator=generator) < 0.5)


class BaseEventDataset(Dataset):
    """Index over several sequence files plus the shared augmentation and item assembly.

    Subclasses set ``option_schema`` (and ``option_rules``), call :meth:`_setup_index` from ``__init__``
    and implement :meth:`_read_arrays`.

    Args:
        opt: the validated data set options (read-only mapping, checked against ``option_schema`` and
            ``option_rules`` at load); keys of the loader (batch size, workers...) are ignored here.
    """

    option_schema: ClassVar[dict[str, Key]] = SHARED_OPTION_SCHEMA
    option_rules = staticmethod(shared_option_rules)
    takes_options: ClassVar[bool] = True
    file_suffixes: ClassVar[tuple[str, ...]] = ('.h5', '.hdf5')
    channel_order: ClassVar[str] = 'BGR'
    """Colour order of ``frame`` and ``frame_gt`` (the HDF5 files hold OpenCV's BGR)."""
    voxel_channels: int | None = None
    """Channels of ``voxel`` (compared with the network's ``ev_chn`` before the first batch); None: unknown."""

    def __init__(self, opt: Mapping[str, Any]):
        self.opt = opt
        self.files = list_dataroot_files(self.opt['dataroot'], self.file_suffixes)
        mean, std = self.opt['mean'], self.opt['std']
        self._mean = None if mean is None else np.asarray(mean, np.float32).reshape(3, 1, 1)
        self._std = None if std is None else np.asarray(std, np.float32).reshape(3, 1, 1)

    def _setup_index(self, counts: list[int], frame_sizes: list[tuple[int, int]]) -> None:
        """Record items per file and frame sizes; check the crop fits every file."""
        crop = self.opt['crop_size']
        for path, (height, width) in zip(self.files, frame_sizes):
            if crop is not None and (crop > height or crop > width):
                raise InvalidInputError(
                    f'crop_size {crop} is larger than the {height}x{width} (HxW) frames of '
                    f"'{path}'; use a smaller crop_size or null for full frames"
                )
        self.counts = list(counts)
        self.frame_sizes = list(frame_sizes)
        self.sequences = [sequence_name(path) for path in self.files]
        self._starts = np.concatenate([[0], np.cumsum(self.counts)]).tolist()

    @property
    def samples_per_file(self) -> list[tuple[str, int]]:
        """(file, number of items) for every file, in index order."""
        return list(zip(self.files, self.counts))

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(file number, item index within that file) of a global item index."""
        if not 0 <= index < len(self):
            raise IndexError(f'item {index} is out of range for {len(self)} items')
        file_number = bisect.bisect_right(self._starts, index) - 1
        return file_number, index - self._starts[file_number]

    def draw_augmentation(self, frame_size: tuple[int, int], generator: torch.Generator | None = None) -> Augmentation:
        """Random crop corner (uniform), flips and noise seed for one item of a (H, W) frame.

        Drawn from ``generator`` (the item's own, see :class:`SeededIndex`), or torch's global generator when None;
        nothing is drawn for what the options leave off.
        """
        size = self.opt['crop_size']
        top = left = 0
        if size is not None:
            top = int(torch.randint(0, frame_size[0] - size + 1, (), generator=generator))
            left = int(torch.randint(0, frame_size[1] - size + 1, (), generator=generator))
        return Augmentation(
            top,
            left,
            size,
            flip180=self.opt['use_flip'] and _coin(generator),
            hflip=self.opt['use_hflip'] and _coin(generator),
            vflip=self.opt['use_vflip'] and _coin(generator),
            rot90=self.opt['use_rot90'] and _coin(generator),
            noise_seed=int(torch.randint(0, 2**62, (), generator=generator)) if self.opt.get('add_noise') else 0,
        )

    def _read_arrays(self, file_number: int, local_index: int, augmentation: Augmentation) -> dict[str, np.ndarray]:
        """The cropped (not yet flipped) arrays of one item.

        Returns:
            ``frame`` (3, h, w) uint8 and, as enabled by the options, ``frame_gt`` (3, h, w) uint8,
            ``voxel`` (C, h, w) float32 (already max-abs normalised over the full frame when ``norm_voxel``),
            ``mask`` (1, h, w) uint8 0/255.
        """
        raise NotImplementedError

    def _frame_tensor(self, frame: np.ndarray) -> torch.Tensor:
        values = frame.astype(np.float32) / 255.0
        if self._mean is not None:
            values -= self._mean
        if self._std is not None:
            values /= self._std
        return torch.from_numpy(values)

    def __getitem__(self, index: int | SeededIndex) -> dict[str, Any]:
        """The item at ``index``; a :class:`SeededIndex` (from the training sampler) seeds its random draws."""
        generator = None
        if isinstance(index, SeededIndex):
            index, generator = index.index, torch.Generator().manual_seed(index.seed)
        file_number, local_index = self.locate(index)
        augmentation = self.draw_augmentation(self.frame_sizes[file_number], generator)
        arrays = {
            key: augmentation.flip(value)
            for key, value in self._read_arrays(file_number, local_index, augmentation).items()
        }
        seq = self.sequences[file_number]
        item: dict[str, Any] = {'frame': self._frame_tensor(arrays['frame'])}
        if 'frame_gt' in arrays:
            item['frame_gt'] = self._frame_tensor(arrays['frame_gt'])
        if 'voxel' in arrays:
            item['voxel'] = torch.from_numpy(arrays['voxel'].astype(np.float32, copy=False))
        if 'mask' in arrays:
            item['mask'] = torch.from_numpy(arrays['mask'].astype(np.float32) / 255.0)
        item.update(seq=seq, index=local_index, name=f'{seq}/{local_index:09d}')
        return item


def scale_by_max_abs(voxel: np.ndarray, max_abs: float) -> np.ndarray:
    """``voxel / max_abs`` as float32; an all-zero voxel (max_abs 0) is returned unchanged (no NaN)."""
    if max_abs == 0:
        return voxel.astype(np.float32, copy=False)
    return (voxel / np.float32(max_abs)).astype(np.float32, copy=False)
