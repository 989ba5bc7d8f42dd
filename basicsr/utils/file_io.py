"""Files written so that a crash, a full disk or a kill never leaves a half-written output under its final name,
and file handles that never cross a process boundary.

Atomic writes: the data go to a temporary file in the destination folder, named ``.<name>.tmp-<pid>-<random>``;
it is flushed to disk (fsync), renamed over the destination (``os.replace``, atomic on POSIX and Windows) and the
folder entry is flushed too. On any failure, Ctrl-C included, the temporary is removed and the previous file, if
any, is left as it was. Write errors (full disk, quota, file too large, permissions, torch's
``[enforce fail at inline_container.cc]`` on a full disk) become a :class:`~basicsr.utils.errors.WriteError` that
names the file, the cause and the bytes free on its disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from basicsr.utils.errors import UserError, WriteError

logger = logging.getLogger(__name__)

_TEMPORARY_NAME = re.compile(r'^\..+\.tmp-?(?P<pid>\d+)(-[0-9a-f]+)?$')
"""Temporaries of :func:`atomic_write` (``.<name>.tmp-<pid>-<hex>``) and of the older ``.<name>.tmp<pid>``."""

_TORCH_WRITE_FAILURES = ('inline_container', 'PytorchStreamWriter', 'file write failed')
"""Parts of the RuntimeError texts of torch.save when the disk fills up or the file cannot be written."""

_FIXES = {
    errno.ENOSPC: 'free some space or point the output to another disk',
    errno.EDQUOT: 'free some space within your quota or point the output to another disk',
    errno.EFBIG: "the file system's largest file size was reached; write to another file system",
    errno.EACCES: 'check the permissions of the folder or point the output elsewhere',
    errno.EPERM: 'check the permissions of the folder or point the output elsewhere',
    errno.EROFS: 'the file system is read-only; point the output elsewhere',
}


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.tmp-<pid>-<8 hex digits>`` in the same folder."""
    path = Path(path)
    return path.with_name(f'.{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}')


def bytes_free(path: str | os.PathLike) -> int | None:
    """Bytes free on the disk that holds ``path`` (or its nearest existing parent folder); None if unknown."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def write_error(path: str | os.PathLike, error: BaseException) -> WriteError:
    """A WriteError naming ``path``, the cause of ``error`` and the bytes free, with a fix when one is known."""
    code = getattr(error, 'errno', None)
    if code is not None and code in errno.errorcode:
        cause = f'{os.strerror(code)} [{errno.errorcode[code]}]'
    else:
        text = str(error).strip().splitlines()
        cause = f'{type(error).__name__}: {text[0] if text else "no details"}'
    free = bytes_free(path)
    space = f'{free:,} bytes free on its disk' if free is not None else 'free space unknown'
    fix = _FIXES.get(code, 'check that the disk has space and the folder is writable')
    message = (
        f"cannot write '{os.fspath(path)}': {cause} ({space}); the previous file of that name, if any, is intact; {fix}"
    )
    written = WriteError(message)
    written.errno = code
    return written


def _is_write_failure(error: BaseException) -> bool:
    if isinstance(error, UserError):
        return False
    if isinstance(error, OSError):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in _TORCH_WRITE_FAILURES)


@contextlib.contextmanager
def write_errors_named(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError (or torch.save's RuntimeError on a full disk) raised inside into a WriteError for ``path``.

    Wrap only the writing itself: an OSError from reading an input would be reported as a write error.
    """
    try:
        yield
    except Exception as error:
        if _is_write_failure(error):
            raise write_error(path, error) from error
        raise


