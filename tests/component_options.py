"""The one way tests build a component from a hand-written mapping: validated like a loaded option file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from basicsr.engine.options import DATASET_COMMON_KEYS
from basicsr.utils.option_schema import FrozenDict, check_component
from basicsr.utils.registry import DATASET_REGISTRY, Registry


def validated(registry: Registry, options: Mapping[str, Any]) -> FrozenDict:
    """``options`` (with ``type``) checked against the component's schema and rules, defaults filled, frozen.

    A data set also takes the keys every ``datasets:`` entry takes (its ``name`` defaults to 'test' here).

    Raises:
        InvalidInputError: listing every problem, as loading an option file would.
    """
    options = dict(options)
    common = None
    if registry is DATASET_REGISTRY:
        common = DATASET_COMMON_KEYS
        options.setdefault('name', 'test')
    return check_component(registry, options, common=common)
