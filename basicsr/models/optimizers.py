"""Optimisers selectable by ``type`` in ``train.optim_g`` (torch's own classes), and their builder."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from basicsr.utils.registry import OPTIMIZER_REGISTRY, Registry, closest_match

OPTIMIZER_REGISTRY.register(torch.optim.Adam)
OPTIMIZER_REGISTRY.register(torch.optim.AdamW)
OPTIMIZER_REGISTRY.register(torch.optim.SGD)


def _constructor_keys(cls: type, skip: int) -> list[str] | None:
    """Keyword names of ``cls.__init__`` after ``self`` and ``skip`` positional ones; None with **kwargs."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1 + skip :]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params]


def _check_value(key: str, value: Any, where: str) -> Any:
    """YAML lists become tuples (``betas``); numbers that YAML read as strings are rejected."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError(
            f"{where}: '{key}' is the string {value!r}, not a number. YAML reads exponent numbers without a dot "
            f'as strings: write {key}: !!float {value}, or put a dot in the mantissa (2.0e-4, not 2e-4).'
        )
    return value


def build_from_options(registry: Registry, options: Mapping[str, Any], *args: Any, what: str) -> Any:
    """Build ``registry.get(options['type'])(*args, **other options)`` without modifying ``options``.

    Args:
        registry: where ``type`` is looked up.
        options: a mapping with ``type`` and the constructor's keyword arguments.
        *args: leading positional arguments (parameters for an optimiser, the optimiser for a scheduler).
        what: the option path, for messages (e.g. ``'train.optim_g'``).

    Raises:
        KeyError: unknown ``type`` (message lists the known names), or no ``type``.
        ValueError: an option the constructor does not take, or a number written as a string.
    """
    if 'type' not in options:
        known = ', '.join(registry.keys())
        raise KeyError(f"{what} needs a 'type' key naming the {registry.name} (one of: {known}).")
    cls = registry.get(options['type'])
    where = f"{what} (type {options['type']})"
    kwargs = {key: _check_value(key, value, where) for key, value in options.items() if key != 'type'}
    known_keys = _constructor_keys(cls, skip=len(args))
    if known_keys is not None:
        for key in kwargs:
            if key not in known_keys:
                hint = closest_match(key, known_keys)
                extra = f" Did you mean '{hint}'?" if hint is not None else ''
                raise ValueError(f"{where}: unknown option '{key}'; known options: {', '.join(known_keys)}.{extra}")
    return cls(*args, **kwargs)


def build_optimizer(
    params_or_groups: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    optim_opt: Mapping[str, Any],
    what: str = 'train.optim_g',
) -> torch.optim.Optimizer:
    """Build the optimiser that ``optim_opt`` describes, e.g. ``{type: AdamW, lr: 2e-4, betas: [0.9, 0.99]}``.

    Args:
        params_or_groups: parameters, or parameter groups (dicts with ``params`` and per-group options).
        optim_opt: ``type`` (Adam, AdamW or SGD) and the keyword arguments of that torch class; lists
            become tuples. Not modified.
        what: the option path, for messages.

    Returns:
        The torch optimiser.
    """
    return build_from_options(OPTIMIZER_REGISTRY, optim_opt, params_or_groups, what=what)
