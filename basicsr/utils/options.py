"""Option files: safe YAML loading, the schema of every key, validation, CLI and derived paths.

``parse_options(is_train)`` is what ``train.py``/``test.py`` call: it reads the command line,
loads and validates the YAML file (all problems reported at once, no traceback), applies
``--force_yml`` overrides and ``--debug``, and returns ``(opt, ctx)``: ``opt`` is the validated,
read-only option tree with defaults filled in; ``ctx`` (:class:`RunContext`) holds run-time state
that is not an option: rank, world size, device, the experiment paths.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from basicsr.utils.option_schema import Component, FrozenDict, Key, MapOf, Problem, Section, freeze, thaw, validate
from basicsr.utils.registry import (
    ARCH_REGISTRY,
    DATASET_REGISTRY,
    LOSS_REGISTRY,
    METRIC_REGISTRY,
    MODEL_REGISTRY,
    OPTIMIZER_REGISTRY,
    SCHEDULER_REGISTRY,
    closest_match,
)


class OptionsError(ValueError):
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
                    None, None, f'duplicated key {key!r} (first at line {seen[key].start_mark.line + 1})',
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_FLOAT_PATTERN = re.compile(
    r'''^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$''',
    re.X,
)
_OptionLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_OptionLoader.add_implicit_resolver('tag:yaml.org,2002:float', _FLOAT_PATTERN, list('-+0123456789.'))


def load_yaml(path: str | os.PathLike) -> Any:
    """Load a YAML file safely (no Python objects, no duplicated keys).

    Raises:
        FileNotFoundError: the file does not exist.
        OptionsError: the file is not valid YAML (the message has the line and column).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Option file '{path}' does not exist (current folder: {Path.cwd()}).")
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
# The schema
# ----------------------------------------------------------------------------------------------
def _positive(value: Any) -> str | None:
    return None if value > 0 else f'must be > 0, got {value}'


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else f'must be >= 0, got {value}'


def _num_gpu(value: Any) -> str | None:
    if value == 'auto' or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    return f"must be 'auto' or an integer >= 0 (0 = CPU), got {value!r}"


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
    'prefetch_mode': Key((str, None), default=None, choices=('cpu', 'cuda'), doc='null, cpu or cuda'),
    'num_prefetch_queue': Key(int, default=1, check=_positive),
    'pin_memory': Key(bool, default=False),
    'persistent_workers': Key(bool, default=False),
}

OPTION_SCHEMA = Section(
    {
        'name': Key(str, required=True, doc='experiment name; folders experiments/<name>, results/<name>'),
        'model_type': Key(str, required=True, check=_registered(MODEL_REGISTRY), doc='e.g. ImageEventRestorationModel'),
        'scale': Key(int, default=1, doc='kept for BasicSR compatibility; deblurring is scale 1'),
        'num_gpu': Key((int, str), default='auto', check=_num_gpu, doc="'auto', 0 for CPU, or the GPU count"),
        'manual_seed': Key((int, None), default=None, doc='random seed (each process adds its rank)'),
        'dataset_name': Key((str, None), default=None, doc='GoPro, REBlur, ...; REBlur evaluates the first 256 rows'),
        'datasets': MapOf(
            Component(DATASET_REGISTRY, common=DATASET_COMMON_KEYS, skip=('opt',)),
            doc='train / val / test (and val_2, test_2, ...) data sets',
        ),
        'network_g': Component(ARCH_REGISTRY, required=True, doc='the network, e.g. {type: EFNet, wf: 64}'),
        'path': Section(
            {
                'pretrain_network_g': Key((str, None), default=None, doc='checkpoint to start from / to test'),
                'strict_load_g': Key(bool, default=True),
                'param_key_g': Key((str, None), default=None,
                                   doc='checkpoint entry to load: params (default) or params_ema; a bare state '
                                       'dict is read as it is'),
                'param_key': Key((str, None), default=None, doc="the EFNet reference's name of param_key_g"),
                'resume_state': Key((str, None), default=None, doc='a training_states/<iter>.state file'),
                'training_states': Key((str, None), default=None, doc='accepted for compatibility; derived'),
                'root': Key((str, None), default=None, doc='folder holding experiments/, results/, tb_logger/'),
            }
        ),
        'train': Section(
            {
                'optim_g': Component(OPTIMIZER_REGISTRY, skip=('params',), doc='e.g. {type: AdamW, lr: 2e-4}'),
                'scheduler': Component(SCHEDULER_REGISTRY, skip=('optimizer', 'last_epoch')),
                'total_iter': Key(int, check=_positive, doc='number of training iterations'),
                'warmup_iter': Key(int, default=-1, doc='linear warm-up iterations; -1 = none'),
                'pixel_opt': Component(LOSS_REGISTRY, doc='e.g. {type: PSNRLoss, loss_weight: 0.5}'),
                'perceptual_opt': Key((dict, None), default=None,
                                      check=lambda v: 'perceptual losses are not supported; set it to ~',
                                      doc='accepted for compatibility; must be null'),
                'stage_weights': Key((list, None), default=None,
                                     doc='per-output loss weights; null = equal weights (the reference)'),
                'use_grad_clip': Key(bool, default=True, doc='clip the gradient norm (the reference does)'),
                'grad_clip_norm': Key(float, default=0.01, check=_positive, doc='max gradient norm'),
                'ema_decay': Key(float, default=0.0, check=lambda v: None if 0 <= v < 1 else 'must be in [0, 1)',
                                 doc='EMA of the weights; 0 = off'),
            }
        ),
        'val': Section(
            {
                'val_freq': Key(int, default=5000, check=_positive, doc='validate every N iterations'),
                'save_img': Key(bool, default=False),
                'grids': Key((bool, None), default=None, doc='tiled inference on crop_size tiles'),
                'crop_size': Key((int, None), default=None, doc='tile size for grids'),
                'grid_overlap': Key(int, default=32, check=_non_negative, doc='tile overlap in pixels'),
                'max_minibatch': Key(int, default=8, check=_positive, doc='tiles per forward pass'),
                'rgb2bgr': Key(bool, default=True, doc='swap channels when writing images'),
                'use_image': Key(bool, default=True, doc='metrics on uint8-rounded images (the reference)'),
                'pbar': Key(bool, default=True, doc='progress bar during validation'),
                'metrics': MapOf(Component(METRIC_REGISTRY, skip=('img', 'img2', 'input_order')), default=None),
            }
        ),
        'logger': Section(
            {
                'print_freq': Key(int, default=100, check=_positive),
                'save_checkpoint_freq': Key(int, default=5000, check=_positive),
                'use_tb_logger': Key(bool, default=True),
                'wandb': Section({'project': Key((str, None), default=None),
                                  'resume_id': Key((str, None), default=None)}),
            }
        ),
        'dist_params': Section(
            {
                'backend': Key(str, default='nccl', choices=('nccl', 'gloo'), doc='used with CUDA; CPU runs use gloo'),
                'port': Key(int, default=29500),
            }
        ),
        'performance': Section(
            {
                'amp': Key((str, None), default=None, choices=('fp16', 'bf16'), doc='mixed precision (CUDA)'),
                'channels_last': Key(bool, default=False),
                'compile': Key(bool, default=False, doc='torch.compile the network'),
                'tf32': Key(bool, default=True, doc='TF32 matmul/conv on Ampere+ GPUs'),
                'cudnn_benchmark': Key(bool, default=True),
            },
            doc='speed switches, applied in one place (basicsr/utils/performance.py)',
        ),
    },
    required=True,
)


# ----------------------------------------------------------------------------------------------
# Validation beyond single keys
# ----------------------------------------------------------------------------------------------
def _phase_of(dataset_key: str) -> str | None:
    for phase in ('train', 'val', 'test'):
        if dataset_key == phase or dataset_key.startswith(phase + '_'):
            return phase
    return None


