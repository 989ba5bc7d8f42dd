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


def test_the_script_reports_medians_and_the_difference(bench, capsys):
    bench.main(['--size', '8', '12', '--wf', '8', '--runs', '3', '--warmup', '0', '--threads', '1', '--baseline'])
    output = capsys.readouterr().out
    assert 'EFNet wf=8 (134,989 parameters), input 1x3x8x12, mask=True' in output
    assert re.search(r'ours: median +[\d.]+ ms over 3 runs \([\d.]+, [\d.]+, [\d.]+ ms\)', output)
    assert re.search(r'baseline: median +[\d.]+ ms over 3 runs', output)
    difference = float(re.search(r'max \|ours - baseline\| = ([\d.e+-]+)', output).group(1))
    assert difference < 1e-5
