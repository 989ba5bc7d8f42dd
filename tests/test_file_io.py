"""Atomic writes, named write errors, stale temporaries and the per-process handle cache."""

from __future__ import annotations

import errno
import os
import pickle
import re

import pytest
import torch

from basicsr.utils import file_io
from basicsr.utils.errors import WriteError
from basicsr.utils.file_io import (
    AtomicFile,
    ProcessLocalHandles,
    atomic_write,
    remove_stale_temporaries,
    save_torch_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'new' / 'folder' / 'metrics.json'
    write_json_atomic(path, {'psnr': 30.5})
    assert path.read_text() == '{\n  "psnr": 30.5\n}\n'
    with atomic_write(path) as temporary:
        assert temporary.parent == path.parent
        assert temporary.name.startswith('.metrics.json.tmp-') and not temporary.exists()
        temporary.write_text('second')
        assert path.read_text().startswith('{')  # the old content stays until the block ends
    assert path.read_text() == 'second'
    assert os.listdir(path.parent) == ['metrics.json']


@pytest.mark.parametrize('failure', [RuntimeError('bug'), KeyboardInterrupt()])
def test_a_failure_inside_the_block_keeps_the_previous_file_and_removes_the_temporary(tmp_path, failure):
    path = tmp_path / 'a.txt'
    write_text_atomic(path, 'old')
    with pytest.raises(type(failure)):
        with atomic_write(path) as temporary:
            temporary.write_text('half')
            raise failure
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['a.txt']


@pytest.mark.parametrize(
    'code, hint',
    [
        (errno.ENOSPC, 'No space left on device \\[ENOSPC\\]'),
        (errno.EDQUOT, 'quota'),
        (errno.EFBIG, 'largest file size'),
        (errno.EACCES, 'permissions'),
    ],
)
def test_os_errors_while_writing_become_a_write_error_naming_path_cause_and_free_bytes(tmp_path, code, hint):
    path = tmp_path / 'net_g_10.pth'
    save_torch_atomic({'x': torch.zeros(2)}, path)
    with pytest.raises(WriteError, match=rf"cannot write '{path}': .* bytes free on its disk.*intact") as info:
        with atomic_write(path) as temporary:
            temporary.write_bytes(b'partial')
            raise OSError(code, os.strerror(code))
    assert re.search(hint, str(info.value))
    assert info.value.errno == code
    assert isinstance(info.value, OSError)
    assert torch.load(path)['x'].shape == (2,)
    assert os.listdir(tmp_path) == ['net_g_10.pth']


def test_torch_save_on_a_full_disk_is_a_write_error_and_the_previous_checkpoint_survives(tmp_path, monkeypatch):
    path = tmp_path / 'training_states' / '2.state'
    save_torch_atomic({'iter': 1}, path)

    def full_disk(obj, file, *args, **kwargs):
        with open(file, 'wb') as handle:
            handle.write(b'PK partial zip')
        raise RuntimeError(
            '[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file '
            'data/0: file write failed'
        )

    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(WriteError, match=r"2.state': RuntimeError: \[enforce fail at inline_container.cc:672\]"):
        save_torch_atomic({'iter': 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {'iter': 1}
    assert os.listdir(path.parent) == ['2.state']


def test_a_failing_fsync_is_a_write_error_and_the_destination_is_untouched(tmp_path, monkeypatch):
    path = tmp_path / 'a.txt'
    write_text_atomic(path, 'old')

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(file_io.os, 'fsync', no_space)
    with pytest.raises(WriteError, match='ENOSPC'):
        write_text_atomic(path, 'new')
    monkeypatch.undo()
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['a.txt']


def test_an_output_folder_below_a_regular_file_is_named(tmp_path):
    blocker = tmp_path / 'results'
    blocker.write_text('a file where a folder should be')
    with pytest.raises(WriteError, match=f"cannot write into '{blocker}': it exists and is not a folder"):
        write_text_atomic(blocker / 'run' / 'metrics.json', '{}')


def test_other_errors_are_not_disguised_as_write_errors(tmp_path):
    with pytest.raises(ValueError, match='not a write error'):
        with atomic_write(tmp_path / 'a') as temporary:
            temporary.write_text('x')
            raise ValueError('not a write error')


def test_remove_stale_temporaries_keeps_those_of_running_processes(tmp_path):
    dead_pid = 2**22 + 17  # above Linux's default pid_max
    stale = [
        tmp_path / f'.net_g_4.pth.tmp-{dead_pid}-0a1b2c3d',
        tmp_path / f'.2.state.tmp{dead_pid}',
        tmp_path / f'.x.h5.tmp-{os.getpid()}-00000000',
    ]
    alive = tmp_path / f'.y.pth.tmp-{os.getppid()}-ffffffff'
    regular = [tmp_path / 'net_g_4.pth', tmp_path / '.hidden', tmp_path / 'tmp-1']
    for path in [*stale, alive, *regular]:
        path.write_text('x')
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [alive, *regular])
    assert remove_stale_temporaries(tmp_path / 'missing') == []


def test_atomic_file_commit_and_discard(tmp_path):
    target = AtomicFile(tmp_path / 'sub' / 'f.bin')
    target.temporary.write_bytes(b'data')
    target.commit()
    assert (tmp_path / 'sub' / 'f.bin').read_bytes() == b'data'
    other = AtomicFile(tmp_path / 'sub' / 'g.bin')
    other.temporary.write_bytes(b'x')
    other.discard()
    other.discard()
    assert os.listdir(tmp_path / 'sub') == ['f.bin']


class _Handle:
    opened: list[str] = []

    def __init__(self, key: str):
        self.key, self.closed = key, False
        _Handle.opened.append(key)

    def close(self) -> None:
        self.closed = True


def test_process_local_handles_open_once_per_key_and_never_cross_a_pickle_or_fork(monkeypatch):
    handles = ProcessLocalHandles(_Handle)
    first = handles.get('a')
    assert handles.get('a') is first and len(handles) == 1
    clone = pickle.loads(pickle.dumps(handles))
    assert len(clone) == 0 and clone.get('a') is not first
    monkeypatch.setattr(os, 'getpid', lambda: -1)  # what a forked worker sees
    assert len(handles) == 0
    assert handles.get('a') is not first
    assert not first.closed  # the parent's handle is not closed by the child
    handles.close()
    assert len(handles) == 0
