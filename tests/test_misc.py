"""Small helpers: seeding, archiving folders, the newest training state."""

from __future__ import annotations

import random
import re

import numpy as np
import torch

from basicsr.utils import misc
from basicsr.utils.misc import (
    get_time_str,
    mkdir_and_rename,
    set_random_seed,
)


def draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_set_random_seed_makes_python_numpy_and_torch_repeatable():
    set_random_seed(10)
    first = draws()
    set_random_seed(10)
    assert draws() == first
    set_random_seed(11)
    assert draws() != first


def test_set_random_seed_accepts_seeds_beyond_32_bits():
    set_random_seed(2**32 + 5)
    first = draws()
    set_random_seed(2**32 + 5)
    assert draws() == first


def test_time_string_format():
    assert re.fullmatch(r'\d{8}_\d{6}', get_time_str())


def test_mkdir_and_rename_creates_a_new_folder(tmp_path):
    path = mkdir_and_rename(tmp_path / 'experiments' / 'exp')
    assert path == tmp_path / 'experiments' / 'exp' and path.is_dir()


def test_mkdir_and_rename_archives_an_existing_folder_instead_of_deleting_it(tmp_path, monkeypatch):
    monkeypatch.setattr(misc, 'get_time_str', lambda: '20250101_120000')
    folder = tmp_path / 'exp'
    folder.mkdir()
    (folder / 'net_g_100.pth').write_text('weights 1')
    mkdir_and_rename(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert (tmp_path / 'exp_archived_20250101_120000' / 'net_g_100.pth').read_text() == 'weights 1'

    (folder / 'net_g_200.pth').write_text('weights 2')
    mkdir_and_rename(folder)  # same second: a suffix keeps both archives
    assert (tmp_path / 'exp_archived_20250101_120000_1' / 'net_g_200.pth').read_text() == 'weights 2'
    assert (tmp_path / 'exp_archived_20250101_120000' / 'net_g_100.pth').read_text() == 'weights 1'
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'exp',
        'exp_archived_20250101_120000',
        'exp_archived_20250101_120000_1',
    ]
