"""A small schema language for YAML option files, and the validator that applies it.

A schema is a tree of:

* :class:`Key`: a leaf value with accepted types, a default and optional choices/checks;
* :class:`Section`: a mapping with a closed set of known keys;
* :class:`MapOf`: a mapping with free names (``datasets``, ``val.metrics``), each value checked
  against one schema;
* :class:`Component`: a mapping with a ``type`` that names a registry entry; its other keys are
  checked against the entry's ``option_schema`` (a dict of keys) or, failing that, against the
  signature of its constructor/function.

Rules across keys of one mapping are written once, beside the keys: a :class:`Section` takes
``rules``, and a component may define ``option_rules(values) -> [(key, message), ...]``; both run on
the checked values (defaults filled in).

:func:`validate` walks a loaded YAML tree, collects *every* problem (unknown key with the closest
known key, wrong type, missing required key, bad choice) and returns a new, deeply frozen copy
with defaults filled in. The input is never modified.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from basicsr.utils.errors import InvalidInputError
from basicsr.utils.registry import Registry, RegistryError, closest_match

MISSING = object()
"""Marks a key without default: absent keys without default are left out of the result."""


class FrozenDict(dict):
    """A dict that refuses modification; nested values are frozen too (lists become tuples).

    Options are shared by the whole program, so nothing may change them behind the user's back.
    Use :meth:`to_dict` for a mutable deep copy.
    """

    def _readonly(self, *args, **kwargs):
        raise TypeError('options are read-only; build a modified copy with to_dict() instead')

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __reduce__(self):
        return (FrozenDict, (dict(self),))

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __hash__(self):  # pragma: no cover - never hashed, but dict subclasses need a choice
        raise TypeError('options are not hashable')

    def to_dict(self) -> dict:
        """A plain, mutable deep copy (tuples become lists), e.g. for ``yaml.safe_dump``."""
        return thaw(self)


def freeze(value: Any) -> Any:
    """Deeply frozen copy of a YAML-like tree: dicts -> FrozenDict, lists -> tuples."""
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of :func:`freeze`: plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


_TYPE_WORDS = {
    bool: 'a boolean (true/false)',
    int: 'an integer',
    float: 'a number',
    str: 'a string',
    list: 'a list',
    dict: 'a mapping',
}


def _describe(value: Any) -> str:
    if value is None:
        return 'null'
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + '...'
    return f'{type(value).__name__} {text}'


def _coerce(value: Any, types: tuple[type, ...]) -> tuple[bool, Any]:
    """(ok, converted value) for a YAML scalar against accepted Python types.

    ``int`` accepts floats with an integral value (YAML ``!!float 5e4``), ``float`` accepts ints;
    booleans are never taken as numbers, numbers never as booleans.
    """
    for kind in types:
        if kind is bool and isinstance(value, bool):
            return True, value
        if isinstance(value, bool):
            continue
        if kind is int:
            if isinstance(value, int):
                return True, value
            if isinstance(value, float) and value.is_integer():
                return True, int(value)
        elif kind is float and isinstance(value, (int, float)):
            return True, float(value)
        elif kind is str and isinstance(value, str):
            return True, value
        elif kind is list and isinstance(value, (list, tuple)):
            return True, list(value)
        elif kind is dict and isinstance(value, Mapping):
            return True, dict(value)
        elif kind not in _TYPE_WORDS and isinstance(value, kind):
            return True, value
    return False, value


@dataclass
class Problem:
    """One thing wrong with an option file: the dotted key path and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f'{self.path or "<top level>"}: {self.message}'


class Node:
    """Base of schema nodes. ``required``: a missing key is a problem; ``doc``: shown in messages."""

    required: bool = False
    doc: str = ''

    def has_default(self) -> bool:
        return False

    def default(self) -> Any:
        return MISSING

    def check(self, value: Any, path: str, problems: list[Problem]) -> Any:  # pragma: no cover
        raise NotImplementedError


