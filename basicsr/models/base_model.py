"""What every model shares: device placement, DDP, EMA, learning rates, checkpoints, resume state."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from basicsr.models.lr_scheduler import warmup_lr
from basicsr.utils.checkpoint import load_network, save_network, unwrap_network
from basicsr.utils.errors import InvalidInputError, UserError
from basicsr.utils.file_io import save_torch_atomic
from basicsr.utils.option_schema import FrozenDict
from basicsr.utils.performance import make_grad_scaler, prepare_network, resolve_performance
from basicsr.utils.registry import OPTIMIZER_REGISTRY, SCHEDULER_REGISTRY, build

if TYPE_CHECKING:
    from basicsr.engine.context import RunContext

logger = logging.getLogger(__name__)


class NonFiniteWeightsError(UserError):
    """The weights hold NaN or inf: they are never written to a checkpoint."""


class BaseModel:
    """Owns the networks, optimizers, schedulers, grad scaler and EMA of one run.

    Built by the engine with ``build(MODEL_REGISTRY, opt, type_key='model_type', ctx=ctx)``; a model class
    declares the ``train`` and ``val`` sections of the option file in ``option_schema``.

    Args:
        opt: validated, read-only options.
        ctx: run-time context (device, rank, paths).
    """

    takes_options = True
    """:func:`~basicsr.utils.registry.build` passes the whole option tree (and the run context)."""

    def __init__(self, opt: FrozenDict, ctx: RunContext):
        self.opt = opt
        self.ctx = ctx
        self.device = ctx.device
        self.is_train = ctx.is_train
        self.perf = resolve_performance(opt['performance'], self.device)  # once per run, applied everywhere
        logger.info(self.perf.describe())
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[Any] = []
        self.scaler = make_grad_scaler(self.perf)
        self.net_g_ema: torch.nn.Module | None = None

    # ------------------------------------------------------------------ networks
    def model_to_device(self, net: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """Move to the device, apply the performance settings, then wrap in DDP when distributed."""
        net = prepare_network(net, self.perf)
        if self.ctx.dist:
            device_ids = [self.device.index] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
        return net

    def init_ema(self, net: torch.nn.Module, decay: float) -> None:
        """Keep an exponential moving average of ``net``'s weights (``train.ema_decay``)."""
        self.ema_decay = decay
        self.net_g_ema = copy.deepcopy(unwrap_network(net)).eval().requires_grad_(False)

    @torch.no_grad()
    def update_ema(self, net: torch.nn.Module) -> None:
        """ema <- decay * ema + (1 - decay) * weights; buffers are copied."""
        ema_params, ema_buffers = dict(self.net_g_ema.named_parameters()), dict(self.net_g_ema.named_buffers())
        for name, param in unwrap_network(net).named_parameters():
            ema_params[name].lerp_(param.detach(), 1.0 - self.ema_decay)
        for name, buffer in unwrap_network(net).named_buffers():
            ema_buffers[name].copy_(buffer)

    def load_pretrained(self, net: torch.nn.Module) -> None:
        """Load ``path.pretrain_network_g`` into ``net`` when it is set."""
        path_opt = self.opt['path']
        if path_opt['pretrain_network_g'] is not None:
            load_network(
                unwrap_network(net),
                path_opt['pretrain_network_g'],
                strict=path_opt['strict_load_g'],
                param_key=path_opt['param_key_g'] or path_opt['param_key'] or 'params',
            )

    # ------------------------------------------------------------------ optimisation
    def setup_optimizer(self, net: torch.nn.Module) -> None:
        train_opt = self.opt['train']
        params = [p for p in net.parameters() if p.requires_grad]
        self.optimizers = [build(OPTIMIZER_REGISTRY, train_opt['optim_g'], params=params)]
        if train_opt['scheduler'] is not None:
            self.schedulers = [
                build(SCHEDULER_REGISTRY, train_opt['scheduler'], optimizer=optimizer) for optimizer in self.optimizers
            ]

    def get_current_learning_rate(self) -> list[float]:
        """Learning rate of each parameter group of the first optimizer."""
        return [group['lr'] for group in self.optimizers[0].param_groups]

    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        """Step the schedulers (from the 2nd iteration on, as BasicSR), or set the warm-up lr.

        With ``warmup_iter > 0`` the learning rate rises linearly during the first ``warmup_iter``
        iterations from the initial lr of each group.
        """
        if current_iter > 1:
            for scheduler in self.schedulers:
                scheduler.step()
        if current_iter < warmup_iter:
            for optimizer in self.optimizers:
                groups = optimizer.param_groups
                initial = [group.setdefault('initial_lr', group['lr']) for group in groups]
                for group, lr in zip(groups, warmup_lr(initial, current_iter, warmup_iter)):
                    group['lr'] = lr

    # ------------------------------------------------------------------ checkpoints
    def save_network(self, net: torch.nn.Module, current_iter: int | str, extra: dict | None = None) -> Path:
        """Write ``models/net_g_<iter>.pth`` (``{'params': ...}`` plus ``params_ema`` with EMA)."""
        path = self.ctx.paths.models / f'net_g_{current_iter}.pth'
        self.check_finite_weights(current_iter)
        extra = dict(extra or {})
        if self.net_g_ema is not None:
            extra['params_ema'] = {k: v.detach().cpu() for k, v in self.net_g_ema.state_dict().items()}
        save_network(unwrap_network(net), path, param_key='params', extra=extra)
        return path

    def check_finite_weights(self, current_iter: int | str) -> None:
        """Refuse to write a checkpoint holding NaN or inf (raises NonFiniteWeightsError naming the tensor)."""
        nets = {'params': unwrap_network(self.net_g), 'params_ema': self.net_g_ema}
        for key, net in nets.items():
            if net is None:
                continue
            for name, tensor in net.state_dict().items():
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise NonFiniteWeightsError(
                        f"Not saving net_g_{current_iter}.pth: {key} '{name}' holds NaN or inf, so training has "
                        f'diverged; the previous checkpoints in {self.ctx.paths.models} are intact. Resume from the '
                        'last good one with a lower learning rate (train.optim_g.lr), and check the data.'
                    )

    def save_training_state(self, epoch: int, current_iter: int, extra_state: dict | None = None) -> Path:
        """Write ``training_states/<iter>.state`` atomically: optimizers, schedulers, scaler, epoch, iteration, and
        ``extra_state`` (the engine's part: seed, sampler position, random-number states, run signature).

        Raises:
            WriteError: the file cannot be written (names the path and the cause; a previous file is intact).
        """
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'scaler': self.scaler.state_dict(),
            **(extra_state or {}),
        }
        path = self.ctx.paths.training_states / f'{current_iter}.state'
        save_torch_atomic(state, path)
        return path

    def resume_training(self, state: dict, scheduler_changed: bool = False) -> None:
        """Restore optimizers, schedulers and scaler from a training state dict, and the network
        (and EMA) weights from ``models/net_g_<iter>.pth`` of the same iteration.

        Args:
            state: the training state (the engine has checked that the network and optimizer types match).
            scheduler_changed: ``train.scheduler`` differs from the state's: keep the new scheduler and only
                move it to the state's step, so it continues as if it had been used from the start (every
                scheduler here computes its rates in closed form from its step count).
        """
        if len(state['optimizers']) != len(self.optimizers) or len(state['schedulers']) != len(self.schedulers):
            raise InvalidInputError(
                f'The training state has {len(state["optimizers"])} optimizer(s) and {len(state["schedulers"])} '
                f'scheduler(s) but these options make {len(self.optimizers)} and {len(self.schedulers)}; '
                'resume with the option file the state was written with.'
            )
        for optimizer, saved in zip(self.optimizers, state['optimizers']):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(self.schedulers, state['schedulers']):
            if scheduler_changed:
                scheduler.last_epoch, scheduler._step_count = saved['last_epoch'], saved['_step_count']
            else:
                scheduler.load_state_dict(saved)
        if state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
        checkpoint = self.ctx.paths.models / f'net_g_{state["iter"]}.pth'
        load_network(unwrap_network(self.net_g), checkpoint, strict=True)
        if self.net_g_ema is not None:
            load_network(self.net_g_ema, checkpoint, strict=True, param_key='params_ema')
