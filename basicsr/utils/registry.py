"""Name -> object registries that YAML option files use to pick components.

Each registry knows the modules that hold its built-in components and imports them on the first
lookup, so ``import basicsr`` imports no component module (and no optional dependency of one).

Example::

    @ARCH_REGISTRY.register()
    class EFNet(nn.Module): ...

    net_cls = ARCH_REGISTRY.get('EFNet')
    net = build(ARCH_REGISTRY, {'type': 'EFNet', 'wf': 32})
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)


class RegistryError(KeyError):
    """An unknown or duplicated registry name. ``str()`` gives the plain message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def closest_match(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name`` (case-insensitive), or None when none is close."""
    by_lower = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[hits[0]] if hits else None


def _origin(obj: Any) -> str:
    """'module.qualname (file:line)' of a registered object, for duplicate-name messages."""
    where = f'{getattr(obj, "__module__", "?")}.{getattr(obj, "__qualname__", repr(obj))}'
    try:
        where += f' ({inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]})'
    except (TypeError, OSError):
        pass
    return where


class Registry:
    """A mapping from names to classes or functions of one kind (archs, datasets, ...).

    Args:
        name: what the registry holds, used in messages (e.g. ``'arch'``).
        modules: dotted module names imported on the first lookup; they register the built-in
            components of this kind.
        runtime_args: constructor arguments the framework passes when building (the parameters of an
            optimiser, the optimiser of a scheduler), so they are not option keys.
    """

    def __init__(self, name: str, modules: Iterable[str] = (), runtime_args: tuple[str, ...] = ()):
        self._name = name
        self.runtime_args = runtime_args
        self._modules = tuple(modules)
        self._modules_loaded = False
        self._obj_map: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    def _do_register(self, name: str, obj: Any) -> None:
        if name in self._obj_map:
            raise RegistryError(
                f"The name '{name}' is registered twice in the {self._name} registry: first by "
                f'{_origin(self._obj_map[name])}, again by {_origin(obj)}. Rename one of them.'
            )
        self._obj_map[name] = obj

    def register(self, obj: Any = None, name: str | None = None) -> Callable | None:
        """Register ``obj`` under ``name`` (default: its ``__name__``).

        Used as a decorator, ``@REGISTRY.register()`` or ``@REGISTRY.register(name='Alias')``;
        or called directly, ``REGISTRY.register(obj)``.
        """
        if obj is None:

            def deco(func_or_class: Any) -> Any:
                self._do_register(name or func_or_class.__name__, func_or_class)
                return func_or_class

            return deco
        self._do_register(name or obj.__name__, obj)
        return None

    def _load_builtin_modules(self) -> None:
        if self._modules_loaded:
            return
        for module in self._modules:
            importlib.import_module(module)  # an import error surfaces here, at every lookup until fixed
        self._modules_loaded = True

    def get(self, name: str) -> Any:
        """The object registered as ``name``.

        Raises:
            RegistryError: for an unknown name; the message lists the known names and the
                closest one.
        """
        self._load_builtin_modules()
        if name in self._obj_map:
            return self._obj_map[name]
        known = sorted(self._obj_map)
        hint = closest_match(str(name), known)
        message = (
            f"No {self._name} named '{name}' is registered. Known {self._name} names: {', '.join(known) or '(none)'}."
        )
        if hint is not None:
            message += f" Did you mean '{hint}'?"
        raise RegistryError(message)

    def __contains__(self, name: str) -> bool:
        self._load_builtin_modules()
        return name in self._obj_map

    def keys(self) -> list[str]:
        """Sorted registered names (built-in modules are imported first)."""
        self._load_builtin_modules()
        return sorted(self._obj_map)

    def __iter__(self):
        return iter(self.keys())

    def __repr__(self) -> str:
        return f'Registry({self._name!r}, {len(self._obj_map)} registered)'


ARCH_REGISTRY = Registry('arch', modules=['basicsr.archs.efnet_arch'])
DATASET_REGISTRY = Registry('dataset', modules=['basicsr.data.h5_image_dataset', 'basicsr.data.raw_event_dataset'])
MODEL_REGISTRY = Registry('model', modules=['basicsr.models.image_event_restoration_model'])
LOSS_REGISTRY = Registry('loss', modules=['basicsr.losses.basic_loss'])
METRIC_REGISTRY = Registry('metric', modules=['basicsr.metrics.psnr_ssim'], runtime_args=('img', 'img2'))
OPTIMIZER_REGISTRY = Registry('optimizer', modules=['basicsr.models.optimizers'], runtime_args=('params',))
SCHEDULER_REGISTRY = Registry(
    'scheduler', modules=['basicsr.models.lr_scheduler'], runtime_args=('optimizer', 'last_epoch')
)


def build(registry: Registry, options: Mapping[str, Any], *, type_key: str = 'type', **runtime: Any) -> Any:
    """The component that validated ``options`` describe, e.g. ``{type: EFNet, wf: 64}``.

    ``registry.get(options[type_key])`` is then

    * a class with ``takes_options = True`` (data sets, models): called as ``cls(options, **runtime)``;
    * another class (archs, losses, optimizers, schedulers): called as ``cls(**runtime, **other options)``;
    * a function (metrics): returned as ``functools.partial(func, **runtime, **other options)``.

    Args:
        registry: where the type is looked up.
        options: validated options (not modified, not re-checked: loading checked them).
        type_key: the key naming the type (``model_type`` for models).
        **runtime: what the framework passes besides the options (the parameters of an optimiser, the
            optimiser of a scheduler, the run context of a model).
    """
    name = options[type_key]
    obj = registry.get(name)
    if getattr(obj, 'takes_options', False):
        built = obj(options, **runtime)
    else:
        kwargs = {key: value for key, value in options.items() if key != type_key}
        built = obj(**runtime, **kwargs) if inspect.isclass(obj) else functools.partial(obj, **runtime, **kwargs)
    logger.debug('Built %s %s.', registry.name, name)
    return built
