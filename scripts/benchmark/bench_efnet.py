"""Time EFNet's inference forward (eval mode, no_grad) per ``performance`` setting, on the CPU or a GPU.

Settings: fp32 (``amp: ~, channels_last: false, compile: false``, the plain path, always timed: the
ratios are against it), bf16, bf16 + channels_last, bf16 + channels_last + compile, and auto (the
defaults, as resolved on this machine). Each is applied with the functions the models use
(``basicsr.utils.performance``). With ``--baseline`` the original network is timed too: the blocks
written the straightforward way the reference code and the spec describe them (same weights; see
BASELINE below), in float32. The settings take turns run by run; the table gives medians, ratios,
the largest difference of each setting's final output from fp32's, and the warm-up time (compile
happens there). The load average is printed before and after: on a shared machine, timings taken
under load are not comparable (``--threads 1 --clock cpu`` is steadier there).

Examples::

    python scripts/benchmark/bench_efnet.py --size 256 256 --threads 2 --runs 5 --baseline
    python scripts/benchmark/bench_efnet.py --size 720 1280 --threads 2 --runs 2 --baseline
    python scripts/benchmark/bench_efnet.py --settings auto bf16+cl+compile --runs 5  # compile: minutes on a CPU
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from types import MethodType

import torch
import torch.nn.functional as F

from basicsr.archs.arch_util import count_parameters
from basicsr.archs.efnet_arch import EFNet
from basicsr.archs.efnet_blocks import EventImageChannelAttention, UNetConvBlock, _ResidualConvBody
from basicsr.utils.performance import (
    EffectivePerformance,
    autocast,
    prepare_network,
    resolve_performance,
    to_memory_format,
)

# ----------------------------------------------------------------------------------------------
# BASELINE: the blocks written the straightforward way the spec describes them (out-of-place
# activations and sums, channel LayerNorm on (B, H*W, C) copies, F.normalize, 1x1 convolutions,
# the feed-forward over the whole map at once). Used only to compare speed and numbers.
# ----------------------------------------------------------------------------------------------


def _baseline_residual(block: _ResidualConvBody, x: torch.Tensor) -> torch.Tensor:
    hidden = F.leaky_relu(block.conv_1(x), block.relu_slope)
    return F.leaky_relu(block.conv_2(hidden), block.relu_slope) + block.identity(x)


def _baseline_emgc(block: UNetConvBlock, y, enc, dec, mask):
    from_enc = block.emgc_enc(enc) + block.emgc_enc_mask((1 - mask) * enc)
    from_dec = block.emgc_dec(dec) + block.emgc_dec_mask(mask * dec)
    return y + from_enc + from_dec


def _baseline_layer_norm_tokens(tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    mean = tokens.mean(-1, keepdim=True)
    var = tokens.var(-1, keepdim=True, unbiased=False)
    return (tokens - mean) / torch.sqrt(var + 1e-5) * weight + bias


def _baseline_eica(block: EventImageChannelAttention, image: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    batch, chn, height, width = image.shape

    def to_3d(t):
        return t.permute(0, 2, 3, 1).reshape(batch, height * width, chn)

    def to_4d(t):
        return t.reshape(batch, height, width, chn).permute(0, 3, 1, 2)

    image_normed = to_4d(_baseline_layer_norm_tokens(to_3d(image), *block.norm1_image.body.parameters()))
    event_normed = to_4d(_baseline_layer_norm_tokens(to_3d(event), *block.norm1_event.body.parameters()))
    attn, heads = block.attn, block.attn.num_heads

    def split_heads(t):
        return t.reshape(batch, heads, chn // heads, height * width)

    query = F.normalize(split_heads(attn.q(image_normed)), dim=-1)
    key = F.normalize(split_heads(attn.k(event_normed)), dim=-1)
    value = split_heads(attn.v(event_normed))
    weights = ((query @ key.transpose(-2, -1)) * attn.temperature).softmax(dim=-1)
    fused = image + attn.project_out((weights @ value).reshape(batch, chn, height, width))
    tokens = to_3d(fused)
    tokens = tokens + block.ffn(block.norm2(tokens))
    return to_4d(tokens)


def make_baseline(net: EFNet) -> EFNet:
    """A copy of ``net`` whose blocks run the BASELINE code above."""
    baseline = copy.deepcopy(net)
    for module in baseline.modules():
        if isinstance(module, _ResidualConvBody):
            module.residual = MethodType(_baseline_residual, module)
        if isinstance(module, UNetConvBlock):
            module.add_emgc = MethodType(_baseline_emgc, module)
        if isinstance(module, EventImageChannelAttention):
            module.forward = MethodType(_baseline_eica, module)
    return baseline


# ----------------------------------------------------------------------------------------------


SETTINGS = {
    'fp32': {'amp': None, 'channels_last': False, 'compile': False},
    'bf16': {'amp': 'bf16', 'channels_last': False, 'compile': False},
    'bf16+cl': {'amp': 'bf16', 'channels_last': True, 'compile': False},
    'bf16+cl+compile': {'amp': 'bf16', 'channels_last': True, 'compile': True},
    'auto': {'amp': 'auto', 'channels_last': 'auto', 'compile': 'auto'},
}


def make_forward(net: EFNet, inputs: dict, settings: EffectivePerformance) -> Callable:
    """``net`` prepared as the models prepare it (a copy), called on ``inputs`` in its memory format under its
    autocast; returns the outputs in float32."""
    prepared = prepare_network(copy.deepcopy(net), settings)
    prepared_inputs = {name: to_memory_format(t, settings) for name, t in inputs.items()}

    def forward() -> list[torch.Tensor]:
        with autocast(settings):
            return [out.float() for out in prepared(**prepared_inputs)]

    return forward


def time_forwards(
    forwards: dict[str, Callable],
    runs: int,
    warmup: int,
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds per call for each forward, after ``warmup`` untimed calls each (whose total is returned second).

    The forwards take turns run by run, so a change in machine load affects all of them alike.
    """

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    times = {name: [] for name in forwards}
    warmup_seconds = {}
    with torch.no_grad():
        for name, forward in forwards.items():
            start = time.perf_counter()
            for _ in range(warmup):
                forward()
            sync()
            warmup_seconds[name] = time.perf_counter() - start
        for _ in range(runs):
            for name, forward in forwards.items():
                start = clock()
                forward()
                sync()
                times[name].append(clock() - start)
    return times, warmup_seconds


