"""The command line of ``train.py`` and ``test.py``: arguments -> validated options and run context."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from basicsr.engine.context import ExperimentPaths, RunContext, resolve_device
from basicsr.engine.options import load_options
from basicsr.utils.dist_util import check_launcher, get_dist_info, init_dist
from basicsr.utils.option_schema import FrozenDict


def build_arg_parser(is_train: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=('Train' if is_train else 'Test') + ' a model from a YAML option file.',
    )
    parser.add_argument('-opt', '--opt', required=True, help='path to the YAML option file')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm'],
        default='none',
        help='none: one process; pytorch: torch.distributed.launch / torchrun; slurm: srun',
    )
    parser.add_argument('--auto_resume', action='store_true', help='resume from the newest training state')
    parser.add_argument('--debug', action='store_true', help='short frequencies, debug_ name prefix')
    parser.add_argument(
        '--local_rank',
        '--local-rank',
        type=int,
        default=0,
        dest='local_rank',
        help='set by torch.distributed.launch; LOCAL_RANK in the environment wins',
    )
    parser.add_argument(
        '--force_yml',
        nargs='+',
        default=[],
        metavar='a:b:c=value',
        help='override options; values are YAML literals, e.g. train:total_iter=100',
    )
    return parser


def parse_options(is_train: bool, argv: list[str] | None = None) -> tuple[FrozenDict, RunContext]:
    """Command line -> validated options and run context; initialises torch.distributed.

    Raises:
        OptionsError, MissingInputError: the option file is invalid or missing, or ``WORLD_SIZE > 1`` without
            ``--launcher pytorch`` (the entry point's
            :func:`~basicsr.engine.entry_point.run_main` prints the message and exits with status 2).
    """
    args = build_arg_parser(is_train).parse_args(argv)
    opt = load_options(args.opt, is_train=is_train, overrides=args.force_yml, debug=args.debug)
    check_launcher(args.launcher, os.environ)
    dist = args.launcher != 'none'
    local_rank = int(os.environ.get('LOCAL_RANK', args.local_rank))
    backend = None
    if dist:
        dist_opt = opt['dist_params']
        backend = init_dist(
            args.launcher, backend=dist_opt['backend'], port=dist_opt['port'], timeout_s=dist_opt['timeout']
        )
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
        backend=backend,
    )
    return opt, ctx
