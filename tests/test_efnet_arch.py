"""EFNet: parity with the reference implementation's outputs, checkpoint names and shapes, parameter
counts from an independent formula, any input size, other configurations, argument checks, and the
registry / build() entry points."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from basicsr.archs import efnet_blocks
from basicsr.archs.arch_util import ChannelLayerNorm, count_parameters, pad_to_multiple
from basicsr.archs.efnet_arch import EFNet
from basicsr.archs.efnet_blocks import EventImageChannelAttention
from basicsr.utils.option_schema import freeze
from basicsr.utils.registry import ARCH_REGISTRY, RegistryError, build

DATA = Path(__file__).resolve().parent / 'data'


@pytest.fixture(scope='module')
def reference():
    """Outputs of the reference EFNet (wf=16) on fixed 64x64 inputs, with its state dict."""
    return torch.load(DATA / 'efnet_reference_small.pt', map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def reference_net(reference):
    net = EFNet(**reference['config']).eval()
    net.load_state_dict(reference['state_dict'], strict=True)
    return net


def tiny_net(seed: int = 0, **kwargs) -> EFNet:
    torch.manual_seed(seed)
    return EFNet(**{'wf': 8, 'num_heads': (1, 2, 4), **kwargs})


def random_inputs(batch: int, height: int, width: int, ev_chn: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        'x': torch.rand(batch, 3, height, width, generator=generator),
        'event': torch.rand(batch, ev_chn, height, width, generator=generator) * 2 - 1,
        'mask': (torch.rand(batch, 1, height, width, generator=generator) > 0.5).float(),
    }


# ----------------------------------------------------------------------------------------------
# Parity with the reference implementation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('with_mask', [True, False])
def test_outputs_match_the_reference_file(reference, reference_net, with_mask):
    inputs = dict(reference['inputs'])
    expected = reference['outputs_with_mask' if with_mask else 'outputs_without_mask']
    if not with_mask:
        del inputs['mask']
    with torch.no_grad():
        outputs = reference_net(**inputs)
    assert isinstance(outputs, list) and len(outputs) == 2
    for out, ref in zip(outputs, expected, strict=True):
        assert out.shape == ref.shape == (1, 3, 64, 64)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_cpu_feed_forward_chunks_give_the_reference_outputs(reference, reference_net, monkeypatch):
    # At 64x64 the feed-forward fits one chunk; force chunks of 50 pixels (uneven last chunk).
    monkeypatch.setattr(efnet_blocks, '_CPU_FFN_CHUNK_ELEMENTS', 50 * 4 * 16)
    with torch.no_grad():
        outputs = reference_net(**reference['inputs'])
    for out, ref in zip(outputs, reference['outputs_with_mask'], strict=True):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_cpu_feed_forward_chunks_give_the_same_gradients(monkeypatch):
    inputs = random_inputs(1, 12, 12)
    grads = []
    for chunk_elements in (efnet_blocks._CPU_FFN_CHUNK_ELEMENTS, 7 * 4 * 8):  # one chunk / chunks of 7 pixels
        monkeypatch.setattr(efnet_blocks, '_CPU_FFN_CHUNK_ELEMENTS', chunk_elements)
        net = tiny_net()
        sum(o.square().sum() for o in net(**inputs)).backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_channels_last_memory_format_gives_the_same_outputs(reference, reference_net):
    net = EFNet(**reference['config']).eval()
    net.load_state_dict(reference['state_dict'])
    net = net.to(memory_format=torch.channels_last)
    inputs = {k: v.contiguous(memory_format=torch.channels_last) for k, v in reference['inputs'].items()}
    with torch.no_grad():
        outputs = net(**inputs)
    for out, ref in zip(outputs, reference['outputs_with_mask'], strict=True):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_default_network_has_the_reference_names_shapes_and_order():
    listed = []
    for line in (DATA / 'efnet_state_dict_keys.txt').read_text().splitlines():
        if line and not line.startswith('#'):
            name, shape = line.split('\t')
            listed.append((name, tuple(json.loads(shape.replace('(', '[').replace(',)', ']').replace(')', ']')))))
    with torch.device('meta'):
        net = EFNet()
    assert [(name, tuple(t.shape)) for name, t in net.state_dict().items()] == listed
    assert len(listed) == 183
    assert count_parameters(net) == 8_466_445
    assert list(net.buffers()) == []


# ----------------------------------------------------------------------------------------------
# Parameter counts from an independent formula
# ----------------------------------------------------------------------------------------------
def conv_params(c_in: int, c_out: int, kernel: int, bias: bool = True) -> int:
    return c_in * c_out * kernel * kernel + (c_out if bias else 0)


def efnet_params(in_chn=3, ev_chn=6, wf=64, depth=3, num_heads=(1, 2, 4)) -> int:
    """Parameter count of EFNet written from the architecture description (the published architecture)."""

    def body(c_in, c):
        return conv_params(c_in, c, 1) + conv_params(c_in, c, 3) + conv_params(c, c, 3)

    def eica(c, heads):
        norms = 3 * 2 * c
        attention = heads + 4 * c * c
        ffn = (4 * c * c + 4 * c) + (4 * c * c + c)
        return norms + attention + ffn

    widths = [wf * 2**i for i in range(depth)]
    inputs = [wf] + widths[:-1]
    total = 2 * conv_params(in_chn, wf, 3) + conv_params(ev_chn, wf, 3)
    for level, (c_in, c) in enumerate(zip(inputs, widths, strict=True)):
        down = conv_params(c, c, 4, bias=False) if level < depth - 1 else 0
        emgc = 4 * conv_params(c, c, 3) if level < depth - 1 else 0
        total += body(c_in, c) + eica(c, num_heads[level]) + down  # stage 1
        total += body(c_in, c) + emgc + down  # stage 2
        total += body(c_in, c) + conv_params(c, c, 1) + down  # event encoder
    for level in range(depth - 1):
        c, c_below = widths[level], widths[level + 1]
        up = c_below * c * 4 + c + body(2 * c, c)
        total += 2 * (up + conv_params(c, c, 3))  # up blocks and skip convs of both stages
    sam = conv_params(wf, wf, 3) + conv_params(wf, in_chn, 3) + conv_params(in_chn, wf, 3)
    return total + sam + conv_params(2 * wf, wf, 1) + conv_params(wf, in_chn, 3)


def test_parameter_formula_reproduces_the_published_counts():
    assert efnet_params() == 8_466_445
    assert efnet_params(wf=16) == 533_773


def test_wf16_network_has_533773_parameters():
    with torch.device('meta'):
        assert count_parameters(EFNet(wf=16)) == 533_773


CONFIGS = [
    {'wf': 8},
    {'wf': 8, 'depth': 2, 'num_heads': (1, 2)},
    {'wf': 8, 'depth': 4, 'num_heads': (1, 2, 4, 8)},
    {'wf': 8, 'num_heads': (2, 2, 2)},
    {'wf': 12, 'depth': 1, 'num_heads': (3,)},
    {'wf': 8, 'in_chn': 1, 'ev_chn': 5, 'num_heads': (1, 2, 4, 8)},
]


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: ','.join(f'{k}={v}' for k, v in c.items()))
def test_other_configurations_run_with_the_expected_parameter_count(config):
    net = EFNet(**config).eval()
    formula_args = {k: v for k, v in config.items() if k in ('in_chn', 'ev_chn', 'wf', 'depth', 'num_heads')}
    assert count_parameters(net) == efnet_params(**formula_args)
    in_chn, ev_chn = config.get('in_chn', 3), config.get('ev_chn', 6)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, in_chn, 20, 28, generator=generator)
    event = torch.rand(2, ev_chn, 20, 28, generator=generator) * 2 - 1
    mask = (torch.rand(2, 1, 20, 28, generator=generator) > 0.5).float()
    with torch.no_grad():
        outputs = net(x, event, mask)
    assert [tuple(o.shape) for o in outputs] == [(2, in_chn, 20, 28)] * 2
    assert all(torch.isfinite(o).all() for o in outputs)


# ----------------------------------------------------------------------------------------------
# Any input size
# ----------------------------------------------------------------------------------------------
def padded_then_cropped(net: EFNet, inputs: dict, multiple: int, mode: str) -> list[torch.Tensor]:
    """The network run on inputs padded by hand (bottom/right) to a multiple, outputs cropped back."""
    height, width = inputs['x'].shape[-2:]
    pad = (0, -width % multiple, 0, -height % multiple)
    padded = {k: F.pad(v, pad, mode=mode) for k, v in inputs.items()}
    assert all(v.shape[-1] % multiple == 0 and v.shape[-2] % multiple == 0 for v in padded.values())
    return [out[..., :height, :width] for out in net(**padded)]


@pytest.mark.parametrize(
    ('height', 'width', 'mode'),
    [
        (30, 45, 'reflect'),
        (5, 6, 'reflect'),
        (1, 1, 'replicate'),
        (2, 7, 'replicate'),
        (9, 3, 'reflect'),
        (9, 2, 'replicate'),
    ],
)
def test_any_size_is_padded_and_cropped_back(height, width, mode):
    net = tiny_net().eval()
    inputs = random_inputs(1, height, width)
    with torch.no_grad():
        outputs = net(**inputs)
        expected = padded_then_cropped(net, inputs, 4, mode)
    assert [tuple(o.shape) for o in outputs] == [(1, 3, height, width)] * 2
    for out, ref in zip(outputs, expected, strict=True):
        torch.testing.assert_close(out, ref, atol=0, rtol=0)


def test_depth4_pads_to_a_multiple_of_8():
    net = tiny_net(depth=4, num_heads=(1, 1, 1, 1)).eval()
    inputs = random_inputs(1, 12, 21)
    with torch.no_grad():
        outputs = net(**inputs)
        expected = padded_then_cropped(net, inputs, 8, 'reflect')
    for out, ref in zip(outputs, expected, strict=True):
        torch.testing.assert_close(out, ref, atol=0, rtol=0)


def test_pad_to_multiple_leaves_multiples_untouched_and_passes_none():
    x, mask = torch.rand(1, 3, 8, 12), torch.rand(1, 1, 8, 12)
    padded = pad_to_multiple([x, None, mask], 4)
    assert padded[0] is x and padded[1] is None and padded[2] is mask
    reflected = pad_to_multiple([torch.arange(9.0).view(1, 1, 3, 3)], 4)[0]
    assert reflected[0, 0].tolist() == [[0, 1, 2, 1], [3, 4, 5, 4], [6, 7, 8, 7], [3, 4, 5, 4]]
    replicated = pad_to_multiple([torch.arange(3.0).view(1, 1, 1, 3)], 4)[0]  # one row cannot be reflected
    assert replicated[0, 0].tolist() == [[0, 1, 2, 2]] * 4


def test_gradients_reach_every_parameter_with_a_mask_at_an_odd_size():
    net = tiny_net()
    outputs = net(**random_inputs(1, 13, 18))
    (outputs[0].square().mean() + outputs[1].square().mean()).backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_without_a_mask_the_emgc_convolutions_get_no_gradient():
    net = tiny_net()
    inputs = random_inputs(1, 16, 16)
    del inputs['mask']
    sum(o.sum() for o in net(**inputs)).backward()
    no_grad = {n.rsplit('.', 1)[0] for n, p in net.named_parameters() if p.grad is None}
    assert no_grad == {
        f'down_path_2.{level}.emgc_{kind}' for level in (0, 1) for kind in ('enc', 'dec', 'enc_mask', 'dec_mask')
    }


def test_zero_relu_slope_trains():
    net = tiny_net(relu_slope=0.0)
    sum(o.sum() for o in net(**random_inputs(1, 8, 8))).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_a_batch_equals_its_samples_run_one_by_one():
    net = tiny_net().eval()
    inputs = random_inputs(2, 14, 10)
    with torch.no_grad():
        batched = net(**inputs)
        singles = [net(**{k: v[i : i + 1] for k, v in inputs.items()}) for i in range(2)]
    for stage in range(2):
        torch.testing.assert_close(batched[stage], torch.cat([s[stage] for s in singles]), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# Blocks against their formulas
# ----------------------------------------------------------------------------------------------
def test_channel_layer_norm_normalises_each_pixel_over_channels():
    norm = ChannelLayerNorm(5)
    with torch.no_grad():
        norm.body.weight.copy_(torch.arange(1.0, 6.0))
        norm.body.bias.copy_(torch.full((5,), 0.5))
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64).float()
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * torch.arange(1.0, 6.0).view(1, 5, 1, 1) + 0.5
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=0)


def test_eica_matches_its_formula():
    torch.manual_seed(3)
    block = EventImageChannelAttention(8, num_heads=2)
    with torch.no_grad():
        block.attn.temperature.copy_(torch.tensor([0.5, 2.0]).view(2, 1, 1))
    image, event = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5)

    def layer_norm(t, module):  # over channels of (B, C, H, W)
        mean = t.mean(1, keepdim=True)
        var = t.var(1, keepdim=True, unbiased=False)
        return (t - mean) / torch.sqrt(var + 1e-5) * module.weight.view(1, -1, 1, 1) + module.bias.view(1, -1, 1, 1)

    attn = block.attn
    q = F.conv2d(layer_norm(image, block.norm1_image.body), attn.q.weight).reshape(2, 2, 4, 15)
    k = F.conv2d(layer_norm(event, block.norm1_event.body), attn.k.weight).reshape(2, 2, 4, 15)
    v = F.conv2d(layer_norm(event, block.norm1_event.body), attn.v.weight).reshape(2, 2, 4, 15)
    weights = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * attn.temperature).softmax(-1)
    fused = image + F.conv2d((weights @ v).reshape(2, 8, 3, 5), attn.project_out.weight)
    hidden = F.gelu(
        F.conv2d(layer_norm(fused, block.norm2), block.ffn.fc1.weight[:, :, None, None], block.ffn.fc1.bias)
    )
    expected = fused + F.conv2d(hidden, block.ffn.fc2.weight[:, :, None, None], block.ffn.fc2.bias)
    with torch.no_grad():
        torch.testing.assert_close(block(image, event), expected, atol=1e-5, rtol=0)


def test_eica_keeps_the_memory_format_and_gives_the_same_gradients_in_channels_last():
    torch.manual_seed(4)
    block = EventImageChannelAttention(8, num_heads=2)
    image, event = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 5, 6)
    grads = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        block.zero_grad()
        x = image.clone(memory_format=memory_format).requires_grad_()
        y = event.clone(memory_format=memory_format).requires_grad_()
        out = block(x, y)
        assert out.is_contiguous(memory_format=memory_format)
        (out * torch.arange(out.numel()).view(out.shape).sin()).sum().backward()
        grads.append([x.grad, y.grad] + [p.grad.clone() for p in block.parameters()])
    for plain, channels_last in zip(*grads, strict=True):
        torch.testing.assert_close(channels_last, plain, atol=1e-5, rtol=1e-5)


def test_eica_under_bf16_autocast_stays_close_to_float32():
    torch.manual_seed(5)
    block = EventImageChannelAttention(16, num_heads=2)
    image, event = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        expected = block(image, event)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = block(image.bfloat16(), event.bfloat16())
    assert out.shape == expected.shape
    torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0.05)


# ----------------------------------------------------------------------------------------------
# Argument and input checks
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'fuse_before_downsample': False}, 'supports only fuse_before_downsample=True'),
        ({'num_heads': (1, 2)}, 'num_heads needs at least depth=3 entries'),
        ({'depth': 4}, 'num_heads needs at least depth=4 entries'),
        ({'num_heads': (1, 3, 4)}, 'level 1 has wf * 2**1 = 128 channels, which num_heads[1] = 3 does not divide'),
        ({'num_heads': (1, 0, 4)}, 'num_heads[1] must be a positive integer'),
        ({'num_heads': '124'}, 'num_heads must be a list of positive integers'),
        ({'wf': 0}, 'wf must be a positive integer'),
        ({'wf': 16.0}, 'wf must be a positive integer'),
        ({'depth': 0}, 'depth must be a positive integer'),
        ({'in_chn': True}, 'in_chn must be a positive integer'),
        ({'relu_slope': -0.1}, 'relu_slope must be a finite number >= 0'),
        ({'relu_slope': float('nan')}, 'relu_slope must be a finite number >= 0'),
    ],
)
def test_bad_constructor_arguments_are_rejected_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message.replace('*', r'\*').replace('[', r'\[').replace(']', r'\]')):
        EFNet(**kwargs)


def test_fuse_before_downsample_message_says_why():
    with pytest.raises(ValueError) as info:
        EFNet(fuse_before_downsample=False)
    assert 'reference implementation crashes' in str(info.value)


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        ({'x': torch.rand(1, 4, 8, 8)}, r'x of shape \(B, 3, H, W\)'),
        ({'x': torch.rand(3, 8, 8)}, r'x of shape \(B, 3, H, W\)'),
        ({'event': torch.rand(1, 5, 8, 8)}, r'event of shape \(B, ev_chn, H, W\) = \(1, 6, 8, 8\)'),
        ({'event': torch.rand(1, 6, 8, 9)}, 'ev_chn in network_g'),
        ({'mask': torch.rand(1, 2, 8, 8)}, r'mask of shape \(B, 1, H, W\) = \(1, 1, 8, 8\)'),
        ({'mask': torch.ones(1, 1, 8, 8, dtype=torch.bool)}, 'floating-point mask'),
    ],
)
def test_bad_inputs_are_rejected_with_a_clear_message(change, message):
    inputs = {**random_inputs(1, 8, 8), **change}
    with pytest.raises(ValueError, match=message):
        tiny_net()(**inputs)


def test_eica_rejects_unequal_shapes():
    with pytest.raises(ValueError, match='equal shape'):
        EventImageChannelAttention(4, 1)(torch.rand(1, 4, 2, 2), torch.rand(1, 4, 2, 3))


# ----------------------------------------------------------------------------------------------
# Registry and build()
# ----------------------------------------------------------------------------------------------
def test_registry_finds_efnet():
    assert ARCH_REGISTRY.get('EFNet') is EFNet


def test_build_network_from_read_only_options():
    opt = freeze({'type': 'EFNet', 'wf': 8, 'num_heads': [1, 2, 4]})
    net = build(ARCH_REGISTRY, opt)
    assert isinstance(net, EFNet) and net.num_heads == (1, 2, 4)
    assert count_parameters(net) == efnet_params(wf=8)
    assert dict(opt) == {'type': 'EFNet', 'wf': 8, 'num_heads': (1, 2, 4)}


def test_build_network_errors():
    with pytest.raises(RegistryError, match="Did you mean 'EFNet'"):
        build(ARCH_REGISTRY, {'type': 'EFNett'})
    with pytest.raises(TypeError, match='wff'):  # option files are validated before building: see test_options.py
        build(ARCH_REGISTRY, {'type': 'EFNet', 'wff': 8})


def test_importing_basicsr_archs_does_not_import_the_architectures(run_python):
    script = textwrap.dedent("""
        import sys
        import basicsr.archs
        from basicsr.utils.registry import ARCH_REGISTRY
        print('basicsr.archs.efnet_arch' in sys.modules)
        ARCH_REGISTRY.get('EFNet')
        print('basicsr.archs.efnet_arch' in sys.modules)
    """)
    result = run_python('-c', script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['False', 'True']
