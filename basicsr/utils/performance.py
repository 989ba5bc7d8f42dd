"""The one place where speed switches are applied (option section ``performance``).

Mixed precision, channels_last, torch.compile, TF32 and cudnn.benchmark are applied here, after
the network is on its device and before DDP wraps it. Networks, losses and metrics never read
these options (losses and metrics compute in float32). A setting the hardware cannot honour stops
the run with a message naming the option.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from basicsr.utils.errors import InvalidInputError
from basicsr.utils.option_schema import FrozenDict, Key, Section

logger = logging.getLogger(__name__)

_AMP_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}

OPTION_SCHEMA = Section(
    {
        'amp': Key((str, None), default=None, choices=tuple(_AMP_DTYPES), doc='mixed precision (CUDA)'),
        'channels_last': Key(bool, default=False),
        'compile': Key(bool, default=False, doc='torch.compile the network'),
        'tf32': Key(bool, default=True, doc='TF32 matmul/conv on Ampere+ GPUs'),
        'cudnn_benchmark': Key(bool, default=True),
    },
    doc='speed switches, applied in one place (basicsr/utils/performance.py)',
)
"""The ``performance`` section of an option file."""


def check_performance_options(perf: FrozenDict, device: torch.device) -> None:
    """Raise InvalidInputError for settings this device cannot honour."""
    if perf['amp'] == 'fp16' and device.type != 'cuda':
        raise InvalidInputError('performance.amp: fp16 needs a CUDA device; use bf16 on the CPU or set '
                                'performance.amp: ~')


def apply_backend_flags(perf: FrozenDict, device: torch.device) -> None:
    """Global flags: TF32 and cudnn.benchmark (CUDA only; no effect on the CPU)."""
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = perf['tf32']
        torch.backends.cudnn.allow_tf32 = perf['tf32']
        torch.backends.cudnn.benchmark = perf['cudnn_benchmark']


def prepare_network(net: torch.nn.Module, perf: FrozenDict, device: torch.device) -> torch.nn.Module:
    """Move ``net`` to ``device`` and apply channels_last and torch.compile as configured."""
    check_performance_options(perf, device)
    apply_backend_flags(perf, device)
    net = net.to(device)
    if perf['channels_last']:
        net = net.to(memory_format=torch.channels_last)
    if perf['compile']:
        net = torch.compile(net)
    logger.info('Performance settings on %s: amp=%s, channels_last=%s, compile=%s, tf32=%s, cudnn_benchmark=%s',
                device, perf['amp'], perf['channels_last'], perf['compile'], perf['tf32'], perf['cudnn_benchmark'])
    return net


def autocast(perf: FrozenDict, device: torch.device):
    """Context manager for the forward pass: autocast in the configured dtype, or nothing."""
    if perf['amp'] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[perf['amp']])


def make_grad_scaler(perf: FrozenDict, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 needs none)."""
    return torch.amp.GradScaler(device.type, enabled=perf['amp'] == 'fp16')


def to_memory_format(tensor: torch.Tensor, perf: FrozenDict) -> torch.Tensor:
    """An input tensor in the memory format the network was prepared for."""
    return tensor.contiguous(memory_format=torch.channels_last) if perf['channels_last'] else tensor