def _cross_field_problems(opt: dict, is_train: bool) -> list[Problem]:
    problems: list[Problem] = []
    datasets = opt.get('datasets') or {}
    for key, dataset_opt in datasets.items():
        if _phase_of(key) is None:
            problems.append(Problem(f'datasets.{key}', 'data set keys must be train, val or test, or start with '
                                    "'val_' / 'test_' (e.g. val_2)"))
        if isinstance(dataset_opt, dict) and dataset_opt.get('use_mask') and dataset_opt.get('return_mask') is False:
            problems.append(Problem(f'datasets.{key}.use_mask', 'use_mask: true needs return_mask: true'))
    ev_chn = (opt.get('network_g') or {}).get('ev_chn', 6)
    for key, dataset_opt in datasets.items():
        if isinstance(dataset_opt, dict) and isinstance(dataset_opt.get('num_bins'), int):
            channels = dataset_opt['num_bins'] + (1 if dataset_opt.get('keep_middle') else 0)
            if isinstance(ev_chn, int) and channels != ev_chn:
                problems.append(Problem(f'datasets.{key}.num_bins', f'gives {channels} event channels but '
                                        f'network_g.ev_chn is {ev_chn}; make them equal'))
    if is_train:
        if 'train' not in datasets:
            problems.append(Problem('datasets.train', 'training needs a datasets.train section'))
        train = opt.get('train') or {}
        for key in ('optim_g', 'total_iter', 'pixel_opt'):
            if train.get(key) is None:
                problems.append(Problem(f'train.{key}', 'required key is missing (needed for training)'))
    elif not any(_phase_of(k) in ('val', 'test') for k in datasets):
        problems.append(Problem('datasets', 'testing needs at least one datasets.test (or val) section'))
    path = opt.get('path') or {}
    if path.get('param_key_g') and path.get('param_key') and path['param_key_g'] != path['param_key']:
        problems.append(Problem('path.param_key', f"is {path['param_key']!r} but path.param_key_g is "
                                f"{path['param_key_g']!r}; set one of them"))
    val = opt.get('val') or {}
    if val.get('grids') and not val.get('crop_size'):
        problems.append(Problem('val.crop_size', 'val.grids: true needs the tile size val.crop_size'))
    return problems


def _add_phases(opt: dict) -> None:
    for key, dataset_opt in (opt.get('datasets') or {}).items():
        phase = _phase_of(key)
        if isinstance(dataset_opt, dict) and phase is not None:
            given = dataset_opt.get('phase')
            dataset_opt['phase'] = given or phase


def _format_problems(source: str, problems: list[Problem]) -> str:
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    return f"Invalid option file '{source}' ({count}):\n" + '\n'.join(f'  - {p}' for p in problems)


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


