"""``EnlargedSampler``: a distributed-aware sampler that can repeat the data set within one epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler


class EnlargedSampler(Sampler[int]):
    """Shuffled indices of ``ratio`` copies of the data set, split evenly across ``num_replicas`` processes.

    Every epoch draws one permutation of ``total_size = num_samples * num_replicas`` positions (seeded
    with ``seed + epoch``, so all processes agree), maps position ``v`` to item ``v % len(dataset)`` and
    gives process ``rank`` the positions ``rank, rank + num_replicas, ...``. Each process therefore
    gets ``num_samples = ceil(len(dataset) * ratio / num_replicas)`` indices; the processes together
    cover the enlarged set exactly once when it divides evenly (a few items repeat otherwise).
    A large ratio makes an "epoch" longer, which saves the per-epoch cost of restarting workers.

    Args:
        dataset: the data set (only its length is used).
        num_replicas: number of processes (world size).
        rank: this process's rank, 0 <= rank < num_replicas.
        ratio: how many copies of the data set make one epoch (>= 1).
        seed: added to the epoch to seed the permutation.
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int, ratio: int = 1, seed: int = 0):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f'EnlargedSampler needs num_replicas >= 1 and 0 <= rank < num_replicas, got '
                             f'num_replicas={num_replicas}, rank={rank}')
        if ratio < 1:
            raise ValueError(f'EnlargedSampler ratio (dataset_enlarge_ratio) must be >= 1, got {ratio}')
        if len(dataset) == 0:
            raise ValueError('EnlargedSampler got an empty data set')
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.ratio = ratio
        self.seed = seed
        self.epoch = 0
        self.num_samples = math.ceil(len(dataset) * ratio / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        positions = torch.randperm(self.total_size, generator=generator)
        indices = (positions % len(self.dataset))[self.rank:self.total_size:self.num_replicas]
        assert len(indices) == self.num_samples
        return iter(indices.tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use a new permutation for ``epoch`` (call before each epoch)."""
        self.epoch = epoch
