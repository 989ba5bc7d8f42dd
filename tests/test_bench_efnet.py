"""scripts/benchmark/bench_efnet.py: its per-spec baseline agrees with EFNet, and the script runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import load_script

from basicsr.archs.efnet_arch import EFNet

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'benchmark' / 'bench_efnet.py'


@pytest.fixture(scope='module')
def bench():
    return load_script(SCRIPT)


@pytest.mark.parametrize('with_mask', [True, False])
def test_the_per_spec_baseline_gives_the_same_outputs(bench, with_mask):
    torch.manual_seed(0)
    net = EFNet(wf=8, depth=4, num_heads=(2, 2, 4, 8)).eval()
    inputs = bench.make_inputs(2, 19, 26, 3, 6, with_mask, torch.device('cpu'))
    with torch.no_grad():
        ours, baseline = net(**inputs), bench.make_baseline(net)(**inputs)
    for a, b in zip(ours, baseline, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_the_script_reports_a_table_with_the_baselines(bench, capsys):
    bench.main(
        [
            '--size',
            '8',
            '12',
            '--wf',
            '8',
            '--runs',
            '3',
            '--warmup',
            '0',
            '--threads',
            '1',
            '--baseline',
            '--settings',
            'fp32',
            'bf16+cl',
            'auto',
        ]
    )
    output = capsys.readouterr().out
    assert 'EFNet wf=8 (134,989 parameters), input 1x3x8x12, mask=True' in output
    rows = {
        m.group(1): m.groups()[1:]
        for m in re.finditer(
            r'^(original|fp32|bf16\+cl|auto) +\| +([\d.]+) \| +([\d.]+)x \| +([\d.]+)x \| +([\d.e+-]+) \|',
            output,
            re.MULTILINE,
        )
    }
    assert set(rows) == {'original', 'fp32', 'bf16+cl', 'auto'}
    assert rows['fp32'][1] == '1.00'
    assert float(rows['original'][3]) < 1e-5  # the original network's output against ours in fp32
    assert float(rows['bf16+cl'][3]) < 0.1  # bf16 rounding on a tiny random network
