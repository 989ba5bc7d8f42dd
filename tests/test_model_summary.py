"""scripts/model_summary.py: parameter counts and FLOPs against independent formulas."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import load_script

from basicsr.archs.arch_util import count_parameters
from basicsr.archs.efnet_arch import EFNet

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / 'scripts' / 'model_summary.py'


@pytest.fixture(scope='module')
def summary():
    """The script loaded as a module, to call ``main`` in this process."""
    return load_script(SCRIPT)


def efnet_flops(
    height: int,
    width: int,
    wf: int = 64,
    depth: int = 3,
    num_heads=(1, 2, 4),
    in_chn: int = 3,
    ev_chn: int = 6,
    folded_attention: bool = True,
) -> int:
    """FLOPs (2 per multiply-add) of convolutions and matrix products of one EFNet forward with a
    mask, for H and W multiples of 2**(depth - 1), written from the architecture description.

    ``folded_attention=False`` counts EICA's attention as the reference lays it out (q, k, v and
    project_out maps over all pixels, per-head products); True as this implementation computes the
    same function: q and k over all pixels, all channel pairs of Q^T K, then one product of the
    event tokens with the per-sample (C, C) matrix project_out . blockdiag(A) . v.
    """
    pixels = [height * width // 4**level for level in range(depth)]
    widths = [wf * 2**level for level in range(depth)]
    inputs = [wf] + widths[:-1]

    def conv(c_in, c_out, kernel, out_pixels):
        return 2 * c_in * c_out * kernel * kernel * out_pixels

    def body(c_in, c, p):
        return conv(c_in, c, 3, p) + conv(c, c, 3, p) + conv(c_in, c, 1, p)

    def eica(c, heads, p):
        head_dim = c // heads
        feed_forward = 2 * (2 * c * 4 * c * p)
        if folded_attention:
            folding = 2 * head_dim * c * c + 2 * c * c * c  # blockdiag(A) . v, then project_out . (...)
            return 2 * conv(c, c, 1, p) + 2 * (2 * c * c * p) + folding + feed_forward
        attention_products = 2 * (2 * heads * head_dim * head_dim * p)
        return 4 * conv(c, c, 1, p) + attention_products + feed_forward

    total = 2 * conv(in_chn, wf, 3, pixels[0]) + conv(ev_chn, wf, 3, pixels[0])
    for level, (c_in, c, p) in enumerate(zip(inputs, widths, pixels, strict=True)):
        has_down = level < depth - 1
        down = conv(c, c, 4, pixels[level + 1]) if has_down else 0
        emgc = 4 * conv(c, c, 3, p) if has_down else 0
        total += body(c_in, c, p) + eica(c, num_heads[level], p) + down
        total += body(c_in, c, p) + emgc + down
        total += body(c_in, c, p) + conv(c, c, 1, p) + down
    for level in range(depth - 1):
        c, c_below, p = widths[level], widths[level + 1], pixels[level]
        transposed_up = 2 * c_below * c * 4 * pixels[level + 1]  # counted per input pixel
        total += 2 * (transposed_up + body(2 * c, c, p) + conv(c, c, 3, p))
    sam = conv(wf, wf, 3, pixels[0]) + conv(wf, in_chn, 3, pixels[0]) + conv(in_chn, wf, 3, pixels[0])
    return total + sam + conv(2 * wf, wf, 1, pixels[0]) + conv(wf, in_chn, 3, pixels[0])


def parse(output: str) -> tuple[int, int, dict[str, tuple[int, float]]]:
    """(parameters, FLOPs, {module: (parameters, GFLOPs)}) from the script's output."""
    params = int(re.search(r'EFNet: ([\d,]+) parameters', output).group(1).replace(',', ''))
    flops = int(re.search(r'forward with event tensor and mask: ([\d,]+) ', output).group(1).replace(',', ''))
    rows = {
        m.group(1): (int(m.group(2).replace(',', '')), float(m.group(3)))
        for m in re.finditer(r'^(\w+)\s+([\d,]+)\s+([\d.]+)$', output, flags=re.MULTILINE)
    }
    return params, flops, rows


