"""Exact resume building blocks: random-number states, the sampler's position and per-item seeds.

The reference is always an uninterrupted run of the same objects: a run stopped after K batches and continued by
fresh objects built from its state must yield bit-identical batches.
"""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from component_options import validated

from basicsr.data import build_dataloader
from basicsr.data.data_sampler import EnlargedSampler, SeededIndex
from basicsr.data.raw_event_dataset import RawEventDataset
from basicsr.events import write_raw_events_h5
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.misc import capture_rng_state, restore_rng_state, set_random_seed
from basicsr.utils.registry import DATASET_REGISTRY

HEIGHT, WIDTH, FRAMES, BATCH, RATIO, SEED = 12, 16, 6, 2, 2, 10


def draw_everything() -> list:
    """A few draws of every generator a training step may use."""
    return [
        random.random(),
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        np.random.randn(),
        torch.rand(4).tolist(),
        torch.randn(2).tolist(),
    ]


def save_and_load(value):
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_restored_rng_state_repeats_the_draws_after_a_weights_only_round_trip():
    set_random_seed(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's generator
    np.random.randn()  # and in NumPy's
    state = save_and_load(capture_rng_state())
    expected = draw_everything()
    set_random_seed(99)
    draw_everything()
    restore_rng_state(state)
    assert draw_everything() == expected


def test_rng_state_without_cuda_holds_no_cuda_states():
    if torch.cuda.is_available():
        pytest.skip('CUDA is visible here')
    assert capture_rng_state()['cuda'] == []


def test_restore_warns_when_the_state_has_more_cuda_devices_than_visible(caplog):
    if torch.cuda.is_available():
        pytest.skip('CUDA is visible here')
    state = capture_rng_state()
    state['cuda'] = [torch.zeros(16, dtype=torch.uint8)]
    restore_rng_state(state)
    assert 'CUDA random-number states of 1 devices but 0 are visible' in caplog.text


class Items:
    def __init__(self, count):
        self.count = count

    def __len__(self):
        return self.count


@pytest.mark.parametrize('replicas', [1, 3])
def test_sampler_started_mid_epoch_yields_the_rest_of_the_uninterrupted_epoch(replicas):
    for rank in range(replicas):
        whole = EnlargedSampler(Items(7), replicas, rank, ratio=3, seed=5, item_seeds=True)
        whole.set_epoch(4)
        resumed = EnlargedSampler(Items(7), replicas, rank, ratio=3, seed=5, item_seeds=True)
        resumed.load_state_dict(whole.state_dict(consumed=4))
        assert len(resumed) == len(whole) - 4
        assert list(resumed) == list(whole)[4:]


def test_item_seeds_are_distinct_across_ranks_and_epochs_and_leave_the_permutation_unchanged():
    seeds = []
    for epoch in range(2):
        for rank in range(2):
            plain = EnlargedSampler(Items(5), 2, rank, ratio=2, seed=1)
            seeded = EnlargedSampler(Items(5), 2, rank, ratio=2, seed=1, item_seeds=True)
            plain.set_epoch(epoch)
            seeded.set_epoch(epoch)
            pairs = list(seeded)
            assert all(isinstance(pair, SeededIndex) for pair in pairs)
            assert [pair.index for pair in pairs] == list(plain)
            seeds += [pair.seed for pair in pairs]
    assert len(set(seeds)) == len(seeds) == 20


def test_sampler_state_from_another_setup_is_refused():
    state = EnlargedSampler(Items(7), 2, 0, ratio=3, seed=5).state_dict(consumed=2)
    with pytest.raises(InvalidInputError) as info:
        EnlargedSampler(Items(8), 4, 0, ratio=3, seed=5).load_state_dict(state, source='exp/3.state')
    assert str(info.value) == (
        "'exp/3.state' cannot continue its epoch exactly because the training data changed (processes: 2 in the "
        'state, 4 now; training items: 7 in the state, 8 now); restore the previous setting, or start a new run '
        'from its weights with path.pretrain_network_g'
    )


def test_sampler_rejects_a_position_outside_the_epoch():
    sampler = EnlargedSampler(Items(3), 1, 0)
    with pytest.raises(ValueError, match=r'start must be in \[0, 3\], got 4'):
        sampler.set_epoch(0, start=4)
    with pytest.raises(ValueError, match=r'consumed must be in \[0, 3\], got -1'):
        sampler.state_dict(consumed=-1)


@pytest.fixture(scope='module')
def dataroot(tmp_path_factory):
    root = tmp_path_factory.mktemp('raw')
    rng = np.random.default_rng(0)
    events = {
        'xs': rng.integers(0, WIDTH, 600),
        'ys': rng.integers(0, HEIGHT, 600),
        'ts': np.sort(rng.uniform(0, 0.5, 600)),
        'ps': rng.choice(np.array([-1, 1]), 600),
    }
    frames = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    write_raw_events_h5(
        root / 'rec.h5',
        events,
        (HEIGHT, WIDTH),
        frames=frames,
        frame_timestamps=np.arange(FRAMES) * 0.1,
        sharp_frames=255 - frames,
        exposures=np.stack([np.arange(FRAMES) * 0.1 - 0.03, np.arange(FRAMES) * 0.1 + 0.03], 1),
    )
    return root


def make_loader(dataroot, workers):
    """A training loader as the engine builds it: random crops, every flip and fresh noise per item."""
    options = {
        'type': 'RawEventDataset',
        'name': 'raw',
        'phase': 'train',
        'dataroot': str(dataroot),
        'mode': 'reblur',
        'crop_size': 8,
        'use_flip': True,
        'use_hflip': True,
        'use_vflip': True,
        'use_rot90': True,
        'add_noise': True,
        'return_mask': True,
        'batch_size_per_gpu': BATCH,
        'num_worker_per_gpu': workers,
        'persistent_workers': True,
    }
    options = validated(DATASET_REGISTRY, options)
    dataset = RawEventDataset(options)
    sampler = EnlargedSampler(dataset, 1, 0, ratio=RATIO, seed=SEED, item_seeds=True)
    return sampler, build_dataloader(dataset, options, sampler=sampler, seed=SEED)


def take_batches(sampler, loader, count, state=None):
    """``count`` batches as the training loop takes them, from the start or from ``state``; and the new state.

    The loop counts the items it consumed in the epoch itself (workers fetch ahead of it).
    """
    if state is not None:
        sampler.load_state_dict(state)
    epoch, consumed = sampler.epoch, sampler.start
    batches = []
    while len(batches) < count:
        sampler.set_epoch(epoch, consumed)
        for batch in loader:
            batches.append(batch)
            consumed += BATCH
            if len(batches) == count:
                break
        else:
            epoch, consumed = epoch + 1, 0
    return batches, sampler.state_dict(consumed)


def assert_same_batches(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.keys() == want.keys()
        for key in ('frame', 'frame_gt', 'voxel', 'mask'):
            assert torch.equal(got[key], want[key]), key
        assert got['name'] == want['name']


@pytest.mark.parametrize('workers', [0, 2])
def test_resumed_loader_continues_with_the_batches_of_the_uninterrupted_run(dataroot, workers):
    per_epoch = FRAMES * RATIO // BATCH  # 6 batches
    whole, _ = take_batches(*make_loader(dataroot, workers), 2 * per_epoch + 2)
    for stop in (4, per_epoch, per_epoch + 1):  # mid-epoch, at the epoch's end, just after it
        first, state = take_batches(*make_loader(dataroot, workers), stop)
        rest, _ = take_batches(*make_loader(dataroot, workers), len(whole) - stop, save_and_load(state))
        assert_same_batches(first + rest, whole)
    crops = {batch['frame'][0].sum().item() for batch in whole}
    assert len(crops) > len(whole) // 2  # the draws differ from item to item


def test_batches_do_not_depend_on_the_number_of_workers(dataroot):
    without, _ = take_batches(*make_loader(dataroot, 0), 5)
    with_workers, _ = take_batches(*make_loader(dataroot, 2), 5)
    assert_same_batches(with_workers, without)


def test_iterating_the_loader_leaves_the_global_generators_alone(dataroot):
    sampler, loader = make_loader(dataroot, 0)
    set_random_seed(1)
    expected = draw_everything()
    set_random_seed(1)
    take_batches(sampler, loader, 3)
    assert draw_everything() == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_restored_rng_state_repeats_the_cuda_draws():
    set_random_seed(3)
    state = save_and_load(capture_rng_state())
    assert len(state['cuda']) == torch.cuda.device_count()
    expected = torch.rand(4, device='cuda')
    set_random_seed(99)
    restore_rng_state(state)
    assert torch.equal(torch.rand(4, device='cuda'), expected)


def train(dataroot, workers, total_iter, stop_after=None, state=None):
    """A reference training loop wired as the engine must be (see the resume wiring notes), with random draws in
    the step (dropout); returns the weights, or the training state when it stops after ``stop_after`` iterations."""
    set_random_seed(SEED)
    sampler, loader = make_loader(dataroot, workers)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Dropout(0.5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    current_iter = 0
    if state is not None:  # restore order: weights and optimiser, sampler position, then the generators, last
        model.load_state_dict(state['params'])
        optimizer.load_state_dict(state['optimizer'])
        sampler.load_state_dict(state['sampler'])
        current_iter = state['iter']
        restore_rng_state(state['rng'][0])
    epoch, consumed = sampler.epoch, sampler.start
    while current_iter < total_iter:
        sampler.set_epoch(epoch, consumed)
        for batch in loader:
            current_iter, consumed = current_iter + 1, consumed + BATCH
            loss = (model(batch['frame']) - batch['frame_gt']).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if current_iter == stop_after:
                return None, {
                    'iter': current_iter,
                    'params': model.state_dict(),
                    'optimizer': optimizer.state_dict(),
                    'sampler': sampler.state_dict(consumed),
                    'rng': [capture_rng_state()],
                }
            if current_iter == total_iter:
                break
        else:
            epoch, consumed = epoch + 1, 0
    return model.state_dict(), None


@pytest.mark.parametrize('workers', [0, 1])
def test_a_stopped_and_resumed_training_ends_with_bit_identical_weights(dataroot, workers):
    whole, _ = train(dataroot, workers, total_iter=14)
    for stop_after in (4, 6):  # mid-epoch and at the end of the first epoch
        _, state = train(dataroot, workers, total_iter=14, stop_after=stop_after)
        resumed, _ = train(dataroot, workers, total_iter=14, state=save_and_load(state))
        for name, value in whole.items():
            assert torch.equal(resumed[name], value), name


@pytest.mark.parametrize('phase', ['val', 'test'])
def test_evaluation_loaders_leave_the_global_generators_alone(dataroot, phase):
    loader = build_dataloader(
        RawEventDataset(
            validated(
                DATASET_REGISTRY, {'type': 'RawEventDataset', 'name': 'raw', 'phase': phase, 'dataroot': str(dataroot)}
            )
        ),
        {'phase': phase},
    )
    set_random_seed(1)
    expected = draw_everything()
    set_random_seed(1)
    assert len(list(loader)) == FRAMES - 2
    assert draw_everything() == expected
