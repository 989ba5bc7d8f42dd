"""Option files: loading, validation messages, overrides, debug mode, cross-field rules, paths, the CLI.

The official option files of the published EFNet code are in tests/data/official_options/.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml

from basicsr.engine.cli import build_arg_parser, parse_options
from basicsr.engine.context import ExperimentPaths
from basicsr.engine.options import (
    OptionsError,
    apply_overrides,
    dump_options,
    load_options,
    load_yaml,
    parse_yaml_value,
)
from basicsr.test import main as evaluate_main
from basicsr.train import main as train_main
from basicsr.utils.errors import InvalidInputError, MissingInputError
from basicsr.utils.option_schema import FrozenDict, freeze

OFFICIAL = Path(__file__).resolve().parent / 'data' / 'official_options'
REPO_OPTIONS = Path(__file__).resolve().parents[1] / 'options'


def training_tree(dataroot: Path) -> dict:
    """A small, valid training option tree (CPU, tiny EFNet)."""
    dataset = {'type': 'H5ImageDataset', 'dataroot': str(dataroot), 'return_mask': True, 'use_mask': True}
    return {
        'name': 'unit_efnet',
        'model_type': 'ImageEventRestorationModel',
        'num_gpu': 0,
        'manual_seed': 10,
        'datasets': {
            'train': {**dataset, 'name': 'tiny-train', 'crop_size': 8, 'use_flip': True, 'batch_size_per_gpu': 2},
            'val': {**dataset, 'name': 'tiny-val'},
        },
        'network_g': {'type': 'EFNet', 'wf': 8},
        'train': {
            'optim_g': {'type': 'AdamW', 'lr': 2e-4},
            'total_iter': 20,
            'pixel_opt': {'type': 'PSNRLoss', 'loss_weight': 0.5},
        },
        'val': {'val_freq': 10, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}},
    }


def inference_tree(dataroot: Path) -> dict:
    """A small, valid testing option tree."""
    tree = training_tree(dataroot)
    del tree['train']
    tree['datasets'] = {'test': {**tree['datasets']['val'], 'name': 'tiny-test'}}
    return tree


@pytest.fixture
def dataroot(tmp_path) -> Path:
    folder = tmp_path / 'h5'
    folder.mkdir()
    return folder


@pytest.fixture
def write_options(tmp_path):
    """``write_options(tree or text, name='opt.yml') -> path`` of a YAML file in tmp_path."""

    def write(content, name: str = 'opt.yml') -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


def problems_of(error: pytest.ExceptionInfo) -> list[str]:
    """The '  - ...' problem lines of an OptionsError message."""
    return [line[4:] for line in str(error.value).splitlines() if line.startswith('  - ')]


# ---------------------------------------------------------------------------------------------- valid files
def test_a_valid_file_loads_frozen_with_defaults(write_options, dataroot):
    opt = load_options(write_options(training_tree(dataroot)), is_train=True)
    assert isinstance(opt, FrozenDict)
    assert opt['datasets']['train']['phase'] == 'train' and opt['datasets']['val']['phase'] == 'val'
    assert opt['datasets']['train']['num_worker_per_gpu'] == 0 and opt['datasets']['val']['batch_size_per_gpu'] == 1
    assert opt['network_g'] == {
        'type': 'EFNet',
        'wf': 8,
        'in_chn': 3,
        'ev_chn': 6,
        'depth': 3,
        'fuse_before_downsample': True,
        'relu_slope': 0.2,
        'num_heads': (1, 2, 4),
    }
    assert opt['logger'] == {
        'print_freq': 100,
        'save_checkpoint_freq': 5000,
        'keep_checkpoints': None,
        'use_tb_logger': True,
        'wandb': {'project': None, 'resume_id': None},
    }
    assert opt['path']['root'] is None and opt['path']['param_key_g'] is None and opt['path']['param_key'] is None
    assert opt['dist_params'] == {'backend': 'nccl', 'port': 29500, 'timeout': 600.0}
    assert opt['scale'] == 1 and opt['dataset_name'] is None
    with pytest.raises(TypeError, match='read-only'):
        opt['datasets']['train']['crop_size'] = 4


def test_a_valid_test_file_needs_no_train_section(write_options, dataroot):
    opt = load_options(write_options(inference_tree(dataroot)), is_train=False)
    assert opt['datasets']['test']['phase'] == 'test'


def test_dump_options_round_trips(write_options, dataroot):
    opt = load_options(write_options(training_tree(dataroot)))
    assert freeze(yaml.safe_load(dump_options(opt))) == opt


# ---------------------------------------------------------------------------------------------- problems
def test_unknown_key_names_the_file_the_key_path_and_the_closest_key(write_options, dataroot):
    tree = training_tree(dataroot)
    tree['val']['val_frq'] = tree['val'].pop('val_freq')
    path = write_options(tree)
    with pytest.raises(OptionsError) as info:
        load_options(path)
    assert str(info.value).startswith(f"Invalid option file '{path}' (1 problem):\n")
    assert problems_of(info) == [
        (
            "val.val_frq: unknown key 'val_frq'; did you mean 'val_freq'? Known keys here: crop_size, grid_overlap, "
            'grids, max_minibatch, metrics, pbar, rgb2bgr, save_img, use_image, val_freq.'
        )
    ]


def test_unknown_key_inside_a_component(write_options, dataroot):
    tree = training_tree(dataroot)
    tree['datasets']['train']['retrun_mask'] = tree['datasets']['train'].pop('return_mask')
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree))
    found = problems_of(info)
    assert found[0].startswith(
        "datasets.train.retrun_mask: unknown key 'retrun_mask' for dataset H5ImageDataset; "
        "did you mean 'return_mask'? Known keys here: "
    )
    # return_mask now defaults to false, which use_mask: true cannot work with
    assert found[1:] == ['datasets.train.use_mask: use_mask: true needs return_mask: true']


def test_wrong_type(write_options, dataroot):
    tree = training_tree(dataroot)
    tree['train']['total_iter'] = 'many'
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree))
    assert problems_of(info) == ["train.total_iter: must be an integer, got str 'many'"]


def test_missing_required_key(write_options, dataroot):
    tree = training_tree(dataroot)
    del tree['name']
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree))
    assert problems_of(info) == [
        'name: required key is missing (experiment name; folders experiments/<name>, results/<name>)'
    ]


def test_every_problem_is_reported_at_once(write_options, dataroot):
    tree = training_tree(dataroot)
    tree['nmae'] = tree.pop('name')
    tree['manual_seed'] = 1.5
    tree['network_g']['type'] = 'EFnet'
    tree['datasets']['val']['batch_size_per_gpu'] = 0
    path = write_options(tree)
    with pytest.raises(OptionsError) as info:
        load_options(path)
    assert f"Invalid option file '{path}' (5 problems):" in str(info.value)
    found = problems_of(info)
    assert found[0] == 'manual_seed: must be an integer or null (~), got float 1.5'
    assert found[1] == 'datasets.val.batch_size_per_gpu: must be > 0, got 0'
    assert found[2].startswith("network_g.type: No arch named 'EFnet' is registered. Known arch names: ")
    assert found[2].endswith("Did you mean 'EFNet'?")
    assert found[3].startswith("nmae: unknown key 'nmae'; did you mean 'name'? Known keys here: dataset_name, ")
    assert found[4].startswith('name: required key is missing')


def test_unregistered_model_type_gives_the_closest_name(write_options, dataroot):
    tree = training_tree(dataroot)
    tree['model_type'] = 'ImageEventRestorationModle'
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree))
    (found,) = problems_of(info)
    assert found.startswith("model_type: no model named 'ImageEventRestorationModle' is registered (known: ")
    assert found.endswith("; did you mean 'ImageEventRestorationModel'?")


def test_the_input_file_is_not_changed(write_options, dataroot):
    path = write_options(training_tree(dataroot))
    before = path.read_text()
    load_options(path, overrides=['train:total_iter=5'], debug=True)
    assert path.read_text() == before


# ---------------------------------------------------------------------------------------------- YAML reading
def test_duplicated_keys_are_rejected_with_line_numbers(write_options):
    path = write_options('name: a\nmodel_type: X\nname: b\n')
    with pytest.raises(OptionsError) as info:
        load_options(path)
    text = str(info.value)
    assert f"Option file '{path}' is not valid YAML" in text
    assert "duplicated key 'name' (first at line 1)" in text
    assert 'line 3, column 1' in text


def test_nested_duplicated_keys_are_rejected(write_options):
    path = write_options('train:\n  total_iter: 5\n  optim_g: ~\n  total_iter: 6\n')
    with pytest.raises(OptionsError, match=r"duplicated key 'total_iter' \(first at line 2\)(.|\n)*line 4"):
        load_yaml(path)


def test_invalid_yaml_gives_the_line(write_options):
    path = write_options('name: [unclosed\nscale: 1\n')
    with pytest.raises(OptionsError, match=re.escape(f"Option file '{path}' is not valid YAML:") + '(.|\n)*line'):
        load_options(path)


def test_python_tags_are_not_constructed(write_options):
    path = write_options('name: !!python/object/apply:os.getcwd []\n')
    with pytest.raises(OptionsError, match='is not valid YAML'):
        load_yaml(path)


def test_a_missing_file(tmp_path):
    path = tmp_path / 'nope.yml'
    with pytest.raises(FileNotFoundError, match=re.escape(f"Option file '{path}' does not exist")):
        load_options(path)


def test_top_level_must_be_a_mapping(write_options):
    path = write_options('- a\n- b\n')
    with pytest.raises(
        OptionsError, match=re.escape(f"Option file '{path}' must hold a mapping of keys at the top level, got list")
    ):
        load_options(path)


def test_exponents_without_a_dot_are_floats(write_options):
    path = write_options('a: 1e-4\nb: 5e4\nc: -2.5E+3\nd: 10\ne: 1_000\nf: .5\ng: 1e4x\n')
    assert load_yaml(path) == {'a': 1e-4, 'b': 5e4, 'c': -2500.0, 'd': 10, 'e': 1000, 'f': 0.5, 'g': '1e4x'}
    assert [type(v) for v in load_yaml(path).values()] == [float, float, float, int, int, float, str]


def test_yaml_floats_reach_int_keys_as_ints(write_options, dataroot):
    tree = training_tree(dataroot)
    text = yaml.safe_dump(tree).replace('val_freq: 10', 'val_freq: 5e4').replace('lr: 0.0002', 'lr: 1e-4')
    opt = load_options(write_options(text))
    assert opt['val']['val_freq'] == 50000 and type(opt['val']['val_freq']) is int
    assert opt['train']['optim_g']['lr'] == 1e-4


# ---------------------------------------------------------------------------------------------- overrides
@pytest.mark.parametrize(
    ('text', 'value'),
    [
        ('5', 5),
        ('2e-4', 2e-4),
        ('true', True),
        ('~', None),
        ('null', None),
        ('[1, 2]', [1, 2]),
        ('abc', 'abc'),
        ("__import__('os')", "__import__('os')"),
        ('!!python/object/apply:os.getcwd []', '!!python/object/apply:os.getcwd []'),
        ('[unclosed', '[unclosed'),
    ],
)
def test_override_values_are_yaml_literals_never_evaluated(text, value):
    assert parse_yaml_value(text) == value


def test_overrides_are_applied_before_validation(write_options, dataroot):
    overrides = [
        'train:total_iter=100',
        'train:optim_g:lr=1e-5',
        'val:grids=true',
        'val:crop_size=64',
        "name=__import__('os')",
        'logger:wandb:project=demo',
        'num_gpu=auto',
        'train:optim_g:betas=[0.5, 0.9]',
    ]
    opt = load_options(write_options(training_tree(dataroot)), overrides=overrides)
    assert opt['train']['total_iter'] == 100 and opt['train']['optim_g']['lr'] == 1e-5
    assert opt['val']['grids'] is True and opt['val']['crop_size'] == 64
    assert opt['name'] == "__import__('os')"
    assert opt['logger']['wandb']['project'] == 'demo'
    assert opt['num_gpu'] == 'auto'
    assert opt['train']['optim_g']['betas'] == (0.5, 0.9)


def test_overridden_keys_are_validated(write_options, dataroot):
    with pytest.raises(OptionsError) as info:
        load_options(write_options(training_tree(dataroot)), overrides=['train:total_iters=5', 'scale=x'])
    found = problems_of(info)
    assert found[0].startswith("train.total_iters: unknown key 'total_iters'; did you mean 'total_iter'?")
    assert found[1:] == ["scale: must be an integer, got str 'x'"]


def test_malformed_overrides_are_rejected_together(write_options, dataroot):
    path = write_options(training_tree(dataroot))
    with pytest.raises(OptionsError) as info:
        load_options(path, overrides=['train:total_iter', '=3', 'train::lr=1', 'name=ok'])
    assert str(info.value).startswith(f"Invalid option file '{path}' (3 problems):")
    assert problems_of(info) == [
        f"--force_yml {item}: expected 'a:b:c=value' (keys joined by ':', then '=')"
        for item in ('train:total_iter', '=3', 'train::lr=1')
    ]


def test_apply_overrides_copies_its_input():
    tree = {'train': {'total_iter': 5}}
    before = copy.deepcopy(tree)
    assert apply_overrides(tree, ['train:total_iter=6', 'val:val_freq=2'], 'x.yml') == {
        'train': {'total_iter': 6},
        'val': {'val_freq': 2},
    }
    assert tree == before


# ---------------------------------------------------------------------------------------------- debug
DEBUG_FREQUENCIES = {'val_freq': 8, 'print_freq': 1, 'save_checkpoint_freq': 8, 'use_tb_logger': False}


def frequencies(opt) -> dict:
    return {
        'val_freq': opt['val']['val_freq'],
        'print_freq': opt['logger']['print_freq'],
        'save_checkpoint_freq': opt['logger']['save_checkpoint_freq'],
        'use_tb_logger': opt['logger']['use_tb_logger'],
    }


def test_debug_flag_shortens_frequencies_and_prefixes_the_name(write_options, dataroot):
    opt = load_options(write_options(training_tree(dataroot)), debug=True)
    assert frequencies(opt) == DEBUG_FREQUENCIES
    assert opt['name'] == 'debug_unit_efnet'


def test_a_name_containing_debug_acts_like_the_flag(write_options, dataroot):
    tree = training_tree(dataroot)
    tree['name'] = 'efnet_debug_run'
    opt = load_options(write_options(tree))
    assert frequencies(opt) == DEBUG_FREQUENCIES
    assert opt['name'] == 'efnet_debug_run'


def test_debug_flag_does_not_prefix_a_debug_name_twice(write_options, dataroot):
    tree = training_tree(dataroot)
    tree['name'] = 'debug_efnet'
    assert load_options(write_options(tree), debug=True)['name'] == 'debug_efnet'


def test_without_debug_the_frequencies_are_kept(write_options, dataroot):
    opt = load_options(write_options(training_tree(dataroot)))
    assert frequencies(opt) == {'val_freq': 10, 'print_freq': 100, 'save_checkpoint_freq': 5000, 'use_tb_logger': True}


# ---------------------------------------------------------------------------------------------- num_gpu
@pytest.mark.parametrize(('value', 'expected'), [(None, 'auto'), ('auto', 'auto'), (0, 0), (4, 4), (2.0, 2)])
def test_num_gpu_accepted(write_options, dataroot, value, expected):
    tree = training_tree(dataroot)
    if value is None:
        del tree['num_gpu']
    else:
        tree['num_gpu'] = value
    assert load_options(write_options(tree))['num_gpu'] == expected


@pytest.mark.parametrize(
    ('value', 'message'),
    [
        (-1, "num_gpu: must be 'auto' or an integer >= 0 (0 = CPU), got -1"),
        ('all', "num_gpu: must be 'auto' or an integer >= 0 (0 = CPU), got 'all'"),
        (True, 'num_gpu: must be an integer or a string, got bool True'),
    ],
)
def test_num_gpu_rejected(write_options, dataroot, value, message):
    tree = training_tree(dataroot)
    tree['num_gpu'] = value
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree))
    assert problems_of(info) == [message]


# ---------------------------------------------------------------------------------------------- cross-field rules
def test_training_needs_a_train_set_and_the_training_keys(write_options, dataroot):
    tree = training_tree(dataroot)
    del tree['datasets']['train']
    tree['train'] = {'warmup_iter': 0}
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree), is_train=True)
    assert problems_of(info) == [
        'datasets.train: training needs a datasets.train section',
        'train.optim_g: required key is missing (needed for training)',
        'train.total_iter: required key is missing (needed for training)',
        'train.pixel_opt: required key is missing (needed for training)',
    ]


def test_testing_needs_a_test_or_val_set(write_options, dataroot):
    tree = training_tree(dataroot)
    del tree['datasets']['val']
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree), is_train=False)
    assert problems_of(info) == ['datasets: testing needs at least one datasets.test (or val) section']


def test_a_val_set_is_enough_for_testing(write_options, dataroot):
    tree = training_tree(dataroot)
    del tree['datasets']['train'], tree['train']
    assert load_options(write_options(tree), is_train=False)['datasets']['val']['phase'] == 'val'


def test_dataset_keys_must_be_train_val_or_test(write_options, dataroot):
    tree = training_tree(dataroot)
    tree['datasets']['validation'] = tree['datasets'].pop('val')
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree))
    assert problems_of(info) == [
        "datasets.validation: data set keys must be train, val or test, or start with 'val_' / 'test_' (e.g. val_2)"
    ]


def test_numbered_data_sets_get_their_phase(write_options, dataroot):
    tree = inference_tree(dataroot)
    tree['datasets']['test_2'] = {**tree['datasets']['test'], 'name': 'second'}
    tree['datasets']['val_reblur'] = {**tree['datasets']['test'], 'name': 'third'}
    opt = load_options(write_options(tree), is_train=False)
    assert {key: d['phase'] for key, d in opt['datasets'].items()} == {
        'test': 'test',
        'test_2': 'test',
        'val_reblur': 'val',
    }


def test_an_explicit_phase_is_checked(write_options, dataroot):
    tree = inference_tree(dataroot)
    tree['datasets']['test']['phase'] = 'tset'
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree), is_train=False)
    assert problems_of(info) == [
        "datasets.test.phase: must be one of train, val, test, got 'tset'; did you mean 'test'?"
    ]


def test_use_mask_needs_return_mask(write_options, dataroot):
    tree = training_tree(dataroot)
    tree['datasets']['train']['return_mask'] = False
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree))
    assert problems_of(info) == ['datasets.train.use_mask: use_mask: true needs return_mask: true']


def test_grids_need_a_crop_size(write_options, dataroot):
    tree = training_tree(dataroot)
    tree['val']['grids'] = True
    with pytest.raises(OptionsError) as info:
        load_options(write_options(tree))
    assert problems_of(info) == ['val.crop_size: val.grids: true needs the tile size val.crop_size']
    tree['val']['crop_size'] = 64
    assert load_options(write_options(tree))['val']['grids'] is True


def raw_event_tree(dataroot: Path, **dataset_keys) -> dict:
    tree = inference_tree(dataroot)
    tree['datasets']['test'] = {'name': 'raw', 'type': 'RawEventDataset', 'dataroot': str(dataroot), **dataset_keys}
    return tree


@pytest.mark.parametrize(
    ('dataset_keys', 'ev_chn'), [({}, None), ({'num_bins': 4}, 4), ({'num_bins': 6, 'keep_middle': True}, 7)]
)
def test_num_bins_and_ev_chn_are_compared_at_start_up_not_at_load(write_options, dataroot, dataset_keys, ev_chn):
    tree = raw_event_tree(dataroot, **dataset_keys)
    if ev_chn is not None:
        tree['network_g']['ev_chn'] = ev_chn
    assert load_options(write_options(tree), is_train=False)['datasets']['test']['phase'] == 'test'
    tree['network_g']['ev_chn'] = 5  # a mismatch is found when the data set is built (test_model.py)
    assert load_options(write_options(tree), is_train=False)['network_g']['ev_chn'] == 5


# ---------------------------------------------------------------------------------------------- paths
def test_experiment_paths_for_training(tmp_path):
    opt = freeze({'name': 'exp', 'path': {'root': str(tmp_path)}})
    paths = ExperimentPaths.derive(opt, is_train=True)
    root = tmp_path.resolve()
    assert paths.root == root
    assert paths.experiments_root == root / 'experiments' / 'exp'
    assert paths.models == root / 'experiments' / 'exp' / 'models'
    assert paths.training_states == root / 'experiments' / 'exp' / 'training_states'
    assert paths.visualization == root / 'experiments' / 'exp' / 'visualization'
    assert paths.log == root / 'experiments' / 'exp'
    assert paths.tb_logger == root / 'tb_logger' / 'exp'
    assert paths.results_root == root / 'results' / 'exp'


def test_experiment_paths_for_testing(tmp_path):
    opt = freeze({'name': 'exp_test', 'path': {'root': str(tmp_path)}})
    paths = ExperimentPaths.derive(opt, is_train=False)
    root = tmp_path.resolve()
    assert paths.results_root == root / 'results' / 'exp_test'
    assert paths.visualization == root / 'results' / 'exp_test' / 'visualization'
    assert paths.log == root / 'results' / 'exp_test'


def test_experiment_paths_are_absolute_even_for_a_relative_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = ExperimentPaths.derive(freeze({'name': 'e', 'path': {'root': 'runs'}}), is_train=True)
    assert paths.root == tmp_path.resolve() / 'runs' and paths.models.is_absolute()


# ---------------------------------------------------------------------------------------------- command line
def test_argument_parser_defaults():
    args = build_arg_parser(True).parse_args(['-opt', 'x.yml'])
    assert (args.opt, args.launcher, args.auto_resume, args.debug, args.local_rank, args.force_yml) == (
        'x.yml',
        'none',
        False,
        False,
        0,
        [],
    )


@pytest.mark.parametrize('flag', ['--local_rank', '--local-rank'])
def test_both_spellings_of_local_rank(flag):
    args = build_arg_parser(True).parse_args(['-opt', 'x.yml', f'{flag}=3'])
    assert args.local_rank == 3
    args = build_arg_parser(False).parse_args(['--opt', 'x.yml', flag, '2'])
    assert args.local_rank == 2


@pytest.mark.parametrize('launcher', ['none', 'pytorch', 'slurm'])
def test_launchers(launcher):
    assert build_arg_parser(True).parse_args(['-opt', 'x.yml', '--launcher', launcher]).launcher == launcher


def test_unknown_launcher_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        build_arg_parser(True).parse_args(['-opt', 'x.yml', '--launcher', 'mpi'])
    assert info.value.code == 2
    assert "invalid choice: 'mpi'" in capsys.readouterr().err


def test_opt_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        build_arg_parser(False).parse_args([])
    assert info.value.code == 2
    assert '-opt' in capsys.readouterr().err


def test_parse_options_single_process(write_options, dataroot, tmp_path, monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    tree = training_tree(dataroot)
    tree['path'] = {'root': str(tmp_path / 'runs')}
    path = write_options(tree)
    opt, ctx = parse_options(
        True,
        [
            '-opt',
            str(path),
            '--auto_resume',
            '--debug',
            '--local-rank',
            '3',
            '--force_yml',
            'train:total_iter=7',
            'manual_seed=3',
        ],
    )
    assert opt['name'] == 'debug_unit_efnet' and opt['train']['total_iter'] == 7 and opt['manual_seed'] == 3
    assert frequencies(opt) == DEBUG_FREQUENCIES
    assert ctx.opt_path == path and ctx.is_train is True and ctx.launcher == 'none' and ctx.dist is False
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main) == (0, 1, 3, True)
    assert ctx.auto_resume is True and ctx.debug is True
    assert ctx.overrides == ('train:total_iter=7', 'manual_seed=3')
    assert ctx.device == torch.device('cpu')
    assert ctx.paths.models == (tmp_path / 'runs').resolve() / 'experiments' / 'debug_unit_efnet' / 'models'


def test_local_rank_from_the_environment_wins(write_options, dataroot, monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '5')
    _, ctx = parse_options(False, ['-opt', str(write_options(inference_tree(dataroot))), '--local_rank', '1'])
    assert ctx.local_rank == 5 and ctx.is_train is False and ctx.auto_resume is False


def test_options_error_is_an_invalid_input_error():
    assert issubclass(OptionsError, InvalidInputError) and issubclass(OptionsError, ValueError)


def test_train_main_exits_with_status_2_on_invalid_options(write_options, capsys):
    path = write_options('name: broken\nmodel_typ: ImageEventRestorationModel\n')
    with pytest.raises(OptionsError):
        parse_options(True, ['-opt', str(path)])
    with pytest.raises(SystemExit) as info:
        train_main(['-opt', str(path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Invalid option file '{path}'")
    assert "model_typ: unknown key 'model_typ'; did you mean 'model_type'?" in err


def test_evaluate_main_exits_with_status_2_on_a_missing_file(tmp_path, capsys):
    with pytest.raises(MissingInputError):
        parse_options(False, ['-opt', str(tmp_path / 'missing.yml')])
    with pytest.raises(SystemExit) as info:
        evaluate_main(['-opt', str(tmp_path / 'missing.yml')])
    assert info.value.code == 2
    assert 'missing.yml' in capsys.readouterr().err


@pytest.mark.parametrize('script', ['basicsr/train.py', 'basicsr/test.py'])
def test_scripts_report_invalid_options_without_a_traceback(script, write_options, run_python, repo_root):
    path = write_options('name: broken\nmodel_typ: ImageEventRestorationModel\nscale: big\n')
    # run from another folder, the package not on the path: the scripts must find it themselves
    result = run_python(str(repo_root / script), '-opt', str(path), cwd=path.parent, repo_on_path=False)
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert f"error: Invalid option file '{path}'" in result.stderr
    assert "model_typ: unknown key 'model_typ'; did you mean 'model_type'?" in result.stderr
    assert "scale: must be an integer, got str 'big'" in result.stderr


# ---------------------------------------------------------------------------------------------- official files
def official(relative: str, tmp_path: Path, debug: bool = False) -> FrozenDict:
    """Load an official option file with every dataroot pointing at a temporary folder."""
    path = OFFICIAL / relative
    folder = tmp_path / 'data'
    folder.mkdir(exist_ok=True)
    is_train = relative.startswith('train/')
    keys = yaml.safe_load(path.read_text())['datasets']
    overrides = [f'datasets:{key}:dataroot={folder}' for key in keys]
    return load_options(path, is_train=is_train, overrides=overrides, debug=debug)


@pytest.mark.parametrize('relative', ['train/GoPro/EFNet.yml', 'train/REBlur/Finetune_EFNet.yml'])
def test_official_training_files_are_accepted_with_their_meaning(relative, tmp_path):
    opt = official(relative, tmp_path)
    gopro = 'GoPro' in relative
    assert opt['model_type'] == 'ImageEventRestorationModel'
    assert (opt['scale'], opt['num_gpu'], opt['manual_seed']) == (1, 1, 10)
    assert opt['dataset_name'] == ('GoPro' if gopro else 'REBlur')
    train_set, val_set = opt['datasets']['train'], opt['datasets']['val']
    assert train_set['phase'] == 'train' and val_set['phase'] == 'val'
    assert train_set['type'] == val_set['type'] == 'H5ImageDataset'
    for dataset in (train_set, val_set):
        assert dataset['norm_voxel'] and dataset['return_voxel'] and dataset['return_mask'] and dataset['use_mask']
        assert dataset['io_backend'] == {'type': 'h5'}
    assert train_set['filename_tmpl'] == '{}' and train_set['crop_size'] == 256
    assert train_set['use_flip'] is True and train_set['use_rot'] is True and train_set['use_shuffle'] is True
    assert (train_set['num_worker_per_gpu'], train_set['batch_size_per_gpu']) == (3, 4)
    assert train_set['dataset_enlarge_ratio'] == (4 if gopro else 1)
    assert (train_set['prefetch_mode'], train_set['num_prefetch_queue']) == ('cpu', 2)
    assert val_set['crop_size'] is None and val_set['use_flip'] is False and val_set['use_rot'] is False
    assert opt['network_g']['type'] == 'EFNet' and opt['network_g']['wf'] == 64
    assert opt['network_g']['fuse_before_downsample'] is True
    assert opt['path']['pretrain_network_g'] is None and opt['path']['strict_load_g'] is True
    assert opt['path']['resume_state'] is None and opt['path']['training_states'] is None
    train = opt['train']
    assert train['optim_g'] == {
        'type': 'AdamW',
        'lr': 2e-4 if gopro else 2e-5,
        'weight_decay': 1e-4,
        'betas': (0.9, 0.99),
        **{k: v for k, v in train['optim_g'].items() if k not in ('type', 'lr', 'weight_decay', 'betas')},
    }
    assert train['scheduler']['type'] == 'TrueCosineAnnealingLR'
    assert train['scheduler']['T_max'] == (200000 if gopro else 600) and train['scheduler']['eta_min'] == 1e-7
    assert train['total_iter'] == (200000 if gopro else 600) and train['warmup_iter'] == -1
    assert train['pixel_opt']['type'] == 'PSNRLoss' and train['pixel_opt']['loss_weight'] == 0.5
    assert train['pixel_opt']['reduction'] == 'mean'
    val = opt['val']
    assert val['val_freq'] == 50000 and type(val['val_freq']) is int
    assert val['save_img'] is False and val['grids'] is None and val['crop_size'] is None
    assert val['max_minibatch'] == 8
    assert set(val['metrics']) == {'psnr', 'ssim'}
    assert val['metrics']['psnr']['type'] == 'calculate_psnr' and val['metrics']['ssim']['type'] == 'calculate_ssim'
    for metric in val['metrics'].values():
        assert metric['crop_border'] == 0 and metric['test_y_channel'] is False
    logger = opt['logger']
    assert (logger['print_freq'], logger['save_checkpoint_freq']) == ((200, 20000) if gopro else (50, 100))
    assert logger['use_tb_logger'] is True
    assert logger['wandb'] == (
        {'project': 'your_project_name', 'resume_id': 'x'} if gopro else {'project': None, 'resume_id': None}
    )
    assert opt['dist_params'] == {'backend': 'nccl', 'port': 29500, 'timeout': 600.0}


@pytest.mark.parametrize('relative', ['test/GoPro/EFNet.yml', 'test/REBlur/Finetune_EFNet.yml'])
def test_official_test_files_are_accepted_with_their_meaning(relative, tmp_path):
    opt = official(relative, tmp_path)
    gopro = 'GoPro' in relative
    assert opt['model_type'] == ('TestImageEventRestorationModel' if gopro else 'ImageEventRestorationModel')
    assert (opt['scale'], opt['num_gpu'], opt['manual_seed']) == (1, 1, 10)
    assert opt['dataset_name'] == ('GoPro' if gopro else 'REBlur')
    (test_set,) = opt['datasets'].values()
    assert test_set['name'] == 'gopro-bestmodel-test' and test_set['phase'] == 'test'
    assert test_set['return_gt_frame'] is (not gopro)
    assert test_set['return_mask'] and test_set['use_mask'] and test_set['norm_voxel'] and test_set['return_voxel']
    assert test_set['io_backend'] == {'type': 'h5'}
    if gopro:
        assert test_set['crop_size'] is None and test_set['use_flip'] is False and test_set['use_rot'] is False
    else:
        assert test_set['crop_size'] == 256 and test_set['use_flip'] is True and test_set['use_rot'] is True
        assert test_set['filename_tmpl'] == '{}' and test_set['use_shuffle'] is True
        assert (test_set['num_worker_per_gpu'], test_set['batch_size_per_gpu']) == (3, 4)
        assert (test_set['prefetch_mode'], test_set['num_prefetch_queue']) == ('cpu', 2)
    assert opt['path']['pretrain_network_g'].endswith('models/net_g_latest.pth')
    assert opt['path']['root'] == '/cluster/EFNet/EFNet_inference/'
    assert opt['val']['save_img'] is True and opt['val']['rgb2bgr'] is False
    assert opt['val']['grids'] is None and opt['val']['crop_size'] is None and opt['val']['metrics'] is None
    paths = ExperimentPaths.derive(opt, is_train=False)
    assert paths.visualization == Path('/cluster/EFNet/EFNet_inference/results') / opt['name'] / 'visualization'


@pytest.mark.parametrize('relative', ['train/GoPro/EFNet.yml', 'train/REBlur/Finetune_EFNet.yml'])
def test_official_training_files_in_debug_mode(relative, tmp_path):
    opt = official(relative, tmp_path, debug=True)
    assert frequencies(opt) == DEBUG_FREQUENCIES  # no TensorBoard, hence no wandb either (train.py)
    assert opt['name'].startswith('debug_EFNet_')


@pytest.mark.parametrize('path', sorted(REPO_OPTIONS.rglob('*.yml')), ids=lambda p: str(p.relative_to(REPO_OPTIONS)))
def test_the_option_files_of_the_repository_validate(path):
    load_options(path, is_train=path.relative_to(REPO_OPTIONS).parts[0] == 'train')