class Key(Node):
    """A leaf option.

    Args:
        types: accepted Python types (``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``),
            a single type or a tuple. ``None`` among them makes null acceptable.
        default: value used when the key is absent (``MISSING``: key left out).
        required: the key must be present.
        choices: allowed values.
        check: ``f(value) -> error message or None`` for rules beyond the type (ranges...).
        doc: one line saying what the key means.
    """

    def __init__(
        self,
        types: Any,
        *,
        default: Any = MISSING,
        required: bool = False,
        choices: tuple | None = None,
        check: Callable[[Any], str | None] | None = None,
        doc: str = '',
    ):
        types = types if isinstance(types, tuple) else (types,)
        self.nullable = None in types or type(None) in types
        self.types = tuple(t for t in types if t is not None and t is not type(None))
        self._default = default
        self.required = required
        self.choices = choices
        self._check = check
        self.doc = doc

    def has_default(self) -> bool:
        return self._default is not MISSING

    def default(self) -> Any:
        return self._default if self._default is MISSING else copy.deepcopy(self._default)

    def expected(self) -> str:
        words = [_TYPE_WORDS.get(t, t.__name__) for t in self.types] or ['any value']
        if self.nullable:
            words.append('null (~)')
        text = ' or '.join(words)
        if self.choices is not None:
            text += f' (one of: {", ".join(map(str, self.choices))})'
        return text

    def check(self, value: Any, path: str, problems: list[Problem]) -> Any:
        if value is None:
            if not self.nullable and self.types:
                problems.append(Problem(path, f'must be {self.expected()}, got null'))
            return None
        if self.types:
            ok, value = _coerce(value, self.types)
            if not ok:
                problems.append(Problem(path, f'must be {self.expected()}, got {_describe(value)}'))
                return value
        if self.choices is not None and value not in self.choices:
            hint = closest_match(str(value), [str(c) for c in self.choices])
            extra = f"; did you mean '{hint}'?" if hint is not None else ''
            problems.append(Problem(path, f'must be one of {", ".join(map(str, self.choices))}, got {value!r}{extra}'))
        elif self._check is not None:
            error = self._check(value)
            if error:
                problems.append(Problem(path, error))
        return value


def _join(path: str, key: Any) -> str:
    return f'{path}.{key}' if path else str(key)


def _check_mapping(value: Any, keys: Mapping[str, Node], path: str, problems: list[Problem], what: str = '') -> dict:
    """Check a mapping against known keys: unknown/missing keys and each value, defaults filled in."""
    if not isinstance(value, Mapping):
        problems.append(Problem(path, f'must be a mapping of keys{what}, got {_describe(value)}'))
        return {}
    result: dict[str, Any] = {}
    for key, item in value.items():
        if key not in keys:
            hint = closest_match(str(key), keys)
            message = f"unknown key '{key}'{what}"
            message += f"; did you mean '{hint}'?" if hint is not None else '.'
            message += f' Known keys here: {", ".join(sorted(keys)) or "(none)"}.'
            problems.append(Problem(_join(path, key), message))
            continue
        result[key] = keys[key].check(item, _join(path, key), problems)
    for key, node in keys.items():
        if key in result:
            continue
        if node.required:
            doc = f' ({node.doc})' if node.doc else ''
            problems.append(Problem(_join(path, key), f'required key is missing{doc}'))
        elif node.has_default():
            result[key] = node.default()
    return result


Rules = Callable[[Mapping[str, Any]], list[tuple[str, str]]]
"""A cross-field rule: checked values of one mapping -> ``[(key, message), ...]`` for each broken rule."""


def _apply_rules(rules: Rules | None, values: dict, path: str, problems: list[Problem], before: int) -> None:
    """Run ``rules`` on ``values`` and add their problems.

    When checking the keys found problems already (``len(problems) > before``), a value may be unusable
    (a string where a number belongs): a rule that fails on it adds nothing, the key's problem is reported.
    """
    if rules is None:
        return
    try:
        broken = rules(values)
    except (TypeError, KeyError, ValueError, AttributeError):
        if len(problems) > before:
            return
        raise
    problems.extend(Problem(_join(path, key), message) for key, message in broken)


class Section(Node):
    """A mapping with a closed set of known keys ``keys`` (name -> node) and optional cross-field ``rules``."""

    def __init__(self, keys: Mapping[str, Node], *, required: bool = False, doc: str = '', rules: Rules | None = None):
        self.keys = dict(keys)
        self.required = required
        self.doc = doc
        self.rules = rules

    def has_default(self) -> bool:
        return not self.required

    def default(self) -> Any:
        problems: list[Problem] = []
        return _check_mapping({}, self.keys, '', problems)

    def check(self, value: Any, path: str, problems: list[Problem]) -> Any:
        if value is None and not self.required:
            return self.default()
        before = len(problems)
        result = _check_mapping(value, self.keys, path, problems)
        _apply_rules(self.rules, result, path, problems, before)
        return result


class MapOf(Node):
    """A mapping with free names, each value checked against ``value``."""

    def __init__(self, value: Node, *, required: bool = False, doc: str = '', default: Any = MISSING):
        self.value = value
        self.required = required
        self.doc = doc
        self._default = default

    def has_default(self) -> bool:
        return self._default is not MISSING

    def default(self) -> Any:
        return self._default

    def check(self, value: Any, path: str, problems: list[Problem]) -> Any:
        if value is None and not self.required:
            return {}
        if not isinstance(value, Mapping):
            problems.append(Problem(path, f'must be a mapping of names to settings, got {_describe(value)}'))
            return {}
        return {name: self.value.check(item, _join(path, name), problems) for name, item in value.items()}