DEBUG_OVERRIDES = ('val:val_freq=8', 'logger:print_freq=1', 'logger:save_checkpoint_freq=8',
                   'logger:use_tb_logger=false')


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
        The validated, read-only options with defaults filled in; every data set has ``phase``.

    Raises:
        FileNotFoundError, OptionsError: the message names the file, each key path and the fix.
    """
    source = str(path)
    tree = load_yaml(path)
    if not isinstance(tree, dict):
        raise OptionsError(f"Option file '{source}' must hold a mapping of keys at the top level, got "
                           f'{type(tree).__name__}.')
    tree = apply_overrides(tree, list(overrides), source)
    name = tree.get('name')
    if debug or (isinstance(name, str) and 'debug' in name):
        debug_overrides = list(DEBUG_OVERRIDES)
        if debug and isinstance(name, str) and not name.startswith('debug'):
            debug_overrides.append(f'name=debug_{name}')
        tree = apply_overrides(tree, debug_overrides, source)
    opt, problems = validate(tree, OPTION_SCHEMA)
    problems += _cross_field_problems(opt, is_train)
    if problems:
        raise OptionsError(_format_problems(source, problems))
    _add_phases(opt)
    return freeze(opt)


# ----------------------------------------------------------------------------------------------
# Run-time context
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExperimentPaths:
    """Folders of one run, derived from ``name`` and ``path.root`` as in BasicSR.

    Training: ``experiments/<name>/{models,training_states,visualization}`` and
    ``tb_logger/<name>``; testing: ``results/<name>/visualization``. ``log`` is the folder of the
    log file.
    """

    root: Path
    experiments_root: Path
    models: Path
    training_states: Path
    visualization: Path
    log: Path
    tb_logger: Path
    results_root: Path

    @classmethod
    def derive(cls, opt: FrozenDict, is_train: bool) -> ExperimentPaths:
        root = Path(opt['path']['root'] or os.getcwd()).resolve()
        experiments_root = root / 'experiments' / opt['name']
        results_root = root / 'results' / opt['name']
        run_root = experiments_root if is_train else results_root
        return cls(
            root=root,
            experiments_root=experiments_root,
            models=experiments_root / 'models',
            training_states=experiments_root / 'training_states',
            visualization=run_root / 'visualization',
            log=run_root,
            tb_logger=root / 'tb_logger' / opt['name'],
            results_root=results_root,
        )


@dataclass(frozen=True)
class RunContext:
    """Run-time state beside the options: never written into them."""

    opt_path: Path
    is_train: bool
    launcher: str
    rank: int
    world_size: int
    local_rank: int
    auto_resume: bool
    debug: bool
    device: Any
    paths: ExperimentPaths
    overrides: tuple[str, ...] = field(default=())

    @property
    def dist(self) -> bool:
        return self.launcher != 'none'

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def build_arg_parser(is_train: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=('Train' if is_train else 'Test') + ' a model from a YAML option file.',
    )
    parser.add_argument('-opt', '--opt', required=True, help='path to the YAML option file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='none: one process; pytorch: torch.distributed.launch / torchrun; slurm: srun')
    parser.add_argument('--auto_resume', action='store_true', help='resume from the newest training state')
    parser.add_argument('--debug', action='store_true', help='short frequencies, debug_ name prefix')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, dest='local_rank',
                        help='set by torch.distributed.launch; LOCAL_RANK in the environment wins')
    parser.add_argument('--force_yml', nargs='+', default=[], metavar='a:b:c=value',
                        help='override options; values are YAML literals, e.g. train:total_iter=100')
    return parser


def resolve_device(opt: FrozenDict, local_rank: int, dist: bool) -> Any:
    """The torch device of this process: CUDA ``cuda:<local_rank>`` when available and wanted."""
    import torch

    from basicsr.utils.logger import get_root_logger

    num_gpu = opt['num_gpu']
    if num_gpu == 0:
        return torch.device('cpu')
    if not torch.cuda.is_available():
        if num_gpu != 'auto':
            get_root_logger().warning('num_gpu is %s but no CUDA device is available: running on the CPU '
                                      '(set num_gpu: 0 or auto to silence this).', num_gpu)
        return torch.device('cpu')
    return torch.device('cuda', local_rank if dist else 0)


def parse_options(is_train: bool, argv: list[str] | None = None) -> tuple[FrozenDict, RunContext]:
    """Command line -> validated options and run context; initialises torch.distributed.

    Invalid options end the program with exit status 2 and a message (no traceback).
    """
    from basicsr.utils.dist_util import get_dist_info, init_dist

    args = build_arg_parser(is_train).parse_args(argv)
    try:
        opt = load_options(args.opt, is_train=is_train, overrides=args.force_yml, debug=args.debug)
    except (OptionsError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        raise SystemExit(2) from None
    dist = args.launcher != 'none'
    local_rank = int(os.environ.get('LOCAL_RANK', args.local_rank))
    if dist:
        init_dist(args.launcher, backend=opt['dist_params']['backend'], port=opt['dist_params']['port'])
    rank, world_size = get_dist_info()
    ctx = RunContext(
        opt_path=Path(args.opt),
        is_train=is_train,
        launcher=args.launcher,
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        auto_resume=args.auto_resume,
        debug=args.debug,
        device=resolve_device(opt, local_rank, dist),
        paths=ExperimentPaths.derive(opt, is_train),
        overrides=tuple(args.force_yml),
    )
    return opt, ctx


def dump_options(opt: FrozenDict) -> str:
    """The resolved options as YAML text (for the log)."""
    return yaml.safe_dump(opt.to_dict(), sort_keys=False, default_flow_style=None)
