"""Errors that stand for an anticipated problem with what the user gave us.

Every entry point (``train.py``, ``test.py``, ``deblur.py``, the scripts) runs inside one error boundary
(:func:`basicsr.engine.entry_point.run_main`): a :class:`UserError` is printed as ``error: <message>`` on standard
error and the program exits with status 2, without a traceback; anything else is a bug and keeps its traceback.
``BASICSR_DEBUG=1`` shows the traceback of a UserError too.

A message is one paragraph that names the file, the key or item, what was found and how to fix it.
"""

from __future__ import annotations


class UserError(Exception):
    """An anticipated problem: a bad option, a malformed or missing file, a mismatched checkpoint, a full disk.

    Raised inside a DataLoader worker, it reaches the main process re-created by torch with the text
    ``Caught <Class> in DataLoader worker process N. Original Traceback ...``; the constructor keeps only the
    original message, so the error boundary prints the one paragraph that names the file and the item.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_original_message(type(self), args[0]),)
        super().__init__(*args)


def _original_message(error_type: type, message: str) -> str:
    """The original message inside the text of an exception re-raised by torch from a worker, else ``message``."""
    if not message.startswith(f'Caught {error_type.__name__} ') or '\nOriginal Traceback' not in message:
        return message
    name = error_type.__qualname__
    if error_type.__module__ not in ('__main__', 'builtins'):
        name = f'{error_type.__module__}.{name}'
    _, found, original = message.rpartition(f'\n{name}: ')
    return original.rstrip('\n') if found else message


class InvalidInputError(UserError, ValueError):
    """A value, file content or combination of inputs that cannot be used (also a ValueError)."""


class MissingKeyError(InvalidInputError, KeyError):
    """A file or mapping lacks a required key, dataset or attribute (also a KeyError and a ValueError)."""

    __str__ = Exception.__str__  # KeyError would show the message in quotes


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (also a FileNotFoundError)."""


class MissingPackageError(UserError, ImportError):
    """An optional package that this input needs is not installed; the message gives the pip command."""


class WriteError(UserError, OSError):
    """Writing an output failed (full disk, quota, permissions); the previous outputs are intact."""
