"""The option schema language: Key coercion, Section/MapOf/Component checks, messages, FrozenDict."""

from __future__ import annotations

import copy
import pickle
from typing import ClassVar

import pytest
import yaml

from basicsr.utils.option_schema import (
    MISSING,
    Component,
    FrozenDict,
    Key,
    MapOf,
    Problem,
    Section,
    freeze,
    signature_keys,
    thaw,
    validate,
)
from basicsr.utils.registry import Registry


def messages(problems: list[Problem]) -> list[str]:
    return [str(problem) for problem in problems]


# ---------------------------------------------------------------------------------------------- Key
def test_int_accepts_a_yaml_float_with_an_integral_value():
    value = yaml.safe_load('val_freq: !!float 5e4')['val_freq']
    assert isinstance(value, float)
    result, problems = validate(value, Key(int))
    assert problems == []
    assert result == 50000 and type(result) is int


def test_int_rejects_a_fractional_number():
    _, problems = validate({'total_iter': 5.5}, Section({'total_iter': Key(int)}))
    assert messages(problems) == ['total_iter: must be an integer, got float 5.5']


def test_float_accepts_an_int_and_returns_a_float():
    result, problems = validate(3, Key(float))
    assert problems == [] and result == 3.0 and type(result) is float


@pytest.mark.parametrize(
    ('types', 'value', 'expected'),
    [
        (int, True, 'must be an integer, got bool True'),
        (float, False, 'must be a number, got bool False'),
        (bool, 1, 'must be a boolean (true/false), got int 1'),
        (bool, 0.0, 'must be a boolean (true/false), got float 0.0'),
        (bool, 'yes', "must be a boolean (true/false), got str 'yes'"),
        (str, 5, 'must be a string, got int 5'),
        (list, 'a', "must be a list, got str 'a'"),
        (dict, [1], 'must be a mapping, got list [1]'),
        ((int, str), 2.5, 'must be an integer or a string, got float 2.5'),
    ],
)
def test_type_mismatches_and_bool_is_never_a_number(types, value, expected):
    _, problems = validate(value, Key(types))
    assert messages(problems) == [f'<top level>: {expected}']


def test_null_is_rejected_unless_the_key_accepts_it():
    _, problems = validate({'seed': None}, Section({'seed': Key(int)}))
    assert messages(problems) == ['seed: must be an integer, got null']
    result, problems = validate({'seed': None}, Section({'seed': Key((int, None))}))
    assert problems == [] and result == {'seed': None}
    result, problems = validate({'seed': None}, Section({'seed': Key((int, type(None)))}))
    assert problems == [] and result == {'seed': None}


def test_the_expected_text_mentions_null_when_accepted():
    _, problems = validate('x', Key((int, None)))
    assert messages(problems) == ["<top level>: must be an integer or null (~), got str 'x'"]


def test_a_key_without_types_accepts_anything():
    for value in (None, 1, 'a', [1], {'a': 1}):
        assert validate(value, Key(()))[1] == []


def test_lists_and_mappings_are_copied():
    value = [1, 2]
    result, problems = validate(value, Key(list))
    assert problems == [] and result == [1, 2] and result is not value
    result, _ = validate((0.9, 0.99), Key(list))
    assert result == [0.9, 0.99]


def test_long_values_are_shortened_in_messages():
    _, problems = validate('a' * 100, Key(int))
    text = messages(problems)[0]
    assert text == "<top level>: must be an integer, got str '" + 'a' * 56 + '...'


def test_choices_with_the_closest_match():
    node = Section({'prefetch_mode': Key((str, None), choices=('cpu', 'cuda'))})
    _, problems = validate({'prefetch_mode': 'cdua'}, node)
    assert messages(problems) == ["prefetch_mode: must be one of cpu, cuda, got 'cdua'; did you mean 'cuda'?"]
    _, problems = validate({'prefetch_mode': 'disk'}, node)
    assert messages(problems) == ["prefetch_mode: must be one of cpu, cuda, got 'disk'"]
    assert validate({'prefetch_mode': None}, node) == ({'prefetch_mode': None}, [])
    assert validate({'prefetch_mode': 'cpu'}, node) == ({'prefetch_mode': 'cpu'}, [])