def make_folder(folder: str | os.PathLike) -> None:
    """Create ``folder`` and its parents if needed.

    Raises:
        WriteError: the folder cannot be made (a parent is a file, permissions, full disk); names the folder.
    """
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WriteError(
            f"cannot write into '{existing}': it exists and is not a folder; remove it or choose another output path"
        )
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise write_error(folder, error) from error


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder: Path) -> None:
    """Flush the folder entry of a rename; skipped where the platform cannot open or sync folders."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(descriptor)


class AtomicFile:
    """A destination file and its temporary, for writers that manage their own handle (e.g. h5py).

    Write to :attr:`temporary`, then call :meth:`commit`; call :meth:`discard` on failure. :func:`atomic_write`
    wraps this for a single block of code.

    Args:
        path: the destination; its folder is created.

    Raises:
        WriteError: the folder cannot be made.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        make_folder(self.path.parent if str(self.path.parent) else Path('.'))
        self.temporary = temporary_path(self.path)

    def commit(self) -> None:
        """Flush the temporary to disk and rename it over the destination.

        Raises:
            WriteError: flushing or renaming failed (the temporary is removed, the destination untouched).
        """
        try:
            with write_errors_named(self.path):
                _fsync_file(self.temporary)
                os.replace(self.temporary, self.path)
                _fsync_folder(self.path.parent)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the temporary if it exists (never raises for a missing file)."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.temporary)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` to; on a clean exit the temporary replaces ``path``.

    Example::

        with atomic_write('experiments/x/models/net_g_100.pth') as temporary:
            torch.save(state, temporary)

    The parent folder is created. On any exception (KeyboardInterrupt included) the temporary is removed and
    ``path`` keeps its previous content.

    Raises:
        WriteError: an OSError (or torch.save's full-disk RuntimeError) raised inside the block or while committing;
            the message names ``path``, the cause and the bytes free.
    """
    target = AtomicFile(path)
    try:
        with write_errors_named(target.path):
            yield target.temporary
        target.commit()
    finally:
        target.discard()


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write` (WriteError on failure, previous file intact)."""
    import torch  # utils must stay importable without loading torch

    with atomic_write(path) as temporary:
        torch.save(obj, temporary)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`."""
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding='utf-8')


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON with a final newline to ``path`` through :func:`atomic_write`."""
    write_text_atomic(path, json.dumps(data, indent=2) + '\n')


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != 0


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that interrupted atomic writes left in ``folder`` (not in its sub-folders).

    A temporary is stale when the process that wrote it (the pid in its name) is no longer running, or is this
    process; temporaries of other running processes are left alone. A missing folder is fine.

    Returns:
        the removed files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMPORARY_NAME.match(entry.name)
        if match is None or not entry.is_file():
            continue
        pid = int(match['pid'])
        if pid != os.getpid() and _process_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed.append(entry)
            logger.info("Removed '%s', left behind by an interrupted write.", entry)
    return removed


Key = TypeVar('Key')
Handle = TypeVar('Handle')


class ProcessLocalHandles(Generic[Key, Handle]):
    """Open file handles cached per process: each DataLoader worker opens its own on first use.

    HDF5 handles must not cross processes: a copy made by ``fork`` or by pickling (the ``spawn`` start method)
    starts empty and opens its own handles; the parent's are never reused or closed by a child.

    Args:
        opener: ``opener(key)`` opens the handle for ``key``; it must be picklable (a class or a module-level
            function) and the handle must have a ``close()`` method.
    """

    def __init__(self, opener: Callable[[Key], Handle]):
        self._opener = opener
        self._handles: dict[Key, Handle] = {}
        self._pid = os.getpid()

    def _own(self) -> dict[Key, Handle]:
        if self._pid != os.getpid():  # a forked copy: the parent's handles are not ours
            self._handles, self._pid = {}, os.getpid()
        return self._handles

    def get(self, key: Key) -> Handle:
        """The handle of ``key``, opened by this process on first use."""
        handles = self._own()
        if key not in handles:
            handles[key] = self._opener(key)
        return handles[key]

    def __len__(self) -> int:
        """Number of handles this process holds open."""
        return len(self._own())

    def close(self) -> None:
        """Close every handle this process opened."""
        handles = self._own()
        while handles:
            handles.popitem()[1].close()

    def __getstate__(self) -> dict[str, Any]:
        return {'_opener': self._opener, '_handles': {}, '_pid': None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()
