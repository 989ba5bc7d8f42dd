"""Loading and saving network weights in the BasicSR checkpoint format.

A checkpoint is a ``torch.save`` file holding ``{'params': state_dict}`` (and/or ``params_ema``),
possibly with extra metadata, or a bare state dict. Files are read with ``weights_only=True``:
a checkpoint is untrusted input, and arbitrary pickled objects in it are refused. Training states
(``training_states/<iter>.state``) are read by :func:`read_training_state` under the same rules.
Files are written atomically (:mod:`basicsr.utils.file_io`).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from basicsr.utils.errors import InvalidInputError, MissingInputError
from basicsr.utils.file_io import save_torch_atomic
from basicsr.utils.option_schema import thaw

logger = logging.getLogger(__name__)

__all__ = [
    'CheckpointError',
    'CheckpointMismatchError',
    'load_network',
    'read_state_dict',
    'read_training_state',
    'save_network',
    'unwrap_network',
]

_PARAM_KEYS = ('params', 'params_ema')
_LISTED_KEYS = 10  # names listed per category in mismatch messages; the rest are counted


class CheckpointError(InvalidInputError):
    """A checkpoint or training-state file that cannot be read or holds no usable state (also a ValueError)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not match the network.

    Attributes:
        path: the checkpoint file.
        missing: names the network has and the checkpoint lacks.
        unexpected: names the checkpoint has and the network lacks.
        mismatched: ``(name, checkpoint shape, network shape)`` for names in both with different shapes.
    """

    def __init__(
        self,
        message: str,
        path: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ):
        super().__init__(message)
        self.path = path
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


def unwrap_network(net: nn.Module) -> nn.Module:
    """The bare network inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            net = net.module
        elif isinstance(getattr(net, '_orig_mod', None), nn.Module):  # torch.compile's OptimizedModule
            net = net._orig_mod
        else:
            return net