def test_check_callback_receives_the_coerced_value():
    seen = []

    def positive(value):
        seen.append(value)
        return None if value > 0 else f'must be > 0, got {value}'

    node = Section({'total_iter': Key(int, check=positive)})
    _, problems = validate({'total_iter': -3.0}, node)
    assert messages(problems) == ['total_iter: must be > 0, got -3']
    assert seen == [-3] and type(seen[0]) is int
    assert validate({'total_iter': 4}, node) == ({'total_iter': 4}, [])


def test_check_callback_is_skipped_after_a_type_or_choice_error():
    def never(value):
        raise AssertionError('must not be called')

    _, problems = validate('many', Key(int, check=never))
    assert len(problems) == 1
    _, problems = validate('c', Key(str, choices=('a', 'b'), check=never))
    assert len(problems) == 1


def test_a_check_is_not_run_on_an_accepted_null():
    def never(value):
        raise AssertionError('must not be called')

    assert validate(None, Key((int, None), check=never)) == (None, [])


def test_key_defaults():
    assert Key(int).has_default() is False and Key(int).default() is MISSING
    assert Key(int, default=3).has_default() is True and Key(int, default=3).default() == 3
    assert Key((int, None), default=None).has_default() is True


# ---------------------------------------------------------------------------------------------- Section
OPTIM = Section(
    {
        'lr': Key(float, required=True, doc='learning rate'),
        'betas': Key(list, default=[0.9, 0.99]),
        'weight_decay': Key(float, default=0.0),
    }
)


def test_section_fills_defaults_and_leaves_out_absent_keys_without_default():
    node = Section({'a': Key(int, default=1), 'b': Key(int)})
    assert validate({}, node) == ({'a': 1}, [])


def test_section_unknown_key_gives_the_closest_key_and_the_known_keys():
    _, problems = validate({'lr': 1e-3, 'wieght_decay': 0.1}, OPTIM)
    assert messages(problems) == [
        (
            "wieght_decay: unknown key 'wieght_decay'; did you mean 'weight_decay'? "
            'Known keys here: betas, lr, weight_decay.'
        )
    ]


def test_section_unknown_key_without_a_close_key():
    _, problems = validate({'lr': 1e-3, 'zzz': 1}, OPTIM)
    assert messages(problems) == ["zzz: unknown key 'zzz'. Known keys here: betas, lr, weight_decay."]


def test_section_missing_required_key_shows_its_doc():
    _, problems = validate({'betas': [0.9, 0.9]}, OPTIM)
    assert messages(problems) == ['lr: required key is missing (learning rate)']
    _, problems = validate({}, Section({'lr': Key(float, required=True)}))
    assert messages(problems) == ['lr: required key is missing']


def test_section_that_is_not_a_mapping():
    _, problems = validate({'optim': 3}, Section({'optim': OPTIM}))
    assert messages(problems) == ['optim: must be a mapping of keys, got int 3']


def test_optional_section_given_as_null_or_absent_takes_its_defaults():
    node = Section({'logger': Section({'print_freq': Key(int, default=100)})})
    assert validate({'logger': None}, node) == ({'logger': {'print_freq': 100}}, [])
    assert validate({}, node) == ({'logger': {'print_freq': 100}}, [])


def test_required_section_missing_or_null():
    node = Section({'train': Section({'x': Key(int, default=1)}, required=True, doc='training settings')})
    _, problems = validate({}, node)
    assert messages(problems) == ['train: required key is missing (training settings)']
    _, problems = validate({'train': None}, node)
    assert messages(problems) == ['train: must be a mapping of keys, got null']


def test_nested_paths_are_dotted():
    node = Section({'train': Section({'optim_g': OPTIM})})
    _, problems = validate({'train': {'optim_g': {'lr': 'fast'}}}, node)
    assert messages(problems) == ["train.optim_g.lr: must be a number, got str 'fast'"]


