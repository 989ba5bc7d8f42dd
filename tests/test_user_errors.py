"""The UserError family: errors raised in DataLoader workers keep their one-paragraph message."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from torch.utils.data import DataLoader, Dataset

from basicsr.utils.errors import InvalidInputError, MissingInputError, MissingKeyError, UserError


class _FailingDataset(Dataset):
    def __init__(self, error: UserError):
        self.error = error

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        try:
            raise OSError('the low-level cause')
        except OSError as cause:
            raise self.error from cause


@pytest.mark.parametrize(
    'error, compatible',
    [
        (InvalidInputError('seq.h5: voxels/voxel000000003 contains NaN (12 values)'), ValueError),
        (MissingInputError("dataroot 'x' does not exist;\nsecond line"), FileNotFoundError),
        (MissingKeyError("events file 'a.h5' has no dataset 'events/ts'"), KeyError),
    ],
)
def test_an_error_in_a_loader_worker_keeps_its_type_and_only_its_message(error, compatible):
    loader = DataLoader(_FailingDataset(error), num_workers=1)
    with pytest.raises(type(error)) as info:
        next(iter(loader))
    assert str(info.value) == str(error)
    assert isinstance(info.value, compatible)


def test_missing_key_error_is_shown_without_quotes():
    assert str(MissingKeyError('no key')) == 'no key'


def test_the_error_boundary_prints_one_paragraph_for_a_worker_error(tmp_path):
    script = tmp_path / 'entry.py'
    script.write_text(
        textwrap.dedent("""
        from torch.utils.data import DataLoader, Dataset
        from basicsr.engine.entry_point import run_main
        from basicsr.utils.errors import InvalidInputError

        class Broken(Dataset):
            def __len__(self):
                return 2

            def __getitem__(self, index):
                raise InvalidInputError("HDF5 file 'seq.h5': 'voxels/voxel000000003' contains NaN")

        def main():
            next(iter(DataLoader(Broken(), num_workers=1)))

        if __name__ == '__main__':
            run_main(main)
    """)
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == "error: HDF5 file 'seq.h5': 'voxels/voxel000000003' contains NaN\n"
