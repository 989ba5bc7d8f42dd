"""Errors that stand for an anticipated problem with what the user gave us.

Every entry point (``train.py``, ``test.py``, ``deblur.py``, the scripts) runs inside one error boundary
(:func:`basicsr.engine.entry_point.run_main`): a :class:`UserError` is printed as ``error: <message>`` on standard
error and the program exits with status 2, without a traceback; anything else is a bug and keeps its traceback.
``BASICSR_DEBUG=1`` shows the traceback of a UserError too.

A message is one paragraph that names the file, the key or item, what was found and how to fix it.
"""

from __future__ import annotations


class UserError(Exception):
    """An anticipated problem: a bad option, a malformed or missing file, a mismatched checkpoint, a full disk."""


class InvalidInputError(UserError, ValueError):
    """A value, file content or combination of inputs that cannot be used (also a ValueError)."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (also a FileNotFoundError)."""


class WriteError(UserError, OSError):
    """Writing an output failed (full disk, quota, permissions); the previous outputs are intact."""