def test_problem_str():
    assert str(Problem('', 'bad')) == '<top level>: bad'
    assert str(Problem('a.b', 'bad')) == 'a.b: bad'


# ---------------------------------------------------------------------------------------------- MapOf
METRIC = Section({'crop_border': Key(int, required=True), 'test_y_channel': Key(bool, default=False)})


def test_mapof_checks_each_named_value():
    node = Section({'metrics': MapOf(METRIC)})
    result, problems = validate({'metrics': {'psnr': {'crop_border': 0}, 'ssim': {'crop_border': 'x'}}}, node)
    assert result['metrics']['psnr'] == {'crop_border': 0, 'test_y_channel': False}
    assert messages(problems) == ["metrics.ssim.crop_border: must be an integer, got str 'x'"]


def test_mapof_null_absent_and_not_a_mapping():
    node = Section({'metrics': MapOf(METRIC)})
    assert validate({'metrics': None}, node) == ({'metrics': {}}, [])
    assert validate({}, node) == ({}, [])
    assert validate({}, Section({'metrics': MapOf(METRIC, default=None)})) == ({'metrics': None}, [])
    _, problems = validate({'metrics': ['psnr']}, node)
    assert messages(problems) == ["metrics: must be a mapping of names to settings, got list ['psnr']"]
    _, problems = validate({}, Section({'datasets': MapOf(METRIC, required=True, doc='data sets')}))
    assert messages(problems) == ['datasets: required key is missing (data sets)']


# ---------------------------------------------------------------------------------------------- Component
class Blur:
    """A component whose keys come from its constructor signature."""

    def __init__(self, radius: int, sigma: float = 1.0, mode='reflect', label: str = None, *args, **kwargs):  # noqa: RUF013 - the form under test
        pass


def sharpen(img, amount: float, clip: bool = True):
    """A function component; ``img`` is passed by the framework (skipped)."""


class Noise:
    """A component whose keys come from its ``option_schema`` attribute."""

    option_schema: ClassVar[dict[str, Key]] = {
        'std': Key(float, required=True, check=lambda v: None if v >= 0 else 'must be >= 0')
    }

    def __init__(self, opt):
        pass


@pytest.fixture
def widgets():
    registry = Registry('widget')
    registry.register(Blur)
    registry.register(sharpen)
    registry.register(Noise)
    return registry


def test_signature_keys_of_a_class_and_a_function():
    keys = signature_keys(Blur)
    assert set(keys) == {'radius', 'sigma', 'mode', 'label'}
    assert keys['radius'].required and keys['radius'].types == (int,)
    assert keys['sigma'].default() == 1.0 and keys['sigma'].types == (float,)
    assert keys['mode'].default() == 'reflect' and keys['mode'].types == ()
    assert keys['label'].default() is None and keys['label'].nullable and keys['label'].types == (str,)
    keys = signature_keys(sharpen, skip=('img',))
    assert set(keys) == {'amount', 'clip'} and keys['amount'].required and keys['clip'].default() is True


def test_component_from_signature(widgets):
    node = Section({'blur': Component(widgets)})
    result, problems = validate({'blur': {'type': 'Blur', 'radius': 2.0, 'sigma': 2}}, node)
    assert problems == []
    assert result == {'blur': {'type': 'Blur', 'radius': 2, 'sigma': 2.0, 'mode': 'reflect', 'label': None}}
    assert type(result['blur']['radius']) is int and type(result['blur']['sigma']) is float


def test_component_signature_errors(widgets):
    node = Section({'blur': Component(widgets)})
    _, problems = validate({'blur': {'type': 'Blur', 'radus': 2, 'sigma': 'wide'}}, node)
    assert messages(problems) == [
        (
            "blur.radus: unknown key 'radus' for widget Blur; did you mean 'radius'? "
            'Known keys here: label, mode, radius, sigma, type.'
        ),
        "blur.sigma: must be a number, got str 'wide'",
        'blur.radius: required key is missing',
    ]


