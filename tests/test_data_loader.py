"""The engine's build_dataset, build_dataloader, EnlargedSampler, worker seeding and the prefetchers."""

from __future__ import annotations

import logging
import random
from collections import Counter

import numpy as np
import pytest
import torch
from component_options import validated
from torch.utils.data import DataLoader, Dataset

import basicsr.data
from basicsr.data import (
    CPUPrefetcher,
    CUDAPrefetcher,
    EnlargedSampler,
    PrefetchDataLoader,
    build_dataloader,
    worker_init_fn,
)
from basicsr.data.h5_layout import TrainingH5Writer
from basicsr.engine.run_setup import build_dataset
from basicsr.utils.option_schema import freeze
from basicsr.utils.registry import DATASET_REGISTRY


class Numbers(Dataset):
    def __init__(self, count):
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return {'value': torch.tensor(index), 'draw': torch.tensor(np.random.random())}


class Failing(Numbers):
    def __getitem__(self, index):
        if index == 3:
            raise RuntimeError('item 3 is broken')
        return super().__getitem__(index)


@pytest.mark.parametrize(('length', 'replicas', 'ratio'), [(10, 4, 2), (10, 1, 1), (7, 3, 1), (5, 2, 3)])
def test_enlarged_sampler_partitions_the_enlarged_set_across_ranks(length, replicas, ratio):
    dataset = Numbers(length)
    samplers = [EnlargedSampler(dataset, replicas, rank, ratio) for rank in range(replicas)]
    per_rank = [list(s) for s in samplers]
    expected = -(-length * ratio // replicas)  # ceil
    assert all(len(s) == len(indices) == expected for s, indices in zip(samplers, per_rank))
    counts = Counter(i for indices in per_rank for i in indices)
    assert set(counts) == set(range(length))
    assert sum(counts.values()) == expected * replicas
    if length * ratio % replicas == 0:
        assert set(counts.values()) == {ratio}  # each item exactly ratio times per epoch over all ranks


def test_enlarged_sampler_epochs():
    sampler = EnlargedSampler(Numbers(50), 2, 1)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    with pytest.raises(ValueError, match='0 <= rank < num_replicas'):
        EnlargedSampler(Numbers(3), 2, 2)
    with pytest.raises(ValueError, match='ratio .* must be >= 1'):
        EnlargedSampler(Numbers(3), 1, 0, ratio=0)


def test_worker_init_fn_seeds_every_generator_with_its_own_seed(monkeypatch):
    # in this process, not a worker: the signal shield would outlive the test and be inherited by later subprocesses
    monkeypatch.setattr(basicsr.data, '_ignore_stop_signals', lambda: None)
    worker_init_fn(1, num_workers=3, rank=2, seed=10)  # seed 10 + 1 + 3 * 2 = 17
    draws = (random.random(), np.random.random(), torch.rand(()).item())
    random.seed(17)
    np.random.seed(17)
    torch.manual_seed(17)
    assert draws == (random.random(), np.random.random(), torch.rand(()).item())
    seeds = {worker + 3 * rank + 10 for worker in range(3) for rank in range(2)}
    assert len(seeds) == 6


def train_options(**overrides):
    opt = {
        'name': 'numbers',
        'type': 'H5ImageDataset',
        'phase': 'train',
        'batch_size_per_gpu': 2,
        'num_worker_per_gpu': 0,
        'use_shuffle': True,
        'prefetch_mode': None,
        'num_prefetch_queue': 1,
        'pin_memory': False,
        'persistent_workers': False,
    }
    opt.update(overrides)
    return freeze(opt)


def test_train_loader_batches_shuffles_and_drops_the_last_partial_batch():
    loader = build_dataloader(Numbers(7), train_options(), seed=0)
    assert isinstance(loader, DataLoader) and not isinstance(loader, PrefetchDataLoader)
    assert (loader.batch_size, loader.drop_last, loader.num_workers) == (2, True, 0)
    assert isinstance(loader.sampler, torch.utils.data.RandomSampler)
    assert len(list(loader)) == 3
    with_workers = build_dataloader(Numbers(8), train_options(num_worker_per_gpu=1))
    assert (with_workers.batch_size, with_workers.num_workers) == (2, 1)
    sampler = EnlargedSampler(Numbers(8), 1, 0)
    with_sampler = build_dataloader(Numbers(8), train_options(), dist=True, sampler=sampler)
    assert with_sampler.sampler is sampler and with_sampler.batch_size == 2


def test_workers_get_distinct_seeds():
    loader = build_dataloader(
        Numbers(4), train_options(num_worker_per_gpu=2, batch_size_per_gpu=1, use_shuffle=False), seed=3
    )
    draws = {batch['value'].item(): batch['draw'].item() for batch in loader}
    assert len(set(draws.values())) == 4
    again = build_dataloader(
        Numbers(4), train_options(num_worker_per_gpu=2, batch_size_per_gpu=1, use_shuffle=False), seed=3
    )
    assert {batch['value'].item(): batch['draw'].item() for batch in again} == draws


@pytest.mark.parametrize('phase', ['val', 'test'])
def test_val_and_test_loaders_are_sequential_batch_one(phase):
    loader = build_dataloader(Numbers(5), train_options(phase=phase, num_worker_per_gpu=3, batch_size_per_gpu=4))
    assert (loader.batch_size, loader.num_workers, loader.drop_last) == (1, 0, False)
    assert [batch['value'].item() for batch in loader] == [0, 1, 2, 3, 4]


def test_unknown_phase_is_rejected():
    with pytest.raises(ValueError, match="phase must be train, val or test .* got 'predict'"):
        build_dataloader(Numbers(2), train_options(phase='predict'))


def test_prefetch_mode_cpu_gives_a_prefetch_loader_that_yields_everything():
    loader = build_dataloader(
        Numbers(9), train_options(prefetch_mode='cpu', num_prefetch_queue=2, use_shuffle=False, batch_size_per_gpu=3)
    )
    assert isinstance(loader, PrefetchDataLoader) and loader.num_prefetch_queue == 2
    assert [batch['value'].tolist() for batch in loader] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len(list(loader)) == 3  # a second pass works too


def test_prefetch_loader_reraises_dataset_errors_and_can_stop_early():
    loader = PrefetchDataLoader(num_prefetch_queue=1, dataset=Failing(6), batch_size=1)
    with pytest.raises(RuntimeError, match='item 3 is broken'):
        list(loader)
    iterator = iter(PrefetchDataLoader(num_prefetch_queue=1, dataset=Numbers(100), batch_size=1))
    assert next(iterator)['value'].item() == 0
    iterator.close()
    iterator._thread.join(timeout=5)
    assert not iterator._thread.is_alive()
    with pytest.raises(ValueError, match='num_prefetch_queue must be >= 1'):
        PrefetchDataLoader(num_prefetch_queue=0, dataset=Numbers(1))


def test_cpu_prefetcher_yields_every_batch_then_none_and_resets():
    prefetcher = CPUPrefetcher(DataLoader(Numbers(3), batch_size=1))
    values = []
    batch = prefetcher.next()
    while batch is not None:
        values.append(batch['value'].item())
        batch = prefetcher.next()
    assert values == [0, 1, 2]
    prefetcher.reset()
    assert prefetcher.next()['value'].item() == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on machines without CUDA')
def test_cuda_prefetcher_without_cuda_says_to_use_cpu_prefetching():
    with pytest.raises(RuntimeError, match='prefetch_mode: cuda needs a CUDA GPU.*set prefetch_mode: cpu'):
        CUDAPrefetcher(DataLoader(Numbers(2)))


def test_build_dataset_logs_samples_per_file_and_total(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for name, count in (('a.h5', 2), ('b.h5', 3)):
        blurry = [rng.integers(0, 256, (3, 4, 4), dtype=np.uint8) for _ in range(count)]
        with TrainingH5Writer(tmp_path / name) as writer:
            for frame in blurry:
                writer.add(frame, voxel=np.ones((6, 4, 4), np.float32), sharp=frame)
    opt = validated(
        DATASET_REGISTRY, {'name': 'tiny', 'type': 'H5ImageDataset', 'phase': 'val', 'dataroot': str(tmp_path)}
    )
    with caplog.at_level(logging.INFO, logger='basicsr.engine'):
        dataset = build_dataset(opt)
    assert len(dataset) == 5
    assert f'Data set tiny: 2 samples in {tmp_path / "a.h5"}' in caplog.text
    assert f'Data set tiny: 3 samples in {tmp_path / "b.h5"}' in caplog.text
    assert 'Data set tiny (H5ImageDataset) built: 5 samples.' in caplog.text