def make_inputs(
    batch: int, height: int, width: int, in_chn: int, ev_chn: int, with_mask: bool, device: torch.device
) -> dict:
    """Random inputs in the ranges EFNet sees: image [0, 1], events [-1, 1], mask {0, 1}."""
    generator = torch.Generator().manual_seed(1234)
    inputs = {
        'x': torch.rand(batch, in_chn, height, width, generator=generator),
        'event': torch.rand(batch, ev_chn, height, width, generator=generator) * 2 - 1,
    }
    if with_mask:
        inputs['mask'] = (torch.rand(batch, 1, height, width, generator=generator) > 0.5).float()
    return {name: t.to(device) for name, t in inputs.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, nargs=2, default=(256, 256), metavar=('H', 'W'), help='input size')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--wf', type=int, default=64, help='EFNet base width')
    parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads (CPU)')
    parser.add_argument('--runs', type=int, default=5, help='timed runs; the median is reported')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs first (compile happens here)')
    parser.add_argument('--no-mask', action='store_true', help='run without the event mask (EMGC off)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument(
        '--settings',
        nargs='+',
        default=[name for name in SETTINGS if 'compile' not in name],
        choices=list(SETTINGS),
        help='performance settings to time (default: all but compile)',
    )
    parser.add_argument('--baseline', action='store_true', help='also time the original per-spec network (fp32)')
    parser.add_argument(
        '--clock',
        choices=('wall', 'cpu'),
        default='wall',
        help='wall time, or the CPU time of the process (steadier on a shared machine with 1 thread)',
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = EFNet(wf=args.wf).eval()
    height, width = args.size
    inputs = make_inputs(args.batch, height, width, 3, 6, not args.no_mask, device)
    print(
        f'EFNet wf={args.wf} ({count_parameters(net):,} parameters), input {args.batch}x3x{height}x{width}, '
        f'mask={not args.no_mask}, device={device}, threads={torch.get_num_threads()}, torch {torch.__version__}, '
        f'clock {args.clock}, load average {os.getloadavg()[0]:.2f}'
    )
    forwards = {}
    if args.baseline:
        baseline = make_baseline(net).to(device)
        forwards['original'] = lambda: baseline(**inputs)
    for name in dict.fromkeys(['fp32', *args.settings]):
        settings = resolve_performance(SETTINGS[name], device)
        print(f'{name}: {settings.describe()}')
        forwards[name] = make_forward(net, inputs, settings)
    clock = time.perf_counter if args.clock == 'wall' else time.process_time
    times, warmup_seconds = time_forwards(forwards, args.runs, args.warmup, device, clock)
    medians = {name: statistics.median(values) for name, values in times.items()}
    with torch.no_grad():
        outputs = {name: forward()[-1] for name, forward in forwards.items()}
    print(
        f'{"setting":<16} | {"median ms":>9} | {"vs fp32":>7} | {"vs original":>11} | {"max |out - fp32|":>16} | '
        f'{"warm-up s":>9}'
    )
    print('-' * 84)
    for name, median in medians.items():
        versus_original = f'{medians["original"] / median:.2f}x' if args.baseline else ''
        difference = (outputs[name] - outputs['fp32']).abs().max().item()
        print(
            f'{name:<16} | {median * 1e3:>9.1f} | {medians["fp32"] / median:>6.2f}x | {versus_original:>11} | '
            f'{difference:>16.2e} | {warmup_seconds[name]:>9.1f}'
        )
    print(
        'runs (ms): '
        + '; '.join(f'{name} {", ".join(f"{t * 1e3:.1f}" for t in values)}' for name, values in times.items())
    )
    print(f'load average at the end: {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
    main()