def test_component_skips_names_the_framework_passes(widgets):
    node = Section({'op': Component(widgets, skip=('img',))})
    assert validate({'op': {'type': 'sharpen', 'amount': 1}}, node) == (
        {'op': {'type': 'sharpen', 'amount': 1.0, 'clip': True}},
        [],
    )
    _, problems = validate({'op': {'type': 'sharpen', 'amount': 1, 'img': 0}}, node)
    assert messages(problems) == ["op.img: unknown key 'img' for widget sharpen. Known keys here: amount, clip, type."]


def test_component_option_schema_attribute_wins_over_the_signature(widgets):
    node = Section({'noise': Component(widgets)})
    assert validate({'noise': {'type': 'Noise', 'std': 1}}, node) == ({'noise': {'type': 'Noise', 'std': 1.0}}, [])
    _, problems = validate({'noise': {'type': 'Noise', 'opt': {}, 'std': -1}}, node)
    assert messages(problems) == [
        "noise.opt: unknown key 'opt' for widget Noise. Known keys here: std, type.",
        'noise.std: must be >= 0',
    ]


def test_component_common_keys(widgets):
    node = Section({'d': Component(widgets, common={'name': Key(str, required=True)})})
    result, problems = validate({'d': {'type': 'Noise', 'std': 0.5, 'name': 'train-set'}}, node)
    assert problems == [] and result['d']['name'] == 'train-set'
    _, problems = validate({'d': {'type': 'Noise', 'std': 0.5}}, node)
    assert messages(problems) == ['d.name: required key is missing']


def test_component_unknown_type_lists_the_registered_names(widgets):
    _, problems = validate({'net': {'type': 'Blr'}}, Section({'net': Component(widgets)}))
    assert messages(problems) == [
        (
            "net.type: No widget named 'Blr' is registered. Known widget names: Blur, Noise, sharpen. "
            "Did you mean 'Blur'?"
        )
    ]


@pytest.mark.parametrize('value', [{'radius': 1}, {'type': 3}])
def test_component_missing_or_non_string_type(widgets, value):
    _, problems = validate({'net': value}, Section({'net': Component(widgets)}))
    assert messages(problems) == [
        'net.type: required key is missing or not a string (a registered widget name, one of: Blur, Noise, sharpen)'
    ]


def test_component_not_a_mapping(widgets):
    _, problems = validate({'net': 'Blur'}, Section({'net': Component(widgets)}))
    assert messages(problems) == ['net: must be a mapping with a "type" key, got str \'Blur\'']


def test_component_required_or_optional(widgets):
    assert validate({'net': None}, Section({'net': Component(widgets)})) == ({'net': None}, [])
    _, problems = validate({}, Section({'net': Component(widgets, required=True, doc='the network')}))
    assert messages(problems) == ['net: required key is missing (the network)']


# ---------------------------------------------------------------------------------------------- validate
def test_every_problem_is_reported_at_once(widgets):
    schema = Section(
        {
            'name': Key(str, required=True),
            'num_gpu': Key(int, default=0),
            'net': Component(widgets, required=True),
            'metrics': MapOf(METRIC),
        }
    )
    tree = {'num_gpu': 'two', 'net': {'type': 'Blur'}, 'metrics': {'psnr': {}}, 'nmae': 'x'}
    _, problems = validate(tree, schema)
    assert messages(problems) == [
        "num_gpu: must be an integer, got str 'two'",
        'net.radius: required key is missing',
        'metrics.psnr.crop_border: required key is missing',
        "nmae: unknown key 'nmae'; did you mean 'name'? Known keys here: metrics, name, net, num_gpu.",
        'name: required key is missing',
    ]


def test_validate_never_modifies_its_input(widgets):
    schema = Section(
        {
            'net': Component(widgets),
            'opt': OPTIM,
            'metrics': MapOf(METRIC),
            'seed': Key(int, default=1),
        }
    )
    tree = {'net': {'type': 'Blur', 'radius': 2.0}, 'opt': {'lr': 1}, 'metrics': {'psnr': {'crop_border': 4.0}}}
    before = copy.deepcopy(tree)
    result, problems = validate(tree, schema)
    assert problems == []
    assert tree == before
    assert type(tree['net']['radius']) is float and type(tree['metrics']['psnr']['crop_border']) is float
    assert result['net'] is not tree['net'] and result['opt'] is not tree['opt']


