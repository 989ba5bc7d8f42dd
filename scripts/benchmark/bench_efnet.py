"""Time EFNet's forward pass (eval mode, no_grad, float32) on the CPU or a GPU.

Reports the median of ``--runs`` timed forwards after ``--warmup`` untimed ones. With
``--baseline`` it also times a straightforward per-spec version of the same network (same
weights; see BASELINE below), taking turns with ours run by run, and prints how far its outputs
are from ours. The load average is printed before and after: on a shared machine, timings taken
under load are not comparable.

Example::

    python scripts/benchmark/bench_efnet.py --size 256 256 --threads 2 --runs 5 --baseline
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from types import MethodType

import torch
import torch.nn.functional as F

from basicsr.archs.arch_util import count_parameters
from basicsr.archs.efnet_arch import EFNet
from basicsr.archs.efnet_blocks import EventImageChannelAttention, UNetConvBlock, _ResidualConvBody

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


def time_forwards(nets: dict[str, EFNet], inputs: dict, runs: int, warmup: int,
                  device: torch.device) -> dict[str, list[float]]:
    """Seconds per ``net(**inputs)`` for each net, after ``warmup`` untimed calls each.

    The nets take turns run by run, so a change in machine load affects all of them alike.
    """
    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    times = {name: [] for name in nets}
    with torch.no_grad():
        for net in nets.values():
            for _ in range(warmup):
                net(**inputs)
        sync()
        for _ in range(runs):
            for name, net in nets.items():
                start = time.perf_counter()
                net(**inputs)
                sync()
                times[name].append(time.perf_counter() - start)
    return times


def make_inputs(batch: int, height: int, width: int, in_chn: int, ev_chn: int, with_mask: bool,
                device: torch.device) -> dict:
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
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs first')
    parser.add_argument('--no-mask', action='store_true', help='run without the event mask (EMGC off)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--baseline', action='store_true', help='also time the per-spec BASELINE blocks')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = EFNet(wf=args.wf).eval().to(device)
    height, width = args.size
    inputs = make_inputs(args.batch, height, width, 3, 6, not args.no_mask, device)
    print(f'EFNet wf={args.wf} ({count_parameters(net):,} parameters), input {args.batch}x3x{height}x{width}, '
          f'mask={not args.no_mask}, device={device}, threads={torch.get_num_threads()}, torch {torch.__version__}, '
          f'load average {os.getloadavg()[0]:.2f}')
    nets = {'ours': net}
    if args.baseline:
        nets['baseline'] = make_baseline(net)
    times = time_forwards(nets, inputs, args.runs, args.warmup, device)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f'{name:>8}: median {medians[name] * 1e3:9.1f} ms over {args.runs} runs '
              f"({', '.join(f'{t * 1e3:.1f}' for t in values)} ms)")
    if args.baseline:
        with torch.no_grad():
            ours, base = net(**inputs), nets['baseline'](**inputs)
        diff = max((a - b).abs().max().item() for a, b in zip(ours, base, strict=True))
        print(f'baseline / ours: {medians["baseline"] / medians["ours"]:.2f}x; max |ours - baseline| = {diff:.2e}')
    print(f'load average at the end: {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
    main()