def _annotation_types(annotation: Any) -> tuple:
    """Accepted YAML types for a simple constructor annotation; () when it is not simple."""
    simple = {
        int: (int,),
        float: (float,),
        bool: (bool,),
        str: (str,),
        'int': (int,),
        'float': (float,),
        'bool': (bool,),
        'str': (str,),
    }
    return simple.get(annotation, ())


def signature_keys(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Node]:
    """Option keys derived from a class's ``__init__`` or a function's signature.

    Parameters without default are required; ``*args``/``**kwargs`` and the names in ``skip``
    (passed by the framework itself) are not option keys.
    """
    target = obj.__init__ if inspect.isclass(obj) else obj
    keys: dict[str, Node] = {}
    for i, (name, param) in enumerate(inspect.signature(target).parameters.items()):
        if inspect.isclass(obj) and i == 0:
            continue  # self
        if name in skip or param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        types = _annotation_types(param.annotation)
        if param.default is inspect.Parameter.empty:
            keys[name] = Key(types, required=True)
        elif types and param.default is None:
            keys[name] = Key(types + (None,), default=None)
        else:
            keys[name] = Key(types, default=param.default)
    return keys


class Component(Node):
    """A ``{type: Name, ...}`` mapping whose ``type`` is looked up in ``registry``.

    The other keys are checked against ``common`` (keys every component of this kind takes, such
    as a dataset's ``name`` and loader settings) plus the component's own keys: its
    ``option_schema`` attribute (a mapping name -> node) when it has one, else its signature
    (minus the registry's ``runtime_args`` and the names in ``skip``, which the framework passes itself). A component's
    ``option_rules(values)`` (if it has one) checks rules across its keys.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        required: bool = False,
        common: Mapping[str, Node] | None = None,
        skip: tuple[str, ...] = (),
        doc: str = '',
    ):
        self.registry = registry
        self.required = required
        self.common = dict(common or {})
        self.skip = skip
        self.doc = doc

    def has_default(self) -> bool:
        return not self.required

    def default(self) -> Any:
        return None

    def own_keys(self, obj: Any) -> dict[str, Node]:
        schema = getattr(obj, 'option_schema', None)
        if schema is not None:
            return dict(schema)
        return signature_keys(obj, skip=tuple(self.registry.runtime_args) + tuple(self.skip))

    def check(self, value: Any, path: str, problems: list[Problem]) -> Any:
        if value is None and not self.required:
            return None
        if not isinstance(value, Mapping):
            problems.append(Problem(path, f'must be a mapping with a "type" key, got {_describe(value)}'))
            return {}
        type_name = value.get('type')
        if not isinstance(type_name, str):
            problems.append(
                Problem(
                    _join(path, 'type'),
                    'required key is missing or not a string (a registered '
                    f'{self.registry.name} name, '
                    f'one of: {", ".join(self.registry.keys())})',
                )
            )
            return dict(value)
        try:
            obj = self.registry.get(type_name)
        except RegistryError as error:
            problems.append(Problem(_join(path, 'type'), str(error)))
            return dict(value)
        keys = {**self.common, **self.own_keys(obj), 'type': Key(str)}
        before = len(problems)
        result = _check_mapping(value, keys, path, problems, what=f' for {self.registry.name} {type_name}')
        _apply_rules(getattr(obj, 'option_rules', None), result, path, problems, before)
        return result


def validate(tree: Any, schema: Node) -> tuple[Any, list[Problem]]:
    """Check ``tree`` (a loaded YAML document) against ``schema``.

    Returns:
        (a new plain copy with defaults filled in and numbers coerced, list of every problem
        found). The input is not modified; :func:`freeze` the copy once derived values are added.
    """
    problems: list[Problem] = []
    result = schema.check(tree, '', problems)
    return result, problems


def format_problems(header: str, problems: list[Problem]) -> str:
    """One message: ``header`` (what was checked), the problem count, then every problem on its own line."""
    count = f'{len(problems)} problem{"s" if len(problems) > 1 else ""}'
    return f'{header} ({count}):\n' + '\n'.join(f'  - {p}' for p in problems)


def check_component(registry: Registry, options: Mapping[str, Any], where: str = '', **node_args: Any) -> FrozenDict:
    """Validate one ``{type: ..., ...}`` mapping against its component's schema (what a file's loading does).

    For code that builds a component from a hand-written mapping (scripts, tests) rather than from a loaded
    option file. ``node_args`` go to :class:`Component` (e.g. ``common`` keys).

    Returns:
        The validated, frozen options with defaults filled in.

    Raises:
        InvalidInputError: listing every problem.
    """
    result, problems = validate(options, Component(registry, required=True, **node_args))
    if problems:
        where = where or f'{registry.name} options of type {options.get("type")!r}'
        raise InvalidInputError(format_problems(f'Invalid {where}', problems))
    return freeze(result)
