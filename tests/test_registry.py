"""Registries: registration forms, lookup, error messages, lazy loading of the built-in modules, build()."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from basicsr.utils.option_schema import freeze
from basicsr.utils.registry import Registry, RegistryError, build, closest_match


@pytest.fixture
def make_module(tmp_path, monkeypatch):
    """``make_module(source) -> name``: a module with a unique name, written to tmp_path (on sys.path).

    The modules are removed from sys.modules after the test.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def make(source: str, prefix: str = 'tmp_components') -> str:
        name = f'{prefix}_{uuid.uuid4().hex}'
        (tmp_path / f'{name}.py').write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


def test_register_as_decorator_returns_the_class_unchanged():
    registry = Registry('arch')

    @registry.register()
    class EFNet:
        pass

    assert registry.get('EFNet') is EFNet


def test_register_as_decorator_with_an_alias():
    registry = Registry('model')

    @registry.register()
    @registry.register(name='TestRestorationModel')
    class RestorationModel:
        pass

    assert registry.get('RestorationModel') is RestorationModel
    assert registry.get('TestRestorationModel') is RestorationModel


def test_register_by_direct_call_with_and_without_name():
    registry = Registry('metric')

    def calculate_psnr():
        return 1

    assert registry.register(calculate_psnr) is None
    registry.register(len, name='length')
    assert registry.get('calculate_psnr') is calculate_psnr
    assert registry.get('length') is len


def test_contains_keys_iter_and_repr():
    registry = Registry('loss')
    registry.register(max, name='PSNRLoss')
    registry.register(min, name='L1Loss')
    assert 'PSNRLoss' in registry
    assert 'psnrloss' not in registry
    assert registry.keys() == ['L1Loss', 'PSNRLoss']
    assert list(registry) == ['L1Loss', 'PSNRLoss']
    assert registry.name == 'loss'
    assert repr(registry) == "Registry('loss', 2 registered)"


def test_registering_a_name_twice_names_both_places(make_module):
    first = make_module('''
        """First definition."""


        class Deblur:
            pass
    ''')
    second = make_module("""
        def Deblur():
            return None
    """)
    first_module = __import__(first)
    second_module = __import__(second)
    registry = Registry('arch')
    registry.register(first_module.Deblur)
    with pytest.raises(RegistryError) as info:
        registry.register(second_module.Deblur)
    assert str(info.value) == (
        f"The name 'Deblur' is registered twice in the arch registry: first by {first}.Deblur "
        f'({first_module.__file__}:5), again by {second}.Deblur ({second_module.__file__}:2). Rename one of them.'
    )
    assert registry.get('Deblur') is first_module.Deblur


def test_registering_twice_with_the_decorator_is_an_error_too():
    registry = Registry('dataset')

    @registry.register(name='H5ImageDataset')
    class First:
        pass

    with pytest.raises(RegistryError, match="The name 'H5ImageDataset' is registered twice in the dataset registry"):

        @registry.register(name='H5ImageDataset')
        class Second:
            pass


def test_duplicate_of_an_object_without_source_names_its_module_and_qualname():
    registry = Registry('optimizer')
    registry.register(len, name='Adam')
    with pytest.raises(RegistryError) as info:
        registry.register(abs, name='Adam')
    assert 'first by builtins.len, again by builtins.abs. Rename one of them.' in str(info.value)


def test_unknown_name_lists_the_known_names_and_the_closest_match():
    registry = Registry('arch')
    for name in ('EFNet', 'UNet', 'HINet'):
        registry.register(len, name=name)
    with pytest.raises(RegistryError) as info:
        registry.get('EFNte')
    assert str(info.value) == (
        "No arch named 'EFNte' is registered. Known arch names: EFNet, HINet, UNet. Did you mean 'EFNet'?"
    )
    assert isinstance(info.value, KeyError)


def test_unknown_name_is_matched_case_insensitively():
    registry = Registry('arch')
    registry.register(len, name='EFNet')
    with pytest.raises(RegistryError, match="Did you mean 'EFNet'\\?"):
        registry.get('efnet')


def test_unknown_name_without_a_close_match_gives_no_hint():
    registry = Registry('scheduler')
    registry.register(len, name='TrueCosineAnnealingLR')
    with pytest.raises(RegistryError) as info:
        registry.get('xyz')
    assert str(info.value) == "No scheduler named 'xyz' is registered. Known scheduler names: TrueCosineAnnealingLR."


def test_unknown_name_in_an_empty_registry():
    with pytest.raises(RegistryError) as info:
        Registry('model').get('Anything')
    assert str(info.value) == "No model named 'Anything' is registered. Known model names: (none)."


