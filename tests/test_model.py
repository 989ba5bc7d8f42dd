"""The restoration model in process: loss composition, clipping, EMA, mixed precision, tiling, protocol crops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from basicsr.data import build_dataloader
from basicsr.data.h5_layout import TrainingH5Writer
from basicsr.engine.context import ExperimentPaths, RunContext
from basicsr.engine.options import OptionsError, load_options
from basicsr.engine.run_setup import build_dataset, build_model, check_event_channels
from basicsr.models.evaluation import format_table, summarize_records, tile_starts, tiled_forward
from basicsr.models.image_event_restoration_model import swaps_channels
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.img_util import imread
from basicsr.utils.registry import ARCH_REGISTRY, build

ROOT = Path(__file__).resolve().parents[1]


def write_file(path: Path, num_items: int, height: int, width: int, channels: int = 6, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with TrainingH5Writer(path) as writer:
        for _ in range(num_items):
            sharp = rng.integers(0, 256, size=(3, height, width), dtype=np.uint8)
            blurry = (sharp // 2 + 60).astype(np.uint8)
            voxel = rng.normal(size=(channels, height, width)).astype(np.float32)
            mask = (rng.random((1, height, width)) < 0.5).astype(np.uint8) * 255
            writer.add(blurry, voxel=voxel, mask=mask, sharp=sharp)


def make_model(tmp_path: Path, data: Path, is_train: bool = True, **changes):
    options = {
        'name': 'unit',
        'model_type': 'ImageEventRestorationModel',
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': {
                'name': 'tr',
                'type': 'H5ImageDataset',
                'dataroot': str(data),
                'crop_size': 16,
                'return_mask': True,
                'use_mask': True,
                'batch_size_per_gpu': 2,
            },
            'val': {
                'name': 'va',
                'type': 'H5ImageDataset',
                'dataroot': str(data),
                'return_mask': True,
                'use_mask': True,
            },
        },
        'network_g': {'type': 'EFNet', 'wf': 8},
        'path': {'root': str(tmp_path)},
        'performance': {'amp': None, 'channels_last': False, 'compile': False},  # exact float32 numbers
        'train': {
            'optim_g': {'type': 'Adam', 'lr': 1e-3},
            'total_iter': 10,
            'pixel_opt': {'type': 'PSNRLoss', 'loss_weight': 0.5},
        },
        'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}, 'pbar': False, 'rgb2bgr': False},
    }
    for dotted, value in changes.items():
        node = options
        keys = dotted.split('__')
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    path = tmp_path / 'opt.yml'
    path.write_text(yaml.safe_dump(options))
    opt = load_options(path, is_train=is_train)
    ctx = RunContext(
        opt_path=path,
        is_train=is_train,
        launcher='none',
        rank=0,
        world_size=1,
        local_rank=0,
        auto_resume=False,
        debug=False,
        device=torch.device('cpu'),
        paths=ExperimentPaths.derive(opt, is_train),
    )
    torch.manual_seed(0)
    return build_model(opt, ctx), opt


@pytest.fixture()
def data(tmp_path) -> Path:
    folder = tmp_path / 'data'
    write_file(folder / 'seq_a.h5', num_items=2, height=24, width=20)
    return folder


def train_batch(opt):
    dataset = build_dataset(opt['datasets']['train'])
    return next(iter(build_dataloader(dataset, opt['datasets']['train'], seed=0)))


def test_loss_is_the_sum_over_both_stages_and_gradients_are_clipped(tmp_path, data):
    model, opt = make_model(tmp_path, data)
    batch = train_batch(opt)
    model.feed_data(batch)
    with torch.no_grad():
        out_1, out_2 = model.net_g(model.frame, model.voxel, model.mask)

    def psnr_loss(pred):
        mse = ((pred - model.frame_gt) ** 2).mean(dim=(1, 2, 3))
        return 0.5 * 10 / math.log(10) * torch.log(mse + 1e-8).mean()

    model.optimize_parameters(1)
    log = model.get_current_log()
    assert log['l_pix_1'] == pytest.approx(float(psnr_loss(out_1)), rel=1e-5)
    assert log['l_pix_2'] == pytest.approx(float(psnr_loss(out_2)), rel=1e-5)
    assert log['l_pix'] == pytest.approx(log['l_pix_1'] + log['l_pix_2'], rel=1e-6)
    grads = [p.grad for p in model.net_g.parameters() if p.grad is not None]
    assert len(grads) == len(list(model.net_g.parameters()))  # EMGC is trained: the mask is used
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert log['grad_norm'] > 0.01 and float(total_norm) == pytest.approx(0.01, rel=1e-4)


def test_stage_weights_and_no_clipping(tmp_path, data):
    model, opt = make_model(tmp_path, data, train__stage_weights=[0.0, 1.0], train__use_grad_clip=False)
    model.feed_data(train_batch(opt))
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert log['l_pix_1'] == 0.0 and log['l_pix'] == pytest.approx(log['l_pix_2'])
    grads = [p.grad for p in model.net_g.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert float(norm) == pytest.approx(log['grad_norm'], rel=1e-5)


def test_ema_weights_are_saved_and_used_for_testing(tmp_path, data):
    model, opt = make_model(tmp_path, data, train__ema_decay=0.5)
    before = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    model.feed_data(train_batch(opt))
    model.optimize_parameters(1)
    after = model.net_g.state_dict()
    for name, ema in model.net_g_ema.state_dict().items():
        assert torch.allclose(ema, 0.5 * before[name] + 0.5 * after[name], atol=1e-6)
    model.save(epoch=0, current_iter=1)
    checkpoint = torch.load(tmp_path / 'experiments/unit/models/net_g_1.pth', weights_only=True)
    assert set(checkpoint) == {'params', 'params_ema', 'meta'}
    assert checkpoint['meta']['network_g'] == {
        'type': 'EFNet',
        'wf': 8,
        'in_chn': 3,
        'ev_chn': 6,
        'depth': 3,
        'fuse_before_downsample': True,
        'relu_slope': 0.2,
        'num_heads': [1, 2, 4],
    }
    for name, value in model.net_g_ema.state_dict().items():
        assert torch.equal(checkpoint['params_ema'][name], value)
    with torch.no_grad():
        expected = model.net_g_ema(model.frame, model.voxel, model.mask)[-1]
    assert torch.allclose(model.test(model.frame, model.voxel, model.mask), expected)
    plain = model.net_g(model.frame, model.voxel, model.mask)[-1]
    assert not torch.allclose(model.test(model.frame, model.voxel, model.mask), plain)


def test_bf16_autocast_on_cpu_trains(tmp_path, data):
    model, opt = make_model(tmp_path, data, performance={'amp': 'bf16'})
    model.feed_data(train_batch(opt))
    model.optimize_parameters(1)
    assert all(math.isfinite(v) for v in model.get_current_log().values())


def test_fp16_on_cpu_is_refused_naming_the_option(tmp_path, data):
    with pytest.raises(ValueError, match='performance.amp: fp16 needs a CUDA device'):
        make_model(tmp_path, data, performance={'amp': 'fp16'})


def test_voxel_channels_must_match_the_network_before_the_first_batch(tmp_path):
    folder = tmp_path / 'data7'
    write_file(folder / 'seq.h5', num_items=2, height=16, width=16, channels=7)
    model, opt = make_model(tmp_path, folder)
    dataset = build_dataset(opt['datasets']['train'])
    assert dataset.voxel_channels == 7
    with pytest.raises(
        InvalidInputError,
        match="Data set 'tr' gives voxels with 7 channels but network_g.ev_chn is 6; "
        'make them equal: set network_g.ev_chn',
    ):
        check_event_channels(model, {'tr': dataset})
    matching, _ = make_model(tmp_path, folder, network_g={'type': 'EFNet', 'wf': 8, 'ev_chn': 7})
    check_event_channels(matching, {'tr': dataset})


def test_tiled_validation_equals_the_mean_of_tile_outputs_and_tiles_the_mask(tmp_path, data):
    model, opt = make_model(
        tmp_path, data, val__grids=True, val__crop_size=16, val__grid_overlap=4, val__max_minibatch=3
    )
    seen = []
    net = model.net_g

    def recording_forward(frame, voxel, mask):
        seen.append((tuple(frame.shape), tuple(voxel.shape), None if mask is None else tuple(mask.shape)))
        return [frame, frame * 0 + 0.25]

    model.net_g = lambda *inputs: recording_forward(*inputs)
    model.net_g.training = False
    model.net_g.eval = lambda: None
    model.net_g.train = lambda mode=True: None
    model.feed_data(next(iter(build_dataloader(build_dataset(opt['datasets']['val']), opt['datasets']['val']))))
    output = model.test(model.frame, model.voxel, model.mask)
    assert output.shape == (1, 3, 24, 20)
    assert torch.allclose(output, torch.full_like(output, 0.25))
    # 24 x 20 with 16-pixel tiles, overlap >= 4: rows start at 0, 8; columns at 0, 4 -> 4 tiles, minibatches 3 + 1
    assert seen == [((3, 3, 16, 16), (3, 6, 16, 16), (3, 1, 16, 16)), ((1, 3, 16, 16), (1, 6, 16, 16), (1, 1, 16, 16))]
    model.net_g = net


def test_tile_starts_cover_the_frame_with_the_overlap():
    assert tile_starts(10, 16, 4) == [0]
    assert tile_starts(720, 256, 32) == [0, 224, 448, 464]
    for length, tile, overlap in [(100, 30, 7), (64, 16, 0), (257, 256, 32)]:
        starts = tile_starts(length, tile, overlap)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all() and starts[-1] + tile == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_tiled_forward_of_a_pixelwise_function_equals_the_full_forward():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 37, 50)
    conv = torch.nn.Conv2d(3, 2, 1)
    full = conv(x)
    tiled = tiled_forward(
        lambda x, none: conv(x) if none is None else None, [x, None], tile=16, overlap=5, max_minibatch=4
    )
    assert torch.allclose(tiled, full, atol=1e-6)


def test_reblur_protocol_evaluates_the_first_256_rows(tmp_path):
    folder = tmp_path / 'reblur'
    write_file(folder / 'seq.h5', num_items=1, height=260, width=8)
    model, opt = make_model(
        tmp_path,
        folder,
        is_train=False,
        dataset_name='REBlur',
        model_type='TestImageEventRestorationModel',
        datasets={
            'test': {
                'name': 'te',
                'type': 'H5ImageDataset',
                'dataroot': str(folder),
                'return_mask': True,
                'use_mask': True,
            }
        },
    )
    loader = build_dataloader(build_dataset(opt['datasets']['test']), opt['datasets']['test'])
    assert opt['datasets']['test']['eval_rows'] == 256
    result = model.validation(loader, opt['datasets']['test'], current_iter=-1, save_dir=tmp_path / 'vis')
    assert imread(tmp_path / 'vis' / 'seq' / '0000.png').shape == (256, 8, 3)
    batch = next(iter(loader))
    gt = batch['frame_gt'][0, :, :256].numpy().transpose(1, 2, 0) * 255
    lq = batch['frame'][0, :, :256].numpy().transpose(1, 2, 0) * 255
    expected = 10 * np.log10(255**2 / np.mean((np.round(lq).astype(np.float64) - np.round(gt)) ** 2))
    assert result['records'][0]['input']['psnr'] == pytest.approx(expected, rel=1e-9)


def test_summaries_and_table():
    records = [
        {'seq': 'a', 'output': {'psnr': 30.0}, 'input': {'psnr': 25.0}},
        {'seq': 'a', 'output': {'psnr': 32.0}, 'input': {'psnr': 27.0}},
        {'seq': 'b', 'output': {'psnr': 40.0}, 'input': {'psnr': 20.0}},
    ]
    summary = summarize_records(records)
    assert summary['output'] == {'psnr': pytest.approx(34.0)}
    assert summary['per_sequence']['a'] == {'output': {'psnr': 31.0}, 'input': {'psnr': 26.0}}
    table = format_table('set', summary)
    assert 'ALL' in table and '34.0000' in table and 'psnr out' in table


@pytest.mark.parametrize('option_file', sorted(str(p.relative_to(ROOT)) for p in ROOT.glob('options/**/*.yml')))
def test_shipped_option_files_build_network_and_datasets(option_file, tmp_path):
    """Every shipped option file validates, and its network and data sets build on a tiny file."""
    folder = tmp_path / 'tiny'
    write_file(folder / 'seq.h5', num_items=2, height=260, width=260)
    is_train = option_file.startswith('options/train')
    raw = yaml.safe_load((ROOT / option_file).read_text())
    overrides = [f'datasets:{key}:dataroot={folder}' for key in raw['datasets']]
    overrides += ['path:pretrain_network_g=~', f'path:root={tmp_path}']
    opt = load_options(ROOT / option_file, is_train=is_train, overrides=overrides)
    net = build(ARCH_REGISTRY, opt['network_g'])
    assert sum(p.numel() for p in net.parameters()) > 0
    for dataset_opt in opt['datasets'].values():
        item = build_dataset(dataset_opt)[0]
        assert item['voxel'].shape[0] == net.ev_chn
        if dataset_opt['crop_size']:
            assert item['frame'].shape[-2:] == (dataset_opt['crop_size'],) * 2


def test_pretrained_weights_are_read_from_the_chosen_entry(tmp_path, data):
    torch.manual_seed(1)
    efnet = {'type': 'EFNet', 'wf': 8}
    params, ema = build(ARCH_REGISTRY, efnet).state_dict(), build(ARCH_REGISTRY, efnet)
    checkpoint = tmp_path / 'ckpt.pth'
    torch.save({'params': params, 'params_ema': ema.state_dict()}, checkpoint)
    for key, changes, expected in [
        ('param_key_g', {}, params),
        ('param_key', {'path__param_key': 'params_ema'}, ema.state_dict()),
    ]:
        model, _ = make_model(tmp_path, data, path__pretrain_network_g=str(checkpoint), **changes)
        for name, value in model.net_g.state_dict().items():
            assert torch.equal(value, expected[name]), (key, name)


def test_conflicting_param_keys_are_rejected(tmp_path, data):
    with pytest.raises(OptionsError, match="path.param_key: is 'params_ema' but path.param_key_g is 'params'"):
        make_model(tmp_path, data, path__param_key='params_ema', path__param_key_g='params')


class RecordingTensorBoard:
    def __init__(self):
        self.images, self.scalars = {}, {}

    def add_image(self, tag, image, step):
        self.images[tag] = image

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = value


def identity_network(model, output=None):
    """Replace the network by one that returns the blurry frame (or ``output``) as both stages."""

    class Identity(torch.nn.Module):
        def forward(self, frame, voxel, mask=None):
            result = frame if output is None else output.expand_as(frame)
            return [result, result]

    model.net_g = Identity()


def test_a_red_frame_stays_red_in_the_png_and_the_tensorboard_preview(tmp_path):
    """BGR data (the HDF5 frames) with val.rgb2bgr left at null: no swap for OpenCV, RGB for TensorBoard."""
    folder = tmp_path / 'red'
    red_bgr = np.zeros((3, 16, 16), np.uint8)
    red_bgr[2] = 255  # channel order B, G, R
    with TrainingH5Writer(folder / 'seq.h5') as writer:
        writer.add(red_bgr, voxel=np.zeros((6, 16, 16), np.float32), sharp=red_bgr)
    model, opt = make_model(
        tmp_path,
        folder,
        is_train=False,
        val__rgb2bgr=None,
        datasets={'test': {'name': 'te', 'type': 'H5ImageDataset', 'dataroot': str(folder)}},
    )
    assert opt['val']['rgb2bgr'] is None
    identity_network(model)
    dataset = build_dataset(opt['datasets']['test'])
    assert dataset.channel_order == 'BGR'
    board = RecordingTensorBoard()
    model.validation(
        build_dataloader(dataset, opt['datasets']['test']),
        opt['datasets']['test'],
        current_iter=1,
        tb_logger=board,
        save_dir=tmp_path / 'vis',
    )
    png = imread(tmp_path / 'vis' / 'seq' / '0000.png')  # OpenCV reads BGR
    assert (png[..., 2] == 255).all() and (png[..., :2] == 0).all()
    preview = board.images['val/te/0']  # blurry | output | sharp, RGB
    assert preview.shape == (3, 16, 48)
    assert torch.equal(preview[0], torch.ones(16, 48)) and not preview[1:].any()


def test_a_non_finite_output_names_the_data_set_and_item(tmp_path, data):
    model, opt = make_model(tmp_path, data, is_train=False)
    identity_network(model, output=torch.tensor(float('nan')))
    loader = build_dataloader(build_dataset(opt['datasets']['val']), opt['datasets']['val'])
    with pytest.raises(InvalidInputError, match=r"data set 'va', item seq_a/0: the network output contains NaN or inf"):
        model.validation(loader, opt['datasets']['val'], current_iter=-1)


def test_eval_rows_is_chosen_per_evaluation_set(tmp_path, data):
    sets = {
        'test': {'name': 'a', 'type': 'H5ImageDataset', 'dataroot': str(data)},
        'test_2': {'name': 'b', 'type': 'H5ImageDataset', 'dataroot': str(data), 'eval_rows': 8},
    }
    model, opt = make_model(tmp_path, data, is_train=False, datasets=sets)
    assert [d['eval_rows'] for d in opt['datasets'].values()] == [None, 8]
    _, reblur = make_model(tmp_path, data, is_train=False, datasets=sets, dataset_name='REBlur')
    assert [d['eval_rows'] for d in reblur['datasets'].values()] == [256, 8]
    identity_network(model)
    for dataset_opt, rows in zip(opt['datasets'].values(), (24, 8)):
        loader = build_dataloader(build_dataset(dataset_opt), dataset_opt)
        model.validation(loader, dataset_opt, current_iter=-1, save_dir=tmp_path / dataset_opt['name'])
        assert imread(tmp_path / dataset_opt['name'] / 'seq_a' / '0000.png').shape == (rows, 20, 3)


OFFICIAL = ROOT / 'tests' / 'data' / 'official_options'


@pytest.mark.parametrize(
    'option_file',
    sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob('options/**/*.yml'), *OFFICIAL.glob('**/*.yml')]),
)
def test_shipped_and_official_files_keep_the_colours_of_bgr_data(option_file):
    """With the HDF5 frames in BGR, no file swaps the channels for OpenCV (PNGs, metrics)."""
    val = yaml.safe_load((ROOT / option_file).read_text()).get('val') or {}
    assert swaps_channels(val.get('rgb2bgr'), 'BGR') is False
    assert swaps_channels(None, 'RGB') is True and swaps_channels(True, 'BGR') is True