# ---------------------------------------------------------------------------------------------- FrozenDict
def frozen_options():
    return freeze({'name': 'exp', 'train': {'optim_g': {'betas': [0.9, 0.99]}}, 'sets': [{'a': 1}]})


@pytest.mark.parametrize(
    'mutate',
    [
        lambda d: d.__setitem__('name', 'x'),
        lambda d: d.__delitem__('name'),
        lambda d: d.clear(),
        lambda d: d.pop('name'),
        lambda d: d.pop('missing', None),
        lambda d: d.popitem(),
        lambda d: d.setdefault('new', 1),
        lambda d: d.update(name='x'),
        lambda d: d.update({'name': 'x'}),
        lambda d: d.__ior__({'name': 'x'}),
        lambda d: d['train'].__setitem__('optim_g', None),
        lambda d: d['train']['optim_g'].update(lr=1),
    ],
    ids=[
        'setitem',
        'delitem',
        'clear',
        'pop',
        'pop_default',
        'popitem',
        'setdefault',
        'update_kwargs',
        'update_dict',
        'ior',
        'nested_setitem',
        'nested_update',
    ],
)
def test_frozen_dict_refuses_every_mutation(mutate):
    options = frozen_options()
    with pytest.raises(TypeError, match='options are read-only; build a modified copy with to_dict\\(\\) instead'):
        mutate(options)
    assert options.to_dict() == {'name': 'exp', 'train': {'optim_g': {'betas': [0.9, 0.99]}}, 'sets': [{'a': 1}]}


def test_augmented_or_assignment_is_refused():
    options = frozen_options()
    with pytest.raises(TypeError, match='read-only'):
        options |= {'name': 'x'}


def test_freeze_makes_nested_mappings_frozen_and_lists_tuples():
    options = frozen_options()
    assert isinstance(options['train'], FrozenDict) and isinstance(options['train']['optim_g'], FrozenDict)
    assert options['train']['optim_g']['betas'] == (0.9, 0.99)
    assert isinstance(options['sets'], tuple) and isinstance(options['sets'][0], FrozenDict)
    assert options == {'name': 'exp', 'train': {'optim_g': {'betas': (0.9, 0.99)}}, 'sets': ({'a': 1},)}


def test_frozen_dict_is_not_hashable():
    with pytest.raises(TypeError, match='not hashable'):
        hash(frozen_options())


@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
def test_frozen_dict_pickles(protocol):
    options = frozen_options()
    restored = pickle.loads(pickle.dumps(options, protocol=protocol))
    assert type(restored) is FrozenDict and restored == options
    assert type(restored['train']['optim_g']) is FrozenDict
    with pytest.raises(TypeError):
        restored['name'] = 'x'


def test_frozen_dict_copies():
    options = frozen_options()
    assert copy.deepcopy(options) == options and type(copy.deepcopy(options)) is FrozenDict
    assert copy.copy(options) == options
    holder = copy.deepcopy({'opt': options})
    assert holder['opt'] == options and type(holder['opt']) is FrozenDict


def test_to_dict_gives_a_mutable_deep_copy():
    options = frozen_options()
    plain = options.to_dict()
    assert plain == {'name': 'exp', 'train': {'optim_g': {'betas': [0.9, 0.99]}}, 'sets': [{'a': 1}]}
    assert type(plain) is dict and type(plain['train']['optim_g']) is dict
    assert type(plain['train']['optim_g']['betas']) is list and type(plain['sets'][0]) is dict
    plain['train']['optim_g']['lr'] = 1.0
    plain['sets'][0]['a'] = 2
    assert 'lr' not in options['train']['optim_g'] and options['sets'][0]['a'] == 1
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain


def test_thaw_inverts_freeze():
    tree = {'a': [1, {'b': (2, 3)}], 'c': {'d': None}}
    assert thaw(freeze(tree)) == {'a': [1, {'b': [2, 3]}], 'c': {'d': None}}