def test_formula_gives_the_published_243_45_gflops_for_the_reference_layout():
    assert efnet_flops(256, 256, folded_attention=False) == 243_445_792_768
    assert efnet_flops(256, 256) == 241_616_027_648


def test_script_prints_parameters_and_flops_of_a_tiny_config(run_python):
    result = run_python(str(SCRIPT), '--arch', 'EFNet', '--size', '3', '32', '32', '--arch-args', 'wf=8')
    assert result.returncode == 0, result.stderr
    params, flops, rows = parse(result.stdout)
    assert params == count_parameters(EFNet(wf=8)) == 134_989
    assert flops == efnet_flops(32, 32, wf=8)
    assert sum(p for p, _ in rows.values()) == params


def test_default_network_at_256_is_241_62_gflops(summary, capsys):
    summary.main(['-opt', str(REPO_ROOT / 'options' / 'train' / 'GoPro' / 'EFNet.yml')])
    output = capsys.readouterr().out
    params, flops, rows = parse(output)
    assert params == 8_466_445 and flops == 241_616_027_648
    assert '(241.62 GFLOPs, 120.81 GMACs)' in output
    assert rows['down_path_1'][0] == 2_590_855 and rows['sam12'] == (40_451, 5.285)
    assert sum(g for _, g in rows.values()) == pytest.approx(flops / 1e9, abs=0.01)


@pytest.mark.parametrize(
    ('size', 'arch_args', 'formula'),
    [
        ((64, 96), ['wf=8'], {'wf': 8}),
        ((30, 45), ['wf=8'], {'wf': 8, 'height': 32, 'width': 48}),  # padded internally to multiples of 4
        ((16, 16), ['wf=8', 'depth=4', 'num_heads=[1, 2, 4, 8]'], {'wf': 8, 'depth': 4, 'num_heads': (1, 2, 4, 8)}),
        ((8, 8), ['wf=8', 'num_heads=[2,2,2]'], {'wf': 8, 'num_heads': (2, 2, 2)}),
    ],
)
def test_flops_follow_the_formula(summary, capsys, size, arch_args, formula):
    summary.main(['--arch', 'EFNet', '--size', '3', *map(str, size), '--arch-args', *arch_args])
    _, flops, _ = parse(capsys.readouterr().out)
    height, width = formula.pop('height', size[0]), formula.pop('width', size[1])
    assert flops == efnet_flops(height, width, **formula)


@pytest.mark.parametrize(
    ('argv', 'message'),
    [
        (['--arch', 'EFNet', '--arch-args', 'wf'], 'entries must look like key=value'),
        (['--arch', 'EFNett'], "Did you mean 'EFNet'"),
        (['--arch', 'EFNet', '--arch-args', 'num_heads=[1,2]'], 'num_heads needs at least depth=3 entries'),
        (['--arch', 'EFNet', '--size', '1', '8', '8'], 'network takes in_chn=3'),
    ],
)
def test_bad_arguments_exit_with_a_message(summary, argv, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        summary.main(argv)


def test_opt_and_arch_args_do_not_mix(summary, capsys):
    with pytest.raises(SystemExit):
        summary.main(['-opt', 'x.yml', '--arch-args', 'wf=8'])
    assert '--arch-args goes with --arch' in capsys.readouterr().err


def test_a_missing_option_file_is_reported(summary, tmp_path):
    with pytest.raises(SystemExit, match='does not exist'):
        summary.main(['-opt', str(tmp_path / 'missing.yml')])


def test_meta_device_leaves_no_real_tensors(summary):
    net = EFNet(wf=8)
    summary.count_flops(net, (3, 8, 8))
    assert all(p.device == torch.device('meta') for p in net.parameters())
