"""load_network / save_network: every checkpoint layout, prefix and wrapper handling, mismatch
reports, non-strict loading, unreadable and unsafe files, and atomic saving."""

from __future__ import annotations

import errno
import logging
import os
from collections import OrderedDict

import pytest
import torch
from torch import nn

from basicsr.utils import checkpoint
from basicsr.utils.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_network,
    read_training_state,
    save_network,
    unwrap_network,
)
from basicsr.utils.errors import MissingInputError, UserError, WriteError
from basicsr.utils.file_io import save_torch_atomic
from basicsr.utils.option_schema import freeze


def make_net(seed: int = 0, channels: int = 3) -> nn.Module:
    """Conv + BatchNorm: parameters and buffers with distinct names and shapes."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(2, channels, 3), norm=nn.BatchNorm2d(channels)))


def randomised_state(seed: int = 1, channels: int = 3) -> dict[str, torch.Tensor]:
    state = make_net(seed, channels).state_dict()
    state['norm.running_mean'] = torch.randn(channels)
    return state


def assert_loaded(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, state[name], atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('param_key', ['params', 'params_ema'])
def test_loads_the_requested_entry(tmp_path, param_key):
    state, other = randomised_state(1), randomised_state(2)
    path = tmp_path / 'net.pth'
    torch.save({param_key: state, ({'params', 'params_ema'} - {param_key}).pop(): other, 'iter': 5}, path)
    net = make_net()
    assert load_network(net, path, param_key=param_key) is net
    assert_loaded(net, state)


@pytest.mark.parametrize('param_key', ['params', None])
def test_loads_a_bare_state_dict(tmp_path, param_key):
    state = randomised_state()
    torch.save(state, tmp_path / 'bare.pth')
    net = load_network(make_net(), str(tmp_path / 'bare.pth'), param_key=param_key)
    assert_loaded(net, state)


def test_strips_the_module_prefix_of_a_data_parallel_checkpoint(tmp_path):
    state = randomised_state()
    torch.save({'params': {f'module.{k}': v for k, v in state.items()}}, tmp_path / 'ddp.pth')
    assert_loaded(load_network(make_net(), tmp_path / 'ddp.pth'), state)


def test_loads_into_the_network_inside_a_data_parallel_wrapper(tmp_path):
    state = randomised_state()
    torch.save({'params': state}, tmp_path / 'net.pth')
    wrapped = nn.DataParallel(make_net())
    assert load_network(wrapped, tmp_path / 'net.pth') is wrapped
    assert_loaded(wrapped.module, state)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')  # raised by torch internals when torch.compile loads
def test_unwrap_network_looks_through_nested_wrappers_and_compile():
    net = make_net()
    assert unwrap_network(nn.DataParallel(nn.DataParallel(net))) is net
    assert unwrap_network(torch.compile(net)) is net
    assert unwrap_network(net) is net


def test_a_missing_entry_names_the_one_that_exists(tmp_path):
    path = tmp_path / 'ema_only.pth'
    torch.save({'params_ema': randomised_state(), 'iter': 3}, path)
    with pytest.raises(CheckpointError) as info:
        load_network(make_net(), path)
    message = str(info.value)
    assert f"Checkpoint file '{path}' has no key 'params'" in message
    assert 'top-level keys are: params_ema, iter' in message
    assert "It has 'params_ema': set param_key (path.param_key_g in the options) to 'params_ema'" in message


def test_param_key_none_needs_a_bare_state_dict(tmp_path):
    path = tmp_path / 'wrapped.pth'
    torch.save({'params': randomised_state()}, path)
    with pytest.raises(CheckpointError, match=r"is not a bare state dict \(param_key=None\).*to 'params'"):
        load_network(make_net(), path, param_key=None)


def test_an_entry_that_is_not_a_state_dict_is_reported(tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save({'params': {'conv.weight': torch.zeros(1), 'note': 'hello'}}, path)
    with pytest.raises(
        CheckpointError,
        match=r"\(key 'params'\) is not a state dict of tensors \(non-tensor "
        r'entries: note\)',
    ):
        load_network(make_net(), path)


def test_a_checkpoint_that_is_not_a_dict_is_reported(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match='holds a list, not a dict'):
        load_network(make_net(), path)


# ----------------------------------------------------------------------------------------------
# Mismatches
# ----------------------------------------------------------------------------------------------
def test_missing_unexpected_and_wrongly_shaped_keys_are_named(tmp_path):
    state = randomised_state()
    del state['norm.bias']
    state['head.weight'] = torch.zeros(4)
    state['conv.weight'] = torch.zeros(5, 2, 3, 3)
    path = tmp_path / 'bad.pth'
    torch.save({'params': state}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_network(make_net(), path)
    error = info.value
    assert isinstance(error, ValueError)
    message = str(error)
    assert f"Checkpoint '{path}' (key 'params') does not match Sequential" in message
    assert '1 missing (in the network, not in the checkpoint): norm.bias (3,)' in message
    assert '1 unexpected (in the checkpoint, not in the network): head.weight' in message
    assert '1 with a different shape: conv.weight checkpoint (5, 2, 3, 3) vs network (3, 2, 3, 3)' in message
    assert 'strict=False' in message
    assert error.path == str(path)
    assert error.missing == ['norm.bias'] and error.unexpected == ['head.weight']
    assert error.mismatched == [('conv.weight', (5, 2, 3, 3), (3, 2, 3, 3))]


def test_long_key_lists_are_truncated(tmp_path):
    path = tmp_path / 'many.pth'
    torch.save({'params': {**randomised_state(), **{f'extra.{i}': torch.zeros(1) for i in range(25)}}}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_network(make_net(), path)
    message = str(info.value)
    assert '25 unexpected' in message and 'extra.9, ... and 15 more' in message and 'extra.10' not in message


def test_non_strict_loading_takes_matching_entries_and_logs_the_rest(tmp_path, caplog):
    state = randomised_state()
    del state['norm.bias']
    state['head.weight'] = torch.zeros(4)
    state['conv.weight'] = torch.zeros(5, 2, 3, 3)
    torch.save({'params': state}, tmp_path / 'partial.pth')
    net = make_net(seed=7)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger='basicsr.utils.checkpoint'):
        load_network(net, tmp_path / 'partial.pth', strict=False)
    after = net.state_dict()
    for name in ('conv.weight', 'norm.bias'):
        torch.testing.assert_close(after[name], before[name], atol=0, rtol=0)
    for name in ('conv.bias', 'norm.weight', 'norm.running_mean', 'norm.running_var'):
        torch.testing.assert_close(after[name], state[name], atol=0, rtol=0)
    assert 'non-strictly' in caplog.text
    for name in ('norm.bias', 'head.weight', 'conv.weight checkpoint (5, 2, 3, 3) vs network (3, 2, 3, 3)'):
        assert name in caplog.text


# ----------------------------------------------------------------------------------------------
# Unreadable and unsafe files
# ----------------------------------------------------------------------------------------------
def test_a_missing_file_is_a_file_not_found_error_naming_it(tmp_path):
    path = tmp_path / 'nowhere' / 'net.pth'
    with pytest.raises(FileNotFoundError, match=f"Checkpoint file '{path}' does not exist"):
        load_network(make_net(), path)


@pytest.mark.parametrize(
    'content', [b'', b'this is not a checkpoint at all', bytes(range(256)) * 4], ids=['empty', 'text', 'bytes']
)
def test_a_garbage_file_is_a_clear_value_error(tmp_path, content):
    path = tmp_path / 'garbage.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"Checkpoint file '{path}'"):
        load_network(make_net(), path)


class _Payload:
    """Unpickling this would create a marker file: weights_only must refuse to run it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_a_pickle_with_arbitrary_objects_is_refused_without_running_it(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'params': randomised_state(), 'payload': _Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(
        CheckpointError,
        match=r'cannot be loaded safely \(torch.load with weights_only=True '
        r'refused it: Unsupported global: GLOBAL io.open was not an allowed '
        r'global by default.\)',
    ):
        load_network(make_net(), path)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------
def test_save_then_load_round_trip_with_metadata(tmp_path):
    source = nn.DataParallel(make_net(seed=3))
    path = tmp_path / 'models' / 'net_g_10.pth'
    options = freeze({'network_g': {'type': 'EFNet', 'num_heads': [1, 2, 4]}})
    save_network(source, path, extra={'iter': 10, 'options': options})
    saved = torch.load(path, map_location='cpu', weights_only=True)
    assert set(saved) == {'params', 'iter', 'options'}
    assert list(saved['params']) == list(make_net().state_dict())
    assert saved['options'] == {'network_g': {'type': 'EFNet', 'num_heads': [1, 2, 4]}}
    assert type(saved['options']) is dict
    target = load_network(make_net(seed=4), path)
    assert_loaded(target, source.module.state_dict())
    assert os.listdir(path.parent) == ['net_g_10.pth']


def test_save_under_params_ema(tmp_path):
    save_network(make_net(seed=3), tmp_path / 'ema.pth', param_key='params_ema')
    assert set(torch.load(tmp_path / 'ema.pth', weights_only=True)) == {'params_ema'}
    assert_loaded(load_network(make_net(), tmp_path / 'ema.pth', param_key='params_ema'), make_net(seed=3).state_dict())


def test_save_refuses_metadata_that_would_overwrite_the_weights(tmp_path):
    with pytest.raises(ValueError, match="extra must not contain the key 'params'"):
        save_network(make_net(), tmp_path / 'x.pth', extra={'params': 1})
    assert not (tmp_path / 'x.pth').exists()


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / 'net.pth'
    save_network(make_net(seed=1), path)
    old_bytes = path.read_bytes()

    def broken_save(obj, file):
        with open(file, 'wb') as handle:
            handle.write(b'half a checkpoint')
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(checkpoint.torch, 'save', broken_save)
    with pytest.raises(
        WriteError,
        match=rf"cannot write '{path}': No space left on device \[ENOSPC\] \([\d,]+ "
        r'bytes free on its disk\)',
    ):
        save_network(make_net(seed=2), path)
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ['net.pth']


def test_a_save_into_a_folder_below_a_regular_file_is_a_write_error(tmp_path):
    (tmp_path / 'models').write_text('not a folder')
    with pytest.raises(WriteError, match=f"cannot write into '{tmp_path / 'models'}': it exists and is not a folder"):
        save_network(make_net(), tmp_path / 'models' / 'net_g_1.pth')


# ----------------------------------------------------------------------------------------------
# Truncated and corrupt files, training states
# ----------------------------------------------------------------------------------------------
def truncated_copy(source, path, keep: float = 0.5):
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_a_truncated_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path):
    save_network(make_net(), tmp_path / 'net.pth')
    path = truncated_copy(tmp_path / 'net.pth', tmp_path / 'cut.pth')
    with pytest.raises(
        CheckpointError,
        match=rf"Checkpoint file '{path}' is not a readable torch file "
        r'\(RuntimeError: PytorchStreamReader failed reading zip archive.*'
        r'truncated or corrupt',
    ) as info:
        load_network(make_net(), path)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_read_training_state_round_trip_and_named_errors(tmp_path):
    state = {'epoch': 2, 'iter': 8, 'optimizers': [torch.optim.SGD(make_net().parameters(), 0.1).state_dict()]}
    save_torch_atomic(state, tmp_path / '8.state')
    loaded = read_training_state(tmp_path / '8.state')
    assert loaded['iter'] == 8 and loaded['optimizers'][0]['param_groups'][0]['lr'] == 0.1

    cut = truncated_copy(tmp_path / '8.state', tmp_path / '9.state', keep=0.7)
    with pytest.raises(CheckpointError, match=f"Training state file '{cut}' is not a readable torch file"):
        read_training_state(cut)
    torch.save([1, 2], tmp_path / '10.state')
    with pytest.raises(
        CheckpointError,
        match=r"10.state' is not a training state \(expected a dict with an "
        r"integer 'iter', found list\)",
    ):
        read_training_state(tmp_path / '10.state')
    with pytest.raises(
        MissingInputError, match="Training state file '.*11.state' does not exist; check path.resume_state"
    ):
        read_training_state(tmp_path / '11.state')
    torch.save({'iter': 1, 'payload': _Payload(str(tmp_path / 'pwned'))}, tmp_path / '12.state')
    with pytest.raises(CheckpointError, match='cannot be loaded safely'):
        read_training_state(tmp_path / '12.state')
    assert not (tmp_path / 'pwned').exists()
