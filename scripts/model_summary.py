"""Print a network's parameter count and FLOPs, in total and per top-level module.

The network comes from an option file (its ``network_g``) or from ``--arch`` with
``--arch-args key=value ...`` (values are YAML literals: ``wf=32``, ``num_heads=[2,2,2]``).
FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, transposed
convolutions, linear layers and matrix products; 1 multiply-add = 2 FLOPs) for one forward of a
batch of one with an event tensor and a mask, run on the meta device: shapes only, no memory or
compute, so large sizes are instant.

Examples::

    python scripts/model_summary.py -opt options/train/GoPro/EFNet.yml
    python scripts/model_summary.py --arch EFNet --size 3 256 256 --arch-args wf=32
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from basicsr.archs.arch_util import count_parameters
from basicsr.engine.options import load_options, load_yaml, parse_yaml_value
from basicsr.utils.option_schema import FrozenDict, check_component
from basicsr.utils.registry import ARCH_REGISTRY, build


def parse_arch_args(items: list[str]) -> dict:
    """``['wf=32', 'num_heads=[1,2,4]']`` -> ``{'wf': 32, 'num_heads': [1, 2, 4]}`` (YAML literals, no eval)."""
    kwargs = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise SystemExit(f"--arch-args entries must look like key=value (e.g. wf=32), got '{item}'")
        kwargs[key] = parse_yaml_value(value)
    return kwargs


def network_options(args: argparse.Namespace) -> FrozenDict:
    """The validated ``{'type': ..., **kwargs}`` mapping of the network to summarise."""
    if args.opt is not None:
        tree = load_yaml(args.opt)
        is_train = isinstance(tree, dict) and 'train' in (tree.get('datasets') or {})
        return load_options(args.opt, is_train=is_train)['network_g']
    return check_component(ARCH_REGISTRY, {'type': args.arch, **parse_arch_args(args.arch_args)}, where='--arch')


def count_flops(net: torch.nn.Module, image_shape: tuple[int, int, int]) -> FlopCounterMode:
    """Run one forward of ``net`` on meta tensors under a FlopCounterMode and return the counter.

    ``image_shape`` is (C, H, W); the event tensor has ``net.ev_chn`` channels, the mask one.
    """
    chn, height, width = image_shape
    if chn != net.in_chn:
        raise ValueError(f'--size gives {chn} image channels but the network takes in_chn={net.in_chn}')
    net = net.to('meta')
    frame = torch.empty(1, chn, height, width, device='meta')
    voxel = torch.empty(1, net.ev_chn, height, width, device='meta')
    mask = torch.empty(1, 1, height, width, device='meta')
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(frame, voxel, mask)
    return counter


def module_flops(counter: FlopCounterMode, prefix: str) -> int:
    """FLOPs counted inside the module named ``prefix`` (e.g. ``'EFNet.down_path_1'``).

    Containers that are never called themselves (nn.ModuleList) have no entry of their own, so
    the outermost entries below ``prefix`` are summed.
    """
    counts = {
        name: sum(ops.values())
        for name, ops in counter.get_flop_counts().items()
        if name == prefix or name.startswith(prefix + '.')
    }
    outermost = [name for name in counts if not any(name.startswith(other + '.') for other in counts)]
    return sum(counts[name] for name in outermost)


def summary_lines(net: torch.nn.Module, counter: FlopCounterMode, image_shape: tuple[int, int, int]) -> list[str]:
    root = type(net).__name__
    total_flops = counter.get_total_flops()
    lines = [
        f'{root}: {count_parameters(net):,} parameters',
        f'FLOPs for one 1x{"x".join(map(str, image_shape))} forward with event tensor and mask: '
        f'{total_flops:,} ({total_flops / 1e9:.2f} GFLOPs, {total_flops / 2e9:.2f} GMACs)',
        '',
        f'{"module":<16}{"parameters":>14}{"GFLOPs":>12}',
    ]
    for name, child in net.named_children():
        flops = module_flops(counter, f'{root}.{name}')
        lines.append(f'{name:<16}{count_parameters(child):>14,}{flops / 1e9:>12.3f}')
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('-opt', '--opt', help='option file whose network_g is summarised')
    source.add_argument('--arch', help='registered architecture name, e.g. EFNet')
    parser.add_argument(
        '--arch-args',
        nargs='*',
        default=[],
        metavar='KEY=VALUE',
        help='constructor arguments for --arch, values as YAML literals',
    )
    parser.add_argument(
        '--size',
        type=int,
        nargs=3,
        default=(3, 256, 256),
        metavar=('C', 'H', 'W'),
        help='image size (default 3 256 256)',
    )
    args = parser.parse_args(argv)
    if args.opt is not None and args.arch_args:
        parser.error('--arch-args goes with --arch; with -opt, edit network_g in the option file')
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    image_shape = tuple(args.size)
    try:
        net = build(ARCH_REGISTRY, network_options(args))
        counter = count_flops(net, image_shape)
    except (KeyError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f'model_summary: {error}') from None
    print('\n'.join(summary_lines(net, counter, image_shape)))


if __name__ == '__main__':
    main()
