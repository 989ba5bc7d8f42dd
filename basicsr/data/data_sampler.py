"""``EnlargedSampler``: a distributed-aware sampler that can repeat the data set within one epoch, start in
the middle of an epoch (exact resume) and hand every item its own seed."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sized
from typing import NamedTuple

import torch
from torch.utils.data import Sampler

from basicsr.utils.errors import InvalidInputError


class SeededIndex(NamedTuple):
    """An item index with the seed of that item's random draws (crop corner, flips, noise).

    The seed depends on (sampler seed, epoch, position in the epoch's permutation of all ranks) only, so an item
    gets the same draws whichever worker loads it, with persistent workers and after a mid-epoch resume.
    """

    index: int
    seed: int


class EnlargedSampler(Sampler):
    """Shuffled indices of ``ratio`` copies of the data set, split evenly across ``num_replicas`` processes.

    Every epoch draws one permutation of ``total_size = num_samples * num_replicas`` positions (seeded
    with ``seed + epoch``, so all processes agree), maps position ``v`` to item ``v % len(dataset)`` and
    gives process ``rank`` the positions ``rank, rank + num_replicas, ...``. Each process therefore
    gets ``num_samples = ceil(len(dataset) * ratio / num_replicas)`` indices; the processes together
    cover the enlarged set exactly once when it divides evenly (a few items repeat otherwise).
    A large ratio makes an "epoch" longer, which saves the per-epoch cost of restarting workers.

    With ``item_seeds`` the sampler yields :class:`SeededIndex` (index, seed) pairs instead of ints: the same
    generator then draws one int64 seed per position of the epoch, which the data set uses for the item's
    random draws instead of the worker's global generator. :meth:`set_epoch` with ``start`` skips the items
    of the epoch that were already consumed, and :meth:`state_dict` / :meth:`load_state_dict` carry the epoch
    and that position in a training state.

    Args:
        dataset: the data set (only its length is used).
        num_replicas: number of processes (world size).
        rank: this process's rank, 0 <= rank < num_replicas.
        ratio: how many copies of the data set make one epoch (>= 1).
        seed: added to the epoch to seed the permutation (the training loop passes the run's seed).
        item_seeds: yield :class:`SeededIndex` pairs instead of ints.
    """

    def __init__(
        self, dataset: Sized, num_replicas: int, rank: int, ratio: int = 1, seed: int = 0, item_seeds: bool = False
    ):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f'EnlargedSampler needs num_replicas >= 1 and 0 <= rank < num_replicas, got '
                f'num_replicas={num_replicas}, rank={rank}'
            )
        if ratio < 1:
            raise ValueError(f'EnlargedSampler ratio (dataset_enlarge_ratio) must be >= 1, got {ratio}')
        if len(dataset) == 0:
            raise ValueError('EnlargedSampler got an empty data set')
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.ratio = ratio
        self.seed = seed
        self.item_seeds = item_seeds
        self.epoch = 0
        self.start = 0
        self.num_samples = math.ceil(len(dataset) * ratio / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int] | Iterator[SeededIndex]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        positions = torch.randperm(self.total_size, generator=generator)
        mine = slice(self.rank + self.start * self.num_replicas, self.total_size, self.num_replicas)
        indices = (positions % len(self.dataset))[mine].tolist()
        assert len(indices) == len(self)
        if not self.item_seeds:
            return iter(indices)
        seeds = torch.randint(0, 2**63 - 1, (self.total_size,), generator=generator)[mine].tolist()
        return map(SeededIndex, indices, seeds)

    def __len__(self) -> int:
        """Number of indices the next pass yields (``num_samples`` less the ``start`` of this epoch)."""
        return self.num_samples - self.start

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use the permutation of ``epoch`` from its position ``start`` (call before each epoch).

        Args:
            epoch: the epoch number (0-based).
            start: how many of this process's indices of the epoch were already consumed (0 <= start <=
                ``num_samples``); the next pass yields the rest, exactly as an uninterrupted pass would have.
        """
        if not 0 <= start <= self.num_samples:
            raise ValueError(f'EnlargedSampler start must be in [0, {self.num_samples}], got {start}')
        self.epoch, self.start = epoch, start

    def state_dict(self, consumed: int) -> dict[str, int]:
        """The position to resume from, as plain ints for a training state.

        Args:
            consumed: indices of the current epoch this process has consumed so far (batches taken by the
                training loop times the batch size), counted from the start of the epoch. The loop counts
                them, not the sampler: workers and prefetchers draw indices ahead of what was trained on.
        """
        if not 0 <= consumed <= self.num_samples:
            raise ValueError(f'consumed must be in [0, {self.num_samples}], got {consumed}')
        return {
            'epoch': self.epoch,
            'consumed': consumed,
            'seed': self.seed,
            'num_replicas': self.num_replicas,
            'dataset_size': len(self.dataset),
            'ratio': self.ratio,
        }

    def load_state_dict(self, state: Mapping[str, int], source: str = 'the training state') -> None:
        """Continue where :meth:`state_dict` left off: the same epoch, from the next unconsumed index.

        Raises:
            InvalidInputError: the state was saved with another number of processes, data set size, enlarge
                ratio or seed, so the remaining indices of the epoch cannot be reproduced.
        """
        expected = {
            'num_replicas': (self.num_replicas, 'processes'),
            'dataset_size': (len(self.dataset), 'training items'),
            'ratio': (self.ratio, 'datasets.train.dataset_enlarge_ratio'),
            'seed': (self.seed, 'seed (manual_seed)'),
        }
        changed = [
            f'{label}: {state[key]} in the state, {value} now'
            for key, (value, label) in expected.items()
            if state[key] != value
        ]
        if changed:
            raise InvalidInputError(
                f"'{source}' cannot continue its epoch exactly because the training data changed "
                f'({"; ".join(changed)}); restore the previous setting, or start a new run from its weights with '
                'path.pretrain_network_g'
            )
        self.set_epoch(state['epoch'], state['consumed'])
