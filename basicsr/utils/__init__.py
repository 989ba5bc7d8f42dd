"""Leaf helpers: the option schema language, registries, logging, distributed set-up, images, checkpoints.

Names are imported on first access, so ``import basicsr.utils`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    'load_network': 'basicsr.utils.checkpoint',
    'save_network': 'basicsr.utils.checkpoint',
    'tensor2img': 'basicsr.utils.img_util',
    'imread': 'basicsr.utils.img_util',
    'imwrite': 'basicsr.utils.img_util',
    'get_root_logger': 'basicsr.utils.logger',
    'get_env_info': 'basicsr.utils.logger',
    'MessageLogger': 'basicsr.utils.logger',
    'init_tb_logger': 'basicsr.utils.logger',
    'init_dist': 'basicsr.utils.dist_util',
    'get_dist_info': 'basicsr.utils.dist_util',
    'master_only': 'basicsr.utils.dist_util',
    'set_random_seed': 'basicsr.utils.misc',
    'get_time_str': 'basicsr.utils.misc',
    'mkdir_and_rename': 'basicsr.utils.misc',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'basicsr.utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
