"""``H5ImageDataset``: blurry/sharp frames, SCER voxels and event masks from training HDF5 files.

One file per sequence in the layout of :mod:`basicsr.data.h5_layout` (the layout of the official
GoPro and REBlur files). Items, options and augmentation: see :mod:`basicsr.data.base_event_dataset`.

Reading: the index is built once from the files' metadata (no pixel read at construction); each
process opens its own file handles on first use. A crop reads only its window from disk. A voxel
holding NaN or infinity is an error naming the file and the item (in training and in testing). The
max-abs normalisation needs the largest ``|value|`` of the full voxel: it is taken from the voxel's
``max_abs`` attribute when the file has one (files written by this project), otherwise the full
voxel is read once and its maximum is remembered for the life of the worker (official files).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from basicsr.data.base_event_dataset import (
    SHARED_OPTION_SCHEMA,
    Augmentation,
    BaseEventDataset,
    scale_by_max_abs,
)
from basicsr.data.h5_layout import (
    IMAGES,
    MASKS,
    SHARP_IMAGES,
    VOXELS,
    TrainingH5Reader,
    inspect_training_h5,
)
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.file_io import ProcessLocalHandles
from basicsr.utils.option_schema import Key
from basicsr.utils.registry import DATASET_REGISTRY

logger = logging.getLogger(__name__)


@DATASET_REGISTRY.register()
class H5ImageDataset(BaseEventDataset):
    """Items of the training HDF5 files under ``opt['dataroot']`` (see the module docstring).

    Args:
        opt: read-only mapping with the keys of ``option_schema`` (loader keys are ignored here).

    Raises:
        MissingInputError (a FileNotFoundError): missing ``dataroot`` / listed file, or no .h5 file in the folder.
        InvalidInputError (a ValueError): a file that breaks the layout (message names file and key), bad options,
            or a ``crop_size`` larger than the frames. Reading an item: a voxel with NaN or infinity, an unreadable
            item (TrainingH5Error, naming the file and key).
    """

    option_schema: ClassVar[dict[str, Key]] = dict(SHARED_OPTION_SCHEMA)

    def __init__(self, opt: Mapping[str, Any]):
        super().__init__(opt)
        required = [IMAGES]
        if self.opt['return_gt_frame']:
            required.append(SHARP_IMAGES)
        if self.opt['return_voxel']:
            required.append(VOXELS)
        if self.opt['return_mask']:
            required.append(MASKS)
        infos = [inspect_training_h5(path, required) for path in self.files]
        channels = {info.voxel_channels for info in infos if info.voxel_channels is not None}
        if len(channels) > 1:
            raise InvalidInputError(
                f"the files of dataroot '{self.opt['dataroot']}' have voxels with different "
                f'channel counts {sorted(channels)}; one data set must use one event '
                'representation'
            )
        self.voxel_channels = channels.pop() if channels and self.opt['return_voxel'] else None
        self._infos = infos
        self._readers = ProcessLocalHandles(TrainingH5Reader)
        self._max_abs_cache: dict[tuple[int, int], float] = {}
        self._setup_index([info.num_items for info in infos], [info.frame_size for info in infos])

    def _voxel(self, reader: TrainingH5Reader, key: tuple[int, int], window) -> np.ndarray:
        """Voxel window, max-abs normalised over the full voxel when ``norm_voxel``."""
        local_index = key[1]
        if not self.opt['norm_voxel']:
            return reader.read(VOXELS, local_index, window)
        max_abs = self._max_abs_cache.get(key)
        if max_abs is None:
            max_abs = reader.voxel_max_abs(local_index)
        if max_abs is None:
            full = reader.read(VOXELS, local_index)
            max_abs = float(np.abs(full).max())
            self._max_abs_cache[key] = max_abs
            voxel = full if window is None else full[:, window[0], window[1]]
        else:
            voxel = reader.read(VOXELS, local_index, window)
        return scale_by_max_abs(voxel, max_abs)

    def _read_arrays(self, file_number: int, local_index: int, augmentation: Augmentation) -> dict[str, np.ndarray]:
        reader = self._readers.get(self._infos[file_number])
        window = augmentation.window
        arrays = {'frame': reader.read(IMAGES, local_index, window)}
        if self.opt['return_gt_frame']:
            arrays['frame_gt'] = reader.read(SHARP_IMAGES, local_index, window)
        if self.opt['return_voxel']:
            arrays['voxel'] = self._voxel(reader, (file_number, local_index), window)
        if self.opt['return_mask']:
            arrays['mask'] = reader.read(MASKS, local_index, window)
        return arrays

    @property
    def open_files(self) -> int:
        """Number of files this process holds open (0 right after construction)."""
        return len(self._readers)

    def close(self) -> None:
        """Close every file handle this process opened."""
        self._readers.close()
