"""basicsr.utils.performance: what ``auto`` resolves to on faked CPUs and CUDA devices, the plain float32 path,
the errors and warnings for settings the hardware cannot honour, and the compile path on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from basicsr.utils import performance
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.option_schema import validate
from basicsr.utils.performance import (
    PERFORMANCE_SCHEMA,
    EffectivePerformance,
    autocast,
    prepare_network,
    resolve_performance,
    to_memory_format,
)

CPU = torch.device('cpu')
CUDA = torch.device('cuda', 0)
PLAIN = {'amp': None, 'channels_last': False, 'compile': False}
AUTO = {'amp': 'auto', 'channels_last': 'auto', 'compile': 'auto'}


@pytest.fixture()
def fake_cuda(monkeypatch):
    """A CUDA device of a chosen compute capability, without CUDA."""

    def set_capability(major: int) -> None:
        monkeypatch.setattr(performance.torch.cuda, 'get_device_capability', lambda device=None: (major, 0))
        monkeypatch.setattr(performance.torch.cuda, 'get_device_name', lambda device=None: f'GPU sm_{major}0')

    return set_capability


# ----------------------------------------------------------------------------------------------
# auto
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    'flags, amp',
    [
        ({'fpu', 'avx2', 'avx512f', 'avx512_bf16'}, torch.bfloat16),  # AVX512-BF16 (Cooper Lake, Zen 4)
        ({'fpu', 'avx2', 'amx_tile', 'amx_bf16'}, torch.bfloat16),  # AMX (Sapphire Rapids)
        ({'fpu', 'avx2', 'avx512f', 'avx512bw'}, None),  # AVX-512 without bf16: emulated, float32 instead
        (set(), None),  # no /proc/cpuinfo
    ],
)
def test_auto_on_the_cpu_follows_the_bf16_flags(flags, amp):
    settings = resolve_performance(AUTO, CPU, frozenset(flags))
    assert settings == EffectivePerformance(
        CPU, amp, channels_last=True, compile=False, tf32=True, cudnn_benchmark=True
    )


@pytest.mark.parametrize(
    'major, amp, channels_last', [(8, torch.bfloat16, True), (9, torch.bfloat16, True), (7, None, False)]
)
def test_auto_on_cuda_follows_the_compute_capability(fake_cuda, major, amp, channels_last):
    fake_cuda(major)
    settings = resolve_performance(AUTO, CUDA, frozenset())
    assert (settings.amp, settings.channels_last, settings.compile) == (amp, channels_last, False)


def test_the_defaults_are_auto():
    defaults = PERFORMANCE_SCHEMA.default()
    assert (defaults['amp'], defaults['channels_last'], defaults['compile']) == ('auto', 'auto', 'auto')
    assert resolve_performance({}, CPU, frozenset({'avx512_bf16'})) == resolve_performance(
        AUTO, CPU, frozenset({'avx512_bf16'})
    )


def test_explicit_settings_win_over_auto(fake_cuda):
    fake_cuda(8)
    settings = resolve_performance({'amp': 'fp16', 'channels_last': False, 'compile': True, 'tf32': False}, CUDA)
    assert (settings.amp, settings.channels_last, settings.compile, settings.tf32) == (
        torch.float16,
        False,
        True,
        False,
    )
    assert resolve_performance(PLAIN, CPU, frozenset({'amx_bf16'})).amp is None


def test_the_choices_are_described_in_one_line(fake_cuda):
    assert resolve_performance(AUTO, CPU, frozenset({'avx512_bf16'})).describe() == (
        'Performance on cpu: amp=bf16, channels_last=True, compile=False'
    )
    fake_cuda(8)
    line = resolve_performance({'amp': 'fp16', 'compile': True}, CUDA).describe()
    assert line == (
        'Performance on cuda:0: amp=fp16, channels_last=True, compile=True, tf32=True, cudnn_benchmark=True'
    )


def test_cpu_flags_are_read_from_proc_cpuinfo():
    flags = performance.cpu_flags()
    assert isinstance(flags, frozenset)
    assert performance.cpu_has_native_bf16(frozenset({'avx512_bf16'}))
    assert not performance.cpu_has_native_bf16(frozenset({'avx512bw', 'avx512f'}))


# ----------------------------------------------------------------------------------------------
# Settings the hardware cannot honour; the schema
# ----------------------------------------------------------------------------------------------
def test_fp16_on_the_cpu_stops_naming_the_option():
    with pytest.raises(InvalidInputError, match=r'performance.amp: fp16 needs a CUDA device.*use bf16 on the CPU'):
        resolve_performance({'amp': 'fp16'}, CPU)


def test_bf16_on_an_old_gpu_stops_naming_the_option(fake_cuda):
    fake_cuda(7)
    with pytest.raises(InvalidInputError, match=r'performance.amp: bf16 needs a CUDA device of compute capability 8'):
        resolve_performance({'amp': 'bf16'}, CUDA)


def test_bf16_on_a_cpu_without_native_bf16_warns():
    with pytest.warns(UserWarning, match='performance.amp: bf16 on a CPU without AMX-BF16 or AVX512-BF16'):
        settings = resolve_performance({'amp': 'bf16'}, CPU, frozenset({'avx2'}))
    assert settings.amp is torch.bfloat16


def test_the_schema_accepts_auto_and_booleans_and_names_bad_values():
    _, problems = validate({'amp': 'auto', 'channels_last': True, 'compile': 'auto'}, PERFORMANCE_SCHEMA)
    assert problems == []
    _, problems = validate({'amp': 'bf1', 'channels_last': 'yes', 'compile': 1.5}, PERFORMANCE_SCHEMA)
    messages = {p.path: p.message for p in problems}
    assert "did you mean 'bf16'" in messages['amp']
    assert messages['channels_last'] == "must be auto, true or false, got 'yes'"
    assert 'compile' in messages


# ----------------------------------------------------------------------------------------------
# Applying the settings
# ----------------------------------------------------------------------------------------------
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(8, 3, 3, padding=1))


def test_the_plain_settings_give_the_bare_float32_network_bit_for_bit():
    net, inputs = tiny_net(), torch.rand(2, 3, 9, 7)
    expected = net(inputs)
    settings = resolve_performance(PLAIN, CPU, frozenset({'avx512_bf16'}))
    prepared = prepare_network(tiny_net(), settings)
    prepared_inputs = to_memory_format(inputs, settings)
    assert prepared_inputs is inputs
    with autocast(settings):
        output = prepared(prepared_inputs)
    assert output.dtype == torch.float32
    assert torch.equal(output, expected)


def test_bf16_and_channels_last_keep_the_interface():
    net, inputs = tiny_net(), torch.rand(2, 3, 9, 7)
    expected = net(inputs)
    settings = resolve_performance(AUTO, CPU, frozenset({'avx512_bf16'}))
    prepared = prepare_network(tiny_net(), settings)
    assert prepared[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert list(prepared.state_dict()) == list(net.state_dict())
    prepared_inputs = to_memory_format(inputs, settings)
    assert prepared_inputs.is_contiguous(memory_format=torch.channels_last)
    with autocast(settings):
        output = prepared(prepared_inputs)
    assert output.dtype == torch.bfloat16 and output.shape == expected.shape
    torch.testing.assert_close(output.float(), expected, atol=0.05, rtol=0.05)


def test_the_compiled_network_runs_on_the_cpu_and_keeps_its_names():
    # One tiny network through the default compiler (inductor, C++ on the CPU): a few seconds.
    net, inputs = tiny_net(), torch.rand(1, 3, 8, 8)
    expected = net(inputs)
    prepared = prepare_network(tiny_net(), resolve_performance(PLAIN | {'compile': True}, CPU))
    assert type(prepared) is nn.Sequential and list(prepared.state_dict()) == list(net.state_dict())
    torch.testing.assert_close(prepared(inputs), expected, atol=1e-5, rtol=1e-5)
    ema = copy.deepcopy(prepared)  # the models keep an EMA copy of the network
    torch.testing.assert_close(ema(inputs), expected, atol=1e-5, rtol=1e-5)