def test_closest_match():
    assert closest_match('calculate_pnsr', ['calculate_psnr', 'calculate_ssim']) == 'calculate_psnr'
    assert closest_match('LR', ['PSNRLoss']) is None
    assert closest_match('x', []) is None


LAZY_COMPONENT_SOURCE = """
    import {registry_module} as holder

    @holder.REGISTRY.register()
    class Widget:
        pass
"""


@pytest.fixture
def lazy_registry(make_module):
    """(registry, component module name): a registry whose module list names a module not imported yet."""
    registry_name = make_module('')
    component_name = make_module(LAZY_COMPONENT_SOURCE.format(registry_module=registry_name))
    holder = __import__(registry_name)
    holder.REGISTRY = Registry('widget', modules=[component_name])
    return holder.REGISTRY, component_name


def test_builtin_modules_are_imported_on_first_get_only(lazy_registry):
    registry, component_module = lazy_registry
    assert component_module not in sys.modules
    widget = registry.get('Widget')
    assert component_module in sys.modules
    assert widget is sys.modules[component_module].Widget


@pytest.mark.parametrize(
    'lookup', [lambda r: 'Widget' in r, lambda r: r.keys(), lambda r: list(r)], ids=['in', 'keys', 'iter']
)
def test_contains_and_keys_load_the_builtin_modules(lazy_registry, lookup):
    registry, component_module = lazy_registry
    lookup(registry)
    assert component_module in sys.modules
    assert 'Widget' in registry
    assert registry.keys() == ['Widget']


def test_a_builtin_module_that_fails_to_import_fails_every_lookup(make_module):
    broken = make_module("raise ImportError('the widget module needs the frobnicate package')")
    registry = Registry('widget', modules=[broken])
    for _ in range(2):
        with pytest.raises(ImportError, match='needs the frobnicate package'):
            registry.get('Widget')


def test_builtin_components_are_found_without_optional_dependencies(run_python, import_blocker):
    """Every built-in component the official option files name is found while torchvision, tensorboard,
    wandb and aedat cannot be imported, and no component module is imported before the first lookup."""
    script = import_blocker(['torchvision', 'tensorboard', 'aedat', 'wandb']) + textwrap.dedent("""
        import sys
        from basicsr.utils import registry as r
        assert not [m for m in sys.modules if m.startswith(('basicsr.archs', 'basicsr.data', 'basicsr.models',
                                                            'basicsr.losses', 'basicsr.metrics'))], sys.modules
        wanted = {
            r.ARCH_REGISTRY: ['EFNet'],
            r.DATASET_REGISTRY: ['H5ImageDataset'],
            r.MODEL_REGISTRY: ['ImageEventRestorationModel', 'TestImageEventRestorationModel'],
            r.LOSS_REGISTRY: ['PSNRLoss', 'L1Loss'],
            r.METRIC_REGISTRY: ['calculate_psnr', 'calculate_ssim'],
            r.OPTIMIZER_REGISTRY: ['AdamW', 'Adam'],
            r.SCHEDULER_REGISTRY: ['TrueCosineAnnealingLR'],
        }
        for registry, names in wanted.items():
            for name in names:
                registry.get(name)
        print('found all')
    """)
    result = run_python('-c', script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'found all'


# ---------------------------------------------------------------------------------------------- build()
def test_build_calls_classes_with_keywords_and_runtime_arguments():
    registry = Registry('optimizer')

    @registry.register()
    class Widget:
        def __init__(self, params, lr, betas=(0.9, 0.99)):
            self.params, self.lr, self.betas = params, lr, betas

    options = freeze({'type': 'Widget', 'lr': 0.5, 'betas': [0.1, 0.2]})
    widget = build(registry, options, params=['p'])
    assert (widget.params, widget.lr, widget.betas) == (['p'], 0.5, (0.1, 0.2))
    assert options == {'type': 'Widget', 'lr': 0.5, 'betas': (0.1, 0.2)}  # not consumed


def test_build_passes_the_whole_options_to_classes_that_take_them():
    registry = Registry('model')

    @registry.register()
    class Model:
        takes_options = True

        def __init__(self, opt, ctx):
            self.opt, self.ctx = opt, ctx

    opt = freeze({'model_type': 'Model', 'name': 'x'})
    model = build(registry, opt, type_key='model_type', ctx='context')
    assert model.opt is opt and model.ctx == 'context'


def test_build_binds_the_options_of_functions():
    registry = Registry('metric')

    @registry.register()
    def difference(img, img2, scale, offset=0):
        return scale * (img - img2) + offset

    metric = build(registry, {'type': 'difference', 'scale': 2})
    assert metric(5, 3) == 4 and metric(5, 3, offset=1) == 5
