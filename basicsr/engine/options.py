"""Option files: safe YAML loading, the top-level schema, validation once at load, overrides.

:func:`load_options` reads a YAML file, applies ``--force_yml`` overrides and ``--debug``, and
validates everything at once: the top-level keys declared here, the ``train`` and ``val`` sections
declared by the model class that ``model_type`` names, and each component (data sets, network,
losses, optimizers, schedulers, metrics, ``performance``) against its own declared options. Every
problem is reported in one :class:`OptionsError`. The result is read-only; components never
re-check it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from basicsr.utils.dist_util import DEFAULT_TIMEOUT_S
from basicsr.utils.errors import InvalidInputError, MissingInputError
from basicsr.utils.option_schema import (
    Component,
    FrozenDict,
    Key,
    MapOf,
    Problem,
    Section,
    format_problems,
    freeze,
    thaw,
    validate,
)
from basicsr.utils.performance import PERFORMANCE_SCHEMA
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY, RegistryError, closest_match


class OptionsError(InvalidInputError):
    """An option file (or an override) that cannot be used; the message lists every problem."""


# ----------------------------------------------------------------------------------------------
# YAML loading
# ----------------------------------------------------------------------------------------------
class _OptionLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicated keys and reads ``1e-4`` as a float (YAML 1.1 reads it
    as a string unless it has a dot)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f'duplicated key {key!r} (first at line {seen[key].start_mark.line + 1})',
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_OptionLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_OptionLoader.add_implicit_resolver('tag:yaml.org,2002:float', _FLOAT_PATTERN, list('-+0123456789.'))


def load_yaml(path: str | os.PathLike) -> Any:
    """Load a YAML file safely (no Python objects, no duplicated keys).

    Raises:
        MissingInputError: the file does not exist.
        OptionsError: the file is not valid YAML (the message has the line and column).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"Option file '{path}' does not exist (current folder: {Path.cwd()}).")
    try:
        with open(path, encoding='utf-8') as handle:
            return yaml.load(handle, Loader=_OptionLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise OptionsError(f"Option file '{path}' is not valid YAML:\n{error}") from None


def parse_yaml_value(text: str) -> Any:
    """A command-line value parsed as a YAML literal (``5``, ``2e-4``, ``true``, ``~``, ``[1, 2]``)."""
    try:
        return yaml.load(text, Loader=_OptionLoader)  # noqa: S506
    except yaml.YAMLError:
        return text


# ----------------------------------------------------------------------------------------------
# The top-level schema
# ----------------------------------------------------------------------------------------------
def _positive(value: Any) -> str | None:
    return None if value > 0 else f'must be > 0, got {value}'


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else f'must be >= 0, got {value}'


def _num_gpu(value: Any) -> str | None:
    if value == 'auto' or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    return f"must be 'auto' or an integer >= 0 (0 = CPU), got {value!r}"


def _auto_or_bool(value: Any) -> str | None:
    if isinstance(value, bool) or value == 'auto':
        return None
    return f'must be auto, true or false, got {value!r}'


def _registered(registry):
    def check(value: Any) -> str | None:
        if value in registry:
            return None
        hint = closest_match(str(value), registry.keys())
        text = f"no {registry.name} named '{value}' is registered (known: {', '.join(registry.keys())})"
        return text + (f"; did you mean '{hint}'?" if hint else '')

    return check


DATASET_COMMON_KEYS = {
    'name': Key(str, required=True, doc='a name for logs and result folders'),
    'phase': Key(str, choices=('train', 'val', 'test'), doc='derived from the key under datasets:'),
    'use_shuffle': Key(bool, default=True, doc='shuffle the training set'),
    'num_worker_per_gpu': Key(int, default=0, check=_non_negative, doc='data loader workers per process'),
    'batch_size_per_gpu': Key(int, default=1, check=_positive, doc='batch size per process'),
    'dataset_enlarge_ratio': Key(int, default=1, check=_positive, doc='repeat the training set per epoch'),
    'prefetch_mode': Key(
        (str, None),
        default='auto',
        choices=('auto', 'cpu', 'cuda'),
        doc='training: auto (cuda on a GPU, else null), cpu (a thread loads ahead), cuda (copies '
        'on a side stream) or null',
    ),
    'num_prefetch_queue': Key(int, default=2, check=_positive, doc='batches the cpu prefetch thread loads ahead'),
    'pin_memory': Key((bool, str), default='auto', check=_auto_or_bool, doc='auto: on when training on CUDA'),
    'persistent_workers': Key(
        (bool, str), default='auto', check=_auto_or_bool, doc='keep the loader workers between epochs (auto: on)'
    ),
    'eval_rows': Key(
        (int, None),
        default=None,
        check=_positive,
        doc='evaluate only the first N rows of each frame (REBlur: 256); null = all rows, or 256 when '
        'the top-level dataset_name is REBlur',
    ),
}
"""Keys every data set entry takes besides its own: how the engine loads and evaluates it."""

REBLUR_EVAL_ROWS = 256
"""The published REBlur protocol evaluates the first 256 of the 260 rows."""

UNCHECKED_SECTION = Key((dict, None), default=None)
"""Stands for ``train``/``val`` while ``model_type`` names no model (that problem is reported instead)."""


def top_level_schema(model_cls: type | None) -> Section:
    """The schema of a whole option file; ``train`` and ``val`` are the sections ``model_cls`` declares."""
    model_sections = getattr(model_cls, 'option_schema', {})
    return Section(
        {
            'name': Key(str, required=True, doc='experiment name; folders experiments/<name>, results/<name>'),
            'model_type': Key(
                str, required=True, check=_registered(MODEL_REGISTRY), doc='e.g. ImageEventRestorationModel'
            ),
            'scale': Key(int, default=1, doc='kept for BasicSR compatibility; deblurring is scale 1'),
            'num_gpu': Key((int, str), default='auto', check=_num_gpu, doc="'auto', 0 for CPU, or the GPU count"),
            'manual_seed': Key((int, None), default=None, doc='random seed (each process adds its rank)'),
            'dataset_name': Key(
                (str, None),
                default=None,
                doc='GoPro, REBlur, ...; REBlur: evaluation sets without eval_rows use 256 rows',
            ),
            'datasets': MapOf(
                Component(DATASET_REGISTRY, common=DATASET_COMMON_KEYS),
                doc='train / val / test (and val_2, test_2, ...) data sets',
            ),
            'network_g': Component(ARCH_REGISTRY, required=True, doc='the network, e.g. {type: EFNet, wf: 64}'),
            'path': Section(
                {
                    'pretrain_network_g': Key((str, None), default=None, doc='checkpoint to start from / to test'),
                    'strict_load_g': Key(bool, default=True),
                    'param_key_g': Key(
                        (str, None),
                        default=None,
                        doc='checkpoint entry to load: params (default) or params_ema; a bare state '
                        'dict is read as it is',
                    ),
                    'param_key': Key((str, None), default=None, doc="the EFNet reference's name of param_key_g"),
                    'resume_state': Key((str, None), default=None, doc='a training_states/<iter>.state file'),
                    'training_states': Key((str, None), default=None, doc='accepted for compatibility; derived'),
                    'root': Key((str, None), default=None, doc='folder holding experiments/, results/, tb_logger/'),
                },
                rules=_path_rules,
            ),
            'train': model_sections.get('train', UNCHECKED_SECTION),
            'val': model_sections.get('val', UNCHECKED_SECTION),
            'logger': Section(
                {
                    'print_freq': Key(int, default=100, check=_positive),
                    'save_checkpoint_freq': Key(int, default=5000, check=_positive),
                    'keep_checkpoints': Key(
                        (int, None),
                        default=None,
                        check=_positive,
                        doc='keep the newest N net_g_<iter>.pth and training states; null = '
                        'all (net_g_latest.pth and the state resumed from are kept)',
                    ),
                    'use_tb_logger': Key(bool, default=True),
                    'wandb': Section(
                        {'project': Key((str, None), default=None), 'resume_id': Key((str, None), default=None)}
                    ),
                }
            ),
            'dist_params': Section(
                {
                    'backend': Key(
                        str, default='nccl', choices=('nccl', 'gloo'), doc='used with CUDA; CPU runs use gloo'
                    ),
                    'port': Key(int, default=29500),
                    'timeout': Key(
                        float,
                        default=DEFAULT_TIMEOUT_S,
                        check=_positive,
                        doc='seconds a collective may wait for the other ranks; a rank silent for half '
                        'of it ends the job',
                    ),
                }
            ),
            'performance': PERFORMANCE_SCHEMA,
        },
        required=True,
    )


def _path_rules(path: dict) -> list[tuple[str, str]]:
    if path['param_key_g'] and path['param_key'] and path['param_key_g'] != path['param_key']:
        return [
            ('param_key', f'is {path["param_key"]!r} but path.param_key_g is {path["param_key_g"]!r}; set one of them')
        ]
    return []


def _model_class(model_type: Any) -> type | None:
    if not isinstance(model_type, str):
        return None
    try:
        return MODEL_REGISTRY.get(model_type)
    except RegistryError:
        return None


# ----------------------------------------------------------------------------------------------
# Rules that depend on the phase (training or testing)
# ----------------------------------------------------------------------------------------------
def phase_of(dataset_key: str) -> str | None:
    """train, val or test for a key under ``datasets:`` (``val_2`` -> val); None for any other key."""
    for phase in ('train', 'val', 'test'):
        if dataset_key == phase or dataset_key.startswith(phase + '_'):
            return phase
    return None


def _run_problems(opt: dict, is_train: bool, model_cls: type | None) -> list[Problem]:
    problems: list[Problem] = []
    datasets = opt.get('datasets') or {}
    for key in datasets:
        if phase_of(key) is None:
            problems.append(
                Problem(
                    f'datasets.{key}',
                    "data set keys must be train, val or test, or start with 'val_' / 'test_' (e.g. val_2)",
                )
            )
    if is_train:
        if 'train' not in datasets:
            problems.append(Problem('datasets.train', 'training needs a datasets.train section'))
        train = opt.get('train') or {}
        for key in getattr(model_cls, 'training_keys', ()):
            if train.get(key) is None:
                problems.append(Problem(f'train.{key}', 'required key is missing (needed for training)'))
    elif not any(phase_of(k) in ('val', 'test') for k in datasets):
        problems.append(Problem('datasets', 'testing needs at least one datasets.test (or val) section'))
    return problems


def _add_derived(opt: dict) -> None:
    """Each data set's ``phase`` from its key, and ``eval_rows`` from the top-level ``dataset_name``."""
    for key, dataset_opt in (opt.get('datasets') or {}).items():
        phase = phase_of(key)
        if isinstance(dataset_opt, dict) and phase is not None:
            dataset_opt['phase'] = dataset_opt.get('phase') or phase
            if dataset_opt.get('eval_rows') is None and opt.get('dataset_name') == 'REBlur':
                dataset_opt['eval_rows'] = REBLUR_EVAL_ROWS


def _format_problems(source: str, problems: list[Problem]) -> str:
    return format_problems(f"Invalid option file '{source}'", problems)


def apply_overrides(tree: Any, overrides: list[str], source: str) -> dict:
    """A copy of ``tree`` with ``a:b:c=value`` overrides applied (values parsed as YAML literals).

    Raises:
        OptionsError: an override without ``=`` or with an empty key path.
    """
    tree = thaw(tree)
    problems = []
    for item in overrides:
        path, sep, text = item.partition('=')
        keys = path.split(':')
        if not sep or not all(keys):
            problems.append(Problem(f'--force_yml {item}', "expected 'a:b:c=value' (keys joined by ':', then '=')"))
            continue
        node = tree
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = parse_yaml_value(text)
    if problems:
        raise OptionsError(_format_problems(source, problems))
    return tree


DEBUG_OVERRIDES = (
    'val:val_freq=8',
    'logger:print_freq=1',
    'logger:save_checkpoint_freq=8',
    'logger:use_tb_logger=false',
)


def load_options(
    path: str | os.PathLike, is_train: bool = True, overrides: list[str] | tuple[str, ...] = (), debug: bool = False
) -> FrozenDict:
    """Load, override and validate an option file.

    Args:
        path: the YAML file.
        is_train: validate for training (needs datasets.train, train.*) or for testing.
        overrides: ``a:b:c=value`` strings (``--force_yml``).
        debug: shorten the frequencies (validate every 8 iterations, log every one) and prefix the
            name with ``debug_`` as BasicSR does; a name containing 'debug' does the same.

    Returns:
        The validated, read-only options with defaults filled in; every data set has ``phase``, and
        ``eval_rows`` is 256 for data sets without one when the top-level ``dataset_name`` is REBlur.

    Raises:
        MissingInputError, OptionsError: the message names the file, each key path and the fix.
    """
    source = str(path)
    tree = load_yaml(path)
    if not isinstance(tree, dict):
        raise OptionsError(
            f"Option file '{source}' must hold a mapping of keys at the top level, got {type(tree).__name__}."
        )
    tree = apply_overrides(tree, list(overrides), source)
    name = tree.get('name')
    if debug or (isinstance(name, str) and 'debug' in name):
        debug_overrides = list(DEBUG_OVERRIDES)
        if debug and isinstance(name, str) and not name.startswith('debug'):
            debug_overrides.append(f'name=debug_{name}')
        tree = apply_overrides(tree, debug_overrides, source)
    model_cls = _model_class(tree.get('model_type'))
    opt, problems = validate(tree, top_level_schema(model_cls))
    problems += _run_problems(opt, is_train, model_cls)
    if problems:
        raise OptionsError(_format_problems(source, problems))
    _add_derived(opt)
    return freeze(opt)


def dump_options(opt: FrozenDict) -> str:
    """The resolved options as YAML text (for the log)."""
    return yaml.safe_dump(opt.to_dict(), sort_keys=False, default_flow_style=None)
