"""The loop around the training step: threads and loader workers per process, the ``auto`` loader settings,
prefetchers that start no pass for nothing, and the performance settings resolved once per run."""

from __future__ import annotations

import logging
import types

import pytest
import torch
from test_model import make_model, write_file
from torch.utils.data import Dataset

from basicsr.data import build_dataloader, resolve_prefetch_mode
from basicsr.data.prefetch_dataloader import CPUPrefetcher, PrefetchDataLoader
from basicsr.engine import run_setup
from basicsr.engine.run_setup import cores_per_process, fit_loader_workers, size_compute_threads
from basicsr.utils.option_schema import freeze
from basicsr.utils.performance import EffectivePerformance

OPTION = 'datasets.train.num_worker_per_gpu'


@pytest.mark.parametrize(('requested', 'cores', 'expected'), [(0, 2, 0), (1, 2, 1), (3, 2, 1), (2, 1, 0), (4, 16, 4)])
def test_loader_workers_leave_one_core_for_the_compute(requested, cores, expected, caplog):
    with caplog.at_level(logging.WARNING):
        assert fit_loader_workers(requested, cores, OPTION) == expected
    if expected < requested:
        (message,) = caplog.messages
        assert OPTION in message and f'{requested} loader workers' in message and f'using {expected}' in message
    else:
        assert not caplog.messages


@pytest.fixture()
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(('cores', 'workers', 'threads'), [(2, 0, 2), (2, 1, 1), (1, 3, 1), (16, 3, 13)])
def test_compute_threads_are_the_cores_the_workers_leave(cores, workers, threads, monkeypatch, restore_threads, caplog):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    with caplog.at_level(logging.INFO):
        assert size_compute_threads(cores, workers) == threads
    assert torch.get_num_threads() == threads
    assert f'{threads} compute threads + {workers} loader workers on {cores} CPU core(s)' in caplog.text


def test_omp_num_threads_in_the_environment_wins(monkeypatch, restore_threads):
    torch.set_num_threads(1)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    assert size_compute_threads(8, 0) == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize(
    ('dist', 'world_size', 'local', 'expected'),
    [(False, 1, None, 8), (True, 4, None, 2), (True, 8, '2', 4), (True, 16, None, 1)],
)
def test_cores_are_shared_by_the_processes_of_the_machine(dist, world_size, local, expected, monkeypatch):
    monkeypatch.setattr(run_setup.os, 'sched_getaffinity', lambda pid: set(range(8)), raising=False)
    if local is None:
        monkeypatch.delenv('LOCAL_WORLD_SIZE', raising=False)
    else:
        monkeypatch.setenv('LOCAL_WORLD_SIZE', local)
    assert cores_per_process(types.SimpleNamespace(dist=dist, world_size=world_size)) == expected


class Numbers(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {'value': torch.tensor(index)}


def loader_options(**overrides) -> dict:
    opt = {
        'name': 'numbers',
        'type': 'H5ImageDataset',
        'phase': 'train',
        'batch_size_per_gpu': 2,
        'num_worker_per_gpu': 0,
        'use_shuffle': False,
        'prefetch_mode': 'auto',
        'num_prefetch_queue': 2,
        'pin_memory': 'auto',
        'persistent_workers': 'auto',
    }
    opt.update(overrides)
    return freeze(opt)


def test_auto_prefetch_is_the_side_stream_on_cuda_and_nothing_on_the_cpu_or_for_evaluation():
    cpu, cuda = torch.device('cpu'), torch.device('cuda', 0)
    assert resolve_prefetch_mode(loader_options(), cpu) is None
    assert resolve_prefetch_mode(loader_options(), None) is None
    assert resolve_prefetch_mode(loader_options(), cuda) == 'cuda'
    assert resolve_prefetch_mode(loader_options(phase='val'), cuda) is None
    assert resolve_prefetch_mode(loader_options(prefetch_mode=None), cpu) is None
    assert resolve_prefetch_mode(loader_options(prefetch_mode='cpu'), cuda) == 'cpu'


def test_auto_loader_settings_on_the_cpu():
    loader = build_dataloader(Numbers(6), loader_options(), device=torch.device('cpu'))
    assert not isinstance(loader, PrefetchDataLoader) and not loader.pin_memory
    assert [batch['value'].tolist() for batch in loader] == [[0, 1], [2, 3], [4, 5]]
    with_workers = build_dataloader(Numbers(6), loader_options(num_worker_per_gpu=1), device=torch.device('cpu'))
    assert with_workers.persistent_workers and with_workers.num_workers == 1
    explicit = build_dataloader(
        Numbers(6), loader_options(num_worker_per_gpu=1, persistent_workers=False, prefetch_mode='cpu')
    )
    assert not explicit.persistent_workers and isinstance(explicit, PrefetchDataLoader)


class CountingLoader:
    """An iterable that counts the passes started over it."""

    def __init__(self, items: list):
        self.items, self.passes = items, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.items)


def test_the_cpu_prefetcher_starts_a_pass_only_when_asked():
    loader = CountingLoader([1, 2])
    prefetcher = CPUPrefetcher(loader)
    assert loader.passes == 0
    prefetcher.reset()
    assert [prefetcher.next(), prefetcher.next(), prefetcher.next()] == [1, 2, None]
    assert loader.passes == 1
    lazy = CPUPrefetcher(CountingLoader([7]))
    assert lazy.next() == 7 and lazy.loader.passes == 1


def test_the_model_resolves_the_performance_settings_once_and_logs_them(tmp_path, caplog):
    write_file(tmp_path / 'data' / 'seq_a.h5', num_items=2, height=24, width=20)
    with caplog.at_level(logging.INFO):
        model, _ = make_model(tmp_path, tmp_path / 'data')
    assert isinstance(model.perf, EffectivePerformance) and model.perf.amp is None
    assert [m for m in caplog.messages if m.startswith('Performance on cpu')] == [
        'Performance on cpu: amp=float32, channels_last=False, compile=False'
    ]
