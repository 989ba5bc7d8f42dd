"""The one place where speed switches are applied (option section ``performance``).

Mixed precision, channels_last, torch.compile, TF32 and cudnn.benchmark are applied here, after
the network is on its device and before DDP wraps it. Networks, losses and metrics never read
these options (losses and metrics compute in float32). A setting the hardware cannot honour stops
the run with a message naming the option, or warns where it only runs slowly.

The options may say ``auto``; :func:`resolve_performance` turns them into the settings in effect
on one device (:class:`EffectivePerformance`), once per run (the model does it at start and logs
:meth:`EffectivePerformance.describe`); the other functions here apply those settings. What ``auto``
chooses, from measurements on a 2-core AMD EPYC (AVX512-BF16, no AMX) with the default EFNet (README,
"Benchmarks"):

* ``amp``: bf16 where the hardware runs it natively: CUDA devices that support bf16, CPUs with
  AMX-BF16 or AVX512-BF16 (read from the CPU flags at start); float32 elsewhere (bf16 emulated
  on older CPUs is slower than float32).
* ``channels_last``: on for the CPU (oneDNN's convolutions work in NHWC; in float32 and bf16 alike
  it saves the layout conversions around every convolution) and for CUDA with mixed precision
  (tensor-core convolutions are NHWC); off for CUDA in float32.
* ``compile``: off. On the CPU, compiling EFNet took over a minute of start-up for ~20% less time
  per forward in bf16, which pays only after several hundred frames, and every new input size
  compiles again (validation and test images differ in size). Ask for it with ``compile: true``
  in long training runs.

``amp: ~``, ``channels_last: false``, ``compile: false`` is the plain float32 path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from basicsr.utils.errors import InvalidInputError
from basicsr.utils.option_schema import Key, Section

_AMP_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}
# CPU flags (as /proc/cpuinfo spells them) of instructions that compute in bf16 natively.
_NATIVE_BF16_CPU_FLAGS = frozenset({'amx_bf16', 'avx512_bf16'})


def _auto_or_bool(value: Any) -> str | None:
    if isinstance(value, bool) or value == 'auto':
        return None
    return f'must be auto, true or false, got {value!r}'


PERFORMANCE_SCHEMA = Section(
    {
        'amp': Key(
            (str, None),
            default='auto',
            choices=('auto', 'bf16', 'fp16'),
            doc='mixed precision: auto (bf16 where the hardware runs it natively, else float32), bf16, '
            'fp16 (CUDA only) or ~ (float32)',
        ),
        'channels_last': Key(
            (bool, str),
            default='auto',
            check=_auto_or_bool,
            doc='NHWC memory format for the network: auto (CPU; CUDA with amp), true or false',
        ),
        'compile': Key(
            (bool, str),
            default='auto',
            check=_auto_or_bool,
            doc="torch.compile the network's forward: auto (off: see basicsr/utils/performance.py), true or false",
        ),
        'tf32': Key(bool, default=True, doc='TF32 matmul/conv on Ampere+ GPUs'),
        'cudnn_benchmark': Key(bool, default=True),
    },
    doc='speed switches, applied in one place (basicsr/utils/performance.py)',
)


@dataclasses.dataclass(frozen=True)
class EffectivePerformance:
    """The speed settings in effect on one device (``auto`` resolved).

    amp: autocast dtype of the network's forward (torch.bfloat16 or torch.float16), or None for
        float32.
    channels_last, compile, tf32, cudnn_benchmark: on or off.
    """

    device: torch.device
    amp: torch.dtype | None
    channels_last: bool
    compile: bool
    tf32: bool
    cudnn_benchmark: bool

    def describe(self) -> str:
        """One log line of the choices."""
        amp = {None: 'float32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[self.amp]
        text = f'Performance on {self.device}: amp={amp}, channels_last={self.channels_last}, compile={self.compile}'
        if self.device.type == 'cuda':
            text += f', tf32={self.tf32}, cudnn_benchmark={self.cudnn_benchmark}'
        return text


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith('flags'):
            return frozenset(line.partition(':')[2].split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str]) -> bool:
    """True when ``flags`` include AMX-BF16 or AVX512-BF16."""
    return bool(flags & _NATIVE_BF16_CPU_FLAGS)


def _cuda_has_bf16(device: torch.device) -> bool:
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def resolve_performance(
    perf: Mapping[str, Any], device: torch.device, flags: frozenset[str] | None = None
) -> EffectivePerformance:
    """The settings in effect for ``perf`` (the ``performance`` options) on ``device``.

    Args:
        perf: mapping with the keys of :data:`PERFORMANCE_SCHEMA` (missing keys take its defaults).
        device: where the network runs.
        flags: the CPU's feature flags (default: :func:`cpu_flags`); for tests.

    Raises:
        InvalidInputError: fp16 on a device other than CUDA, bf16 on a CUDA device without it.
    """
    perf = {**PERFORMANCE_SCHEMA.default(), **perf}
    flags = cpu_flags() if flags is None else flags
    amp = _resolve_amp(perf['amp'], device, flags)
    channels_last = perf['channels_last']
    if channels_last == 'auto':
        channels_last = device.type == 'cpu' or (device.type == 'cuda' and amp is not None)
    compile_ = perf['compile']
    if compile_ == 'auto':
        compile_ = False
    return EffectivePerformance(device, amp, bool(channels_last), bool(compile_), perf['tf32'], perf['cudnn_benchmark'])


def _resolve_amp(amp: str | None, device: torch.device, flags: frozenset[str]) -> torch.dtype | None:
    if amp == 'auto':
        if device.type == 'cuda':
            return torch.bfloat16 if _cuda_has_bf16(device) else None
        return torch.bfloat16 if device.type == 'cpu' and cpu_has_native_bf16(flags) else None
    if amp == 'fp16' and device.type != 'cuda':
        raise InvalidInputError(
            f'performance.amp: fp16 needs a CUDA device, but the run is on {device}; use bf16 on '
            'the CPU, auto, or set performance.amp: ~ (float32)'
        )
    if amp == 'bf16' and device.type == 'cuda' and not _cuda_has_bf16(device):
        raise InvalidInputError(
            f'performance.amp: bf16 needs a CUDA device of compute capability 8.0 or newer, got '
            f'{torch.cuda.get_device_name(device)}; use fp16, auto or ~ (float32)'
        )
    if amp == 'bf16' and device.type == 'cpu' and not cpu_has_native_bf16(flags):
        warnings.warn(
            'performance.amp: bf16 on a CPU without AMX-BF16 or AVX512-BF16 is emulated and usually '
            'slower than float32; set performance.amp: auto or ~',
            stacklevel=3,
        )
    return None if amp is None else _AMP_DTYPES[amp]


def apply_backend_flags(settings: EffectivePerformance) -> None:
    """Global flags: TF32 and cudnn.benchmark (CUDA only; no effect on the CPU)."""
    if settings.device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = settings.tf32
        torch.backends.cudnn.allow_tf32 = settings.tf32
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark


def prepare_network(net: torch.nn.Module, settings: EffectivePerformance) -> torch.nn.Module:
    """Move ``net`` to ``settings.device`` and apply channels_last and torch.compile as resolved.

    With compile, the module keeps its class, parameters and state-dict names: its ``forward`` is
    replaced by the compiled one (``nn.Module.compile``), so checkpoints and EMA copies see the
    plain network.
    """
    apply_backend_flags(settings)
    net = net.to(settings.device)
    if settings.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if settings.compile:
        net.compile()
    return net


def autocast(settings: EffectivePerformance):
    """Context manager for the network's forward: autocast in the resolved dtype, or nothing."""
    if settings.amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=settings.device.type, dtype=settings.amp)


def make_grad_scaler(settings: EffectivePerformance) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 needs none)."""
    return torch.amp.GradScaler(settings.device.type, enabled=settings.amp == torch.float16)


def to_memory_format(tensor: torch.Tensor, settings: EffectivePerformance) -> torch.Tensor:
    """An input tensor (on ``settings.device``) in the memory format the network was prepared for."""
    if settings.channels_last and tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor
