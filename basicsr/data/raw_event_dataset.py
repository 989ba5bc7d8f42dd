"""``RawEventDataset``: the items of H5ImageDataset computed on the fly from raw-event HDF5 files.

Reads the raw-event layout (datasets/README.md: events, blurry frames under ``images/``, optional ground truth under
``sharp_images/``) and computes, per item, the SCER voxel and event mask exactly as
``scripts/data_preparation/make_voxels.py`` would store them (same windows, bins and float32 timestamps; see
:mod:`basicsr.data.scer_conversion`). With ``add_noise`` every access draws fresh voxel noise (from torch's
generator, so it follows the loader's seeding), a cheap augmentation that a stored file cannot offer.

Items, crop/flip/normalisation options: see :mod:`basicsr.data.base_event_dataset`. The voxel is computed and
max-abs normalised over the full sensor, then cropped, so a crop sees the same values as with H5ImageDataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from basicsr.data.base_event_dataset import (
    SHARED_OPTION_SCHEMA,
    Augmentation,
    BaseEventDataset,
    scale_by_max_abs,
)
from basicsr.data.scer_conversion import (
    WINDOW_MODES,
    frame_chw,
    has_sharp_frames,
    item_mask,
    item_voxel,
    item_windows,
    time_origin,
)
from basicsr.events import RawEventH5
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.file_io import ProcessLocalHandles
from basicsr.utils.option_schema import Key
from basicsr.utils.registry import DATASET_REGISTRY


def _even_bins(value: int) -> str | None:
    return None if value >= 2 and value % 2 == 0 else f'must be an even integer >= 2, got {value}'


@DATASET_REGISTRY.register()
class RawEventDataset(BaseEventDataset):
    """Items of the raw-event HDF5 files under ``opt['dataroot']`` (see the module docstring).

    Args:
        opt: read-only mapping with the keys of ``option_schema`` (loader keys are ignored here).

    Raises:
        MissingInputError (a FileNotFoundError): missing ``dataroot`` / listed file, or no .h5 file in the folder.
        InvalidInputError, MissingKeyError (ValueError, KeyError): a malformed, truncated or corrupt raw file
            (message names file and key), bad options, a crop larger than the frames, or ``return_gt_frame`` with a
            file that has no ``sharp_images``. Reading an item: events that break the layout (NaN or unsorted
            times, coordinates outside the sensor, bad polarities), named with the file and the event range.
    """

    option_schema: ClassVar[dict[str, Key]] = {
        **SHARED_OPTION_SCHEMA,
        'mode': Key(
            str,
            default='gopro',
            choices=WINDOW_MODES,
            doc='event windows: gopro (frame-centred, first/last frame dropped) or reblur (exposure)',
        ),
        'num_bins': Key(int, default=6, check=_even_bins, doc='SCER bins (event channels)'),
        'keep_middle': Key(bool, default=False, doc="insert the reference's all-zero middle channel (num_bins + 1)"),
        'add_noise': Key(bool, default=False, doc="add EFNet's synthetic voxel noise, drawn afresh for every item"),
    }

    def __init__(self, opt: Mapping[str, Any]):
        super().__init__(opt)
        self.voxel_channels = opt['num_bins'] + int(opt['keep_middle']) if opt['return_voxel'] else None
        self._windows, self._origins, frame_sizes = [], [], []
        for path in self.files:
            with RawEventH5(path) as raw:
                self._windows.append(item_windows(raw, self.opt['mode']))
                self._origins.append(time_origin(raw))
                frame_sizes.append(tuple(raw.read_frame(0).shape[:2]))
                if frame_sizes[-1] != tuple(raw.sensor_size):
                    raise InvalidInputError(
                        f"raw-event file '{path}': frames are {frame_sizes[-1]} pixels but "
                        f'sensor_resolution is {raw.sensor_size}; they must agree'
                    )
                if self.opt['return_gt_frame'] and not has_sharp_frames(raw):
                    raise InvalidInputError(
                        f"raw-event file '{path}' has no group 'sharp_images' (ground truth); set "
                        'return_gt_frame: false to use it without ground truth'
                    )
        self._raw_files = ProcessLocalHandles(RawEventH5)
        self._setup_index([len(windows) for windows in self._windows], frame_sizes)

    @property
    def open_files(self) -> int:
        """Number of files this process holds open (0 right after construction)."""
        return len(self._raw_files)

    def close(self) -> None:
        """Close every file handle this process opened."""
        self._raw_files.close()

    def _noise_rng(self, augmentation: Augmentation) -> np.random.Generator | None:
        if not self.opt['add_noise']:
            return None
        return np.random.default_rng(augmentation.noise_seed)

    def _read_arrays(self, file_number: int, local_index: int, augmentation: Augmentation) -> dict[str, np.ndarray]:
        try:
            return self._item_arrays(file_number, local_index, augmentation)
        except InvalidInputError as error:  # the reader names the file and the events; add the item
            window = self._windows[file_number][local_index]
            raise type(error)(
                f'{error} (item {local_index} of {self.sequences[file_number]}, raw frame {window.frame_index})'
            ) from error

    def _item_arrays(self, file_number: int, local_index: int, augmentation: Augmentation) -> dict[str, np.ndarray]:
        raw = self._raw_files.get(self.files[file_number])
        window = self._windows[file_number][local_index]
        arrays = {'frame': augmentation.crop(frame_chw(raw.read_frame(window.frame_index)))}
        if self.opt['return_gt_frame']:
            arrays['frame_gt'] = augmentation.crop(frame_chw(raw.read_sharp_frame(window.frame_index)))
        if self.opt['return_voxel'] or self.opt['return_mask']:
            voxel = item_voxel(
                raw,
                window,
                self.opt['num_bins'],
                self.opt['keep_middle'],
                self._origins[file_number],
                self._noise_rng(augmentation),
            )
            if self.opt['return_mask']:
                arrays['mask'] = augmentation.crop(item_mask(voxel))
            if self.opt['return_voxel']:
                if self.opt['norm_voxel']:
                    voxel = scale_by_max_abs(voxel, float(np.abs(voxel).max(initial=0.0)))
                arrays['voxel'] = augmentation.crop(voxel)
        return arrays
