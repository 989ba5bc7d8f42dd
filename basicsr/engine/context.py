"""Run-time state beside the options: the run context, the experiment folders and the device."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from basicsr.utils.option_schema import FrozenDict

logger = logging.getLogger(__name__)


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
    device: torch.device
    paths: ExperimentPaths
    overrides: tuple[str, ...] = field(default=())
    backend: str | None = None
    """The torch.distributed backend in use (``'nccl'`` or ``'gloo'``), None in a single process."""

    @property
    def dist(self) -> bool:
        return self.launcher != 'none'

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(opt: FrozenDict, local_rank: int, dist: bool) -> torch.device:
    """The torch device of this process: CUDA ``cuda:<local_rank>`` when available and wanted."""
    num_gpu = opt['num_gpu']
    if num_gpu == 0:
        return torch.device('cpu')
    if not torch.cuda.is_available():
        if num_gpu != 'auto':
            logger.warning(
                'num_gpu is %s but no CUDA device is available: running on the CPU '
                '(set num_gpu: 0 or auto to silence this).',
                num_gpu,
            )
        return torch.device('cpu')
    return torch.device('cuda', local_rank if dist else 0)