def _strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` prefix that (Distributed)DataParallel adds to every name."""
    return {key[len('module.') :] if key.startswith('module.') else key: value for key, value in state_dict.items()}


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _listing(names: list[str]) -> str:
    shown = ', '.join(names[:_LISTED_KEYS])
    return shown + (f', ... and {len(names) - _LISTED_KEYS} more' if len(names) > _LISTED_KEYS else '')


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The specific reason inside torch's long weights_only message (e.g. 'Unsupported global: ...')."""
    _, found, rest = str(error).partition('WeightsUnpickler error:')
    lines = [line.strip() for line in rest.splitlines() if line.strip()] if found else []
    return lines[0].split(' Please use')[0] if lines else 'content other than tensors and plain containers'


def _load_torch_file(path: str, what: str, missing_hint: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with every failure named.

    Args:
        path: the file.
        what: 'Checkpoint file' or 'Training state file', the start of the messages.
        missing_hint: the fix when the file does not exist.

    Raises:
        MissingInputError: the file does not exist.
        CheckpointError: unreadable, truncated, corrupt, or refused by ``weights_only``.
    """
    if not os.path.isfile(path):
        raise MissingInputError(f"{what} '{path}' does not exist; {missing_hint}")
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{what} '{path}' cannot be loaded safely (torch.load with weights_only=True refused it: "
            f'{_unpickler_reason(error)}). It is not a torch checkpoint, or it contains pickled Python objects '
            'other than tensors and plain containers; re-save it with save_network from a trusted environment.'
        ) from error
    except Exception as error:  # truncated or corrupt files fail in many ways (RuntimeError, EOFError, OSError...)
        detail = str(error).strip().splitlines()[0] if str(error).strip() else 'no details'
        raise CheckpointError(
            f"{what} '{path}' is not a readable torch file ({type(error).__name__}: {detail}); it is probably "
            'truncated or corrupt (an interrupted copy or save, a full disk); use an earlier file or copy it again.'
        ) from error


def _read_checkpoint(path: str) -> Any:
    return _load_torch_file(path, 'Checkpoint file', 'check path.pretrain_network_g (or the path you passed).')


def read_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state (``training_states/<iter>.state``) with ``weights_only=True`` onto the CPU.

    Args:
        path: the state file.

    Returns:
        The state dict as saved (at least ``iter``: int; ``epoch``, ``optimizers``, ``schedulers``, ...).

    Raises:
        MissingInputError: the file does not exist.
        CheckpointError: the file is truncated, corrupt, refused by ``weights_only``, or not a dict with an
            integer ``iter``; a caller resuming automatically can skip to the previous state.
    """
    path = os.fspath(path)
    state = _load_torch_file(path, 'Training state file', 'check path.resume_state (or use --auto_resume).')
    if not isinstance(state, Mapping) or not isinstance(state.get('iter'), int):
        found = sorted(map(str, state)) if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(
            f"Training state file '{path}' is not a training state (expected a dict with an "
            f"integer 'iter', found {found}); point path.resume_state to a file under "
            'training_states/.'
        )
    return dict(state)


def _select_state_dict(checkpoint: Any, path: str, param_key: str | None) -> tuple[dict[str, Any], str]:
    """The state dict to load and a description of where it came from."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"Checkpoint file '{path}' holds a {type(checkpoint).__name__}, not a dict; expected "
            "{'params': state_dict} or a bare state dict."
        )
    if param_key is not None and param_key in checkpoint:
        state_dict, origin = checkpoint[param_key], f"key '{param_key}'"
    elif _is_state_dict(checkpoint):
        state_dict, origin = checkpoint, 'bare state dict'
    else:
        if param_key is None:
            message = f"Checkpoint file '{path}' is not a bare state dict (param_key=None)"
        else:
            message = f"Checkpoint file '{path}' has no key '{param_key}' and is not a bare state dict"
        message += f'; its top-level keys are: {_listing([str(k) for k in checkpoint])}.'
        alternatives = [k for k in _PARAM_KEYS if k in checkpoint and k != param_key]
        if alternatives:
            message += (
                f' It has {" and ".join(repr(k) for k in alternatives)}: set param_key '
                f'(path.param_key_g in the options) to {alternatives[0]!r}.'
            )
        raise CheckpointError(message)
    if not _is_state_dict(state_dict):
        bad = (
            [str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
            if isinstance(state_dict, Mapping)
            else []
        )
        detail = f'non-tensor entries: {_listing(bad)}' if bad else f'got {type(state_dict).__name__}'
        raise CheckpointError(f"Checkpoint file '{path}' ({origin}) is not a state dict of tensors ({detail}).")
    return _strip_module_prefix(state_dict), origin


def _compare(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]):
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    return missing, unexpected, mismatched


def _mismatch_report(missing, unexpected, mismatched, expected) -> list[str]:
    lines = []
    if missing:
        lines.append(
            f'{len(missing)} missing (in the network, not in the checkpoint): '
            + _listing([f'{k} {tuple(expected[k].shape)}' for k in missing])
        )
    if unexpected:
        lines.append(f'{len(unexpected)} unexpected (in the checkpoint, not in the network): ' + _listing(unexpected))
    if mismatched:
        lines.append(
            f'{len(mismatched)} with a different shape: '
            + _listing([f'{k} checkpoint {ckpt} vs network {net}' for k, ckpt, net in mismatched])
        )
    return lines


def read_state_dict(path: str | os.PathLike, param_key: str | None = 'params') -> dict[str, torch.Tensor]:
    """The state dict :func:`load_network` would load from ``path`` (read with ``weights_only=True``, on the CPU,
    without a ``module.`` prefix), e.g. to read a network's settings from its shapes before building it.

    Raises:
        FileNotFoundError, CheckpointError: as :func:`load_network`.
    """
    path = os.fspath(path)
    return _select_state_dict(_read_checkpoint(path), path, param_key)[0]


def load_network(
    net: nn.Module, path: str | os.PathLike, strict: bool = True, param_key: str | None = 'params'
) -> nn.Module:
    """Load weights from a checkpoint file into ``net`` (in place) and return ``net``.

    Args:
        net: the network; DataParallel / DistributedDataParallel / torch.compile wrappers are
            looked through.
        path: a ``torch.save`` file: ``{'params': ..., 'params_ema': ..., ...}`` or a bare state dict.
            A ``module.`` prefix on the names is removed.
        strict: require the names and shapes to match exactly. With False, the entries whose name
            and shape match are loaded and the others are logged as skipped.
        param_key: the entry holding the state dict (``'params'`` or ``'params_ema'``). When the file
            has no such entry but is itself a bare state dict, that is used. None: the file must be a
            bare state dict.

    Raises:
        MissingInputError (a FileNotFoundError): ``path`` does not exist.
        CheckpointError (a ValueError): the file is not a loadable torch checkpoint, is refused by
            ``weights_only=True``, or holds no state dict under ``param_key``.
        CheckpointMismatchError (a CheckpointError): with ``strict``, missing, unexpected or
            wrongly shaped names; the message lists them with their shapes and names the file.
    """
    path = os.fspath(path)
    target = unwrap_network(net)
    state_dict, origin = _select_state_dict(_read_checkpoint(path), path, param_key)
    expected = target.state_dict()
    missing, unexpected, mismatched = _compare(state_dict, expected)
    report = _mismatch_report(missing, unexpected, mismatched, expected)
    if report and strict:
        raise CheckpointMismatchError(
            f"Checkpoint '{path}' ({origin}) does not match {type(target).__name__}:\n  "
            + '\n  '.join(report)
            + '\nCheck that network_g has the settings the checkpoint was trained with, or load only the matching '
            'entries with strict=False (strict_load_g: false).',
            path,
            missing,
            unexpected,
            mismatched,
        )
    if report:
        logger.warning(
            "Loading '%s' (%s) non-strictly into %s; skipped:\n  %s",
            path,
            origin,
            type(target).__name__,
            '\n  '.join(report),
        )
        skip = {k for k, _, _ in mismatched}
        state_dict = {k: v for k, v in state_dict.items() if k in expected and k not in skip}
    target.load_state_dict(state_dict, strict=strict)
    logger.info("Loaded %s from '%s' (%s, %d entries).", type(target).__name__, path, origin, len(state_dict))
    return net


def save_network(
    net: nn.Module, path: str | os.PathLike, param_key: str = 'params', extra: Mapping[str, Any] | None = None
) -> None:
    """Save ``{param_key: state_dict, **extra}`` to ``path`` atomically.

    The state dict comes from the unwrapped network (no ``module.`` prefix), with tensors moved to
    the CPU. The file is written next to ``path`` and moved into place with ``os.replace``, so an
    interrupted save never leaves a truncated checkpoint. Parent folders are created.

    Args:
        net: the network (wrappers are looked through).
        path: the destination file.
        param_key: the entry for the weights, ``'params'`` or ``'params_ema'``.
        extra: metadata stored beside the weights; must hold only tensors, numbers, strings,
            booleans, None and (nested) mappings / lists / tuples, so the file stays loadable with
            ``weights_only=True``. Mappings (e.g. read-only options) are stored as plain dicts.

    Raises:
        ValueError: ``extra`` uses ``param_key`` as a key.
        WriteError: the file cannot be written (full disk, permissions); names the path, the cause and the
            bytes free; a previous file of that name is left intact.
    """
    path = os.fspath(path)
    extra = thaw(dict(extra or {}))
    if param_key in extra:
        raise ValueError(f"save_network: extra must not contain the key '{param_key}', which holds the weights")
    state_dict = {k: v.detach().cpu() for k, v in _strip_module_prefix(unwrap_network(net).state_dict()).items()}
    save_torch_atomic({param_key: state_dict, **extra}, path)
