"""basicsr/deblur.py and the Deblurrer: equal to the training pipeline, SCER by hand, a real DAVIS recording,
settings read from checkpoint shapes, and every bad input by its message (CPU, tiny networks)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO_ROOT, load_script

from basicsr.archs.efnet_arch import EFNet, efnet_options_from_state_dict
from basicsr.deblur import Deblurrer, run_deblur
from basicsr.engine.deblurring import EventSettings, event_input
from basicsr.events import write_raw_events_h5
from basicsr.utils.checkpoint import save_network
from basicsr.utils.errors import InvalidInputError, MissingInputError, UserError

STREET = REPO_ROOT / 'tests' / 'data' / 'davis346_street' / 'street.aedat4'
SCRIPTS = REPO_ROOT / 'scripts' / 'data_preparation'
HEIGHT, WIDTH = 32, 40


@pytest.fixture(autouse=True)
def basicsr_logger_restored():
    """run_deblur sets up the 'basicsr' logger (console handler, no propagation) as the command does; undo it, so
    later tests in this worker see the logger as a fresh process would."""
    logger = logging.getLogger('basicsr')
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def tiny_weights(path: Path, wf: int = 8, depth: int = 2, ev_chn: int = 6, key: str = 'params') -> Path:
    torch.manual_seed(0)
    net = EFNet(wf=wf, depth=depth, ev_chn=ev_chn, num_heads=(1, 2, 4)[:depth])
    torch.save({key: net.state_dict()}, path)  # the published checkpoints' format
    return path


def random_events(n: int, t0: float, t1: float, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(t0, t1, n))
    return {'xs': rng.integers(0, WIDTH, n), 'ys': rng.integers(0, HEIGHT, n), 'ts': ts, 'ps': rng.integers(0, 2, n)}


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """A colour frame, its events (0 .. 0.1 s, exposure [0.02, 0.08)) as raw-event HDF5 and as text in ms."""
    root = tmp_path_factory.mktemp('scene')
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    cv2.imwrite(str(root / 'blurry.png'), frame)
    events = random_events(3000, 0.0, 0.1)
    (root / 'raw').mkdir()
    write_raw_events_h5(
        root / 'raw' / 'scene.h5',
        events,
        (HEIGHT, WIDTH),
        frames=frame[None],
        frame_timestamps=np.array([0.05]),
        exposures=np.array([[0.02, 0.08]]),
    )
    table = np.stack([events['ts'] * 1e3, events['xs'], events['ys'], events['ps']], axis=1)
    np.savetxt(root / 'events.txt', table, fmt=['%.9f', '%d', '%d', '%d'])
    return {
        'root': root,
        'frame': frame,
        'h5': root / 'raw' / 'scene.h5',
        'txt': root / 'events.txt',
        'weights': tiny_weights(root / 'tiny.pth'),
    }


def test_one_frame_equals_convert_make_voxels_and_test_py(scene, tmp_path, run_python):
    convert_events, make_voxels = load_script(SCRIPTS / 'convert_events.py'), load_script(SCRIPTS / 'make_voxels.py')
    assert convert_events.main(['--input', str(scene['h5']), '--output', str(tmp_path / 'raw' / 'scene.h5')]) == 0
    assert (
        make_voxels.main(
            ['--input_path', str(tmp_path / 'raw'), '--save_path', str(tmp_path / 'test'), '--mode', 'reblur']
        )
        == 0
    )
    options = {
        'name': 'pipeline',
        'model_type': 'TestImageEventRestorationModel',
        'num_gpu': 0,
        'datasets': {
            'test': {
                'name': 'mine',
                'type': 'H5ImageDataset',
                'dataroot': str(tmp_path / 'test'),
                'return_gt_frame': False,
                'return_mask': True,
                'use_mask': True,
            }
        },
        'network_g': {'type': 'EFNet', 'wf': 8, 'depth': 2, 'num_heads': [1, 2]},
        'path': {'root': str(tmp_path), 'pretrain_network_g': str(scene['weights'])},
        'val': {'save_img': True, 'rgb2bgr': False},
    }
    (tmp_path / 'test.yml').write_text(yaml.safe_dump(options))
    result = run_python(str(REPO_ROOT / 'basicsr' / 'test.py'), '-opt', str(tmp_path / 'test.yml'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = cv2.imread(str(next((tmp_path / 'results' / 'pipeline' / 'visualization').rglob('*.png'))))

    # the same frame and events, the events as text in milliseconds
    assert (
        run_deblur(
            [
                '--weights',
                str(scene['weights']),
                '--image',
                str(scene['root'] / 'blurry.png'),
                '--events',
                str(scene['txt']),
                '--time_unit',
                'ms',
                '--exposure',
                '20',
                '80',
                '--output',
                str(tmp_path / 'sharp.png'),
                '--device',
                'cpu',
            ]
        )
        == 0
    )
    output = cv2.imread(str(tmp_path / 'sharp.png'))
    assert output.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(output.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(output.astype(int) - scene['frame'].astype(int)).max() > 1  # the network did something


def test_voxel_and_masks_of_hand_made_events():
    # 6 bins over [t0, t0 + 0.06): boundaries every 0.01 s, t_mid = t0 + 0.03; absolute Unix-like times
    t0 = 1.6e9
    pixels = {'a': (0, 0), 'b': (1, 0), 'c': (0, 1), 'd': (1, 1), 'e': (2, 1)}
    rows = [
        (0.0, 'a', 1),
        (0.005, 'e', 1),
        (0.015, 'b', 0),
        (0.035, 'c', 1),
        (0.055, 'd', 1),
        (0.0555, 'e', 1),
        (0.06, 'd', 0),
    ]  # the last event only closes the window: SCER does not count it
    events = {
        'ts': np.array([t0 + t for t, _, _ in rows]),
        'xs': np.array([pixels[p][0] for _, p, _ in rows]),
        'ys': np.array([pixels[p][1] for _, p, _ in rows]),
        'ps': np.array([p for _, _, p in rows]),
    }
    expected = np.zeros((6, 2, 3), dtype=np.float32)

    def put(channels, pixel, value):
        x, y = pixels[pixel]
        expected[channels, y, x] += value

    put([0], 'a', -1)  # left channels k: minus the polarity sum over [b_k, t_mid)
    put([0], 'e', -1)
    put([0, 1], 'b', +1)  # an OFF event in [0.01, 0.02)
    put([3, 4, 5], 'c', +1)  # right channels k: the sum over [t_mid, b_{k+1})
    put([5], 'd', +1)
    put([5], 'e', +1)
    closing = event_input(events, (2, 3), EventSettings.for_channels(6))
    np.testing.assert_array_equal(closing.counts, expected)
    np.testing.assert_array_equal(closing.voxel, expected)  # max |count| is 1
    assert closing.mask.tolist() == [[255, 255, 255], [255, 255, 255]]  # 3x3 closing fills the gap at (2, 0)
    nonzero = event_input(events, (2, 3), EventSettings.for_channels(7, mask='nonzero', voxel_norm='robust'))
    assert nonzero.counts.shape == (7, 2, 3) and not nonzero.counts[3].any()  # keep_middle
    assert nonzero.mask.tolist() == [[255, 255, 0], [255, 255, 0]]  # pixel e: -1 + 1 over the channels


class MessageCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_recording_writes_every_frame_a_video_and_warns_about_sparse_windows(tmp_path):
    weights = tiny_weights(tmp_path / 'tiny.pth', depth=1)
    out = tmp_path / 'street'
    basicsr_logger = logging.getLogger('basicsr')  # it does not propagate to the root logger caplog listens to
    collected = MessageCollector()
    basicsr_logger.addHandler(collected)
    try:
        assert (
            run_deblur(
                [
                    '--weights',
                    str(weights),
                    '--recording',
                    str(STREET),
                    '--output',
                    str(out),
                    '--video',
                    str(tmp_path / 'street.mp4'),
                    '--contact_sheet',
                    str(out / 'sheet' / 's.png'),
                    '--device',
                    'cpu',
                ]
            )
            == 0
        )
    finally:
        basicsr_logger.removeHandler(collected)
    frames = sorted(out.glob('*.png'))
    assert len(frames) == 59 and frames[0].name == '000000_1589163147365215.png'  # index, timestamp in µs
    assert all(cv2.imread(str(f), cv2.IMREAD_UNCHANGED).shape == (260, 346) for f in frames[::10])  # grey stays grey
    video = cv2.VideoCapture(str(tmp_path / 'street.mp4'))
    count = 0
    while video.read()[0]:
        count += 1
    assert count == 59 and video.get(cv2.CAP_PROP_FRAME_WIDTH) == 3 * 346
    assert cv2.imread(str(out / 'sheet' / 's.png')).shape == (4 * (24 + 260), 3 * 346, 3)
    warnings = [r.getMessage() for r in collected.records if r.levelno == logging.WARNING]
    listed = [w for w in warnings if 'events touching' in w]  # 0.5 ms exposures: a few dozen events per window
    assert len(listed) == 5 and listed[0].startswith('frame 1 (t = 1589163147405215 µs): 12 events touching 12 of')
    assert any(w.startswith('58 of 59 frames have exposure windows whose events touch under 0.1 %') for w in warnings)
    assert any(
        w.startswith(
            'frame 0 (t = 1589163147365215 µs): its exposure window [1589163147.364965, '
            '1589163147.365465) s is outside the events'
        )
        for w in warnings
    )  # before the first event


@pytest.mark.parametrize(('wf', 'depth', 'ev_chn'), [(8, 2, 6), (16, 3, 7), (64, 3, 6), (8, 3, 7), (16, 2, 6)])
def test_settings_are_read_from_the_shapes(wf, depth, ev_chn):
    heads = (1, 2, 4)[:depth]
    state_dict = EFNet(wf=wf, depth=depth, ev_chn=ev_chn, num_heads=heads).state_dict()
    assert efnet_options_from_state_dict(state_dict) == {
        'in_chn': 3,
        'ev_chn': ev_chn,
        'wf': wf,
        'depth': depth,
        'num_heads': heads,
    }


def test_a_state_dict_that_is_not_efnet_is_named():
    with pytest.raises(
        InvalidInputError,
        match='not an EFNet state dict: no conv_01.weight, conv_ev1.weight.*first names: weight, bias',
    ):
        efnet_options_from_state_dict(torch.nn.Conv2d(3, 8, 3).state_dict())


def test_official_checkpoint_loads_through_the_cli_and_ours_with_param_key(scene, tmp_path):
    args = [
        '--image',
        str(scene['root'] / 'blurry.png'),
        '--events',
        str(scene['h5']),
        '--exposure',
        '0.02',
        '0.08',
        '--device',
        'cpu',
    ]
    official = tiny_weights(tmp_path / 'official.pth', wf=16, depth=3, ev_chn=7)  # {'params': ...}, 7 channels
    assert run_deblur(['--weights', str(official), '--output', str(tmp_path / 'a.png'), *args]) == 0
    ours = tmp_path / 'ours.pth'
    net = EFNet(wf=8, depth=2, num_heads=(1, 2), relu_slope=0.1)
    save_network(net, ours, param_key='params_ema')
    option_file = tmp_path / 'net.yml'
    option_file.write_text('network_g: {type: EFNet, wf: 8, relu_slope: 0.1}\n')
    assert (
        run_deblur(
            [
                '--weights',
                str(ours),
                '--param_key',
                'params_ema',
                '-opt',
                str(option_file),
                '--output',
                str(tmp_path / 'b.png'),
                *args,
            ]
        )
        == 0
    )
    deblurrer = Deblurrer(ours, param_key='params_ema', network_g={'relu_slope': 0.1}, device='cpu')
    events = {key: np.asarray(v) for key, v in random_events(500, 0.0, 0.1).items()}
    sharp = deblurrer(scene['frame'], events)
    grey = deblurrer(scene['frame'][..., 1], events)
    assert sharp.shape == (HEIGHT, WIDTH, 3) and sharp.dtype == np.uint8 and grey.shape == (HEIGHT, WIDTH)
    tiled = Deblurrer(
        ours, param_key='params_ema', network_g={'relu_slope': 0.1}, device='cpu', tile=16, tile_overlap=4
    )
    assert tiled(scene['frame'], events).shape == (HEIGHT, WIDTH, 3)
    with pytest.raises(InvalidInputError, match=r'network_g.wf is 16 but the weights .* have wf = 8'):
        Deblurrer(ours, param_key='params_ema', network_g={'wf': 16}, device='cpu')


def test_folder_with_timestamp_names_and_with_a_sidecar(scene, tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for stamp in (30000, 60000):  # µs, exposures of 20 ms around them (sync mid)
        cv2.imwrite(str(folder / f'{stamp}.png'), scene['frame'])
    base = ['--weights', str(scene['weights']), '--events', str(scene['h5']), '--device', 'cpu']
    assert (
        run_deblur(
            [
                *base,
                '--image',
                str(folder),
                '--time_unit',
                'us',
                '--exposure_time',
                '20000',
                '--output',
                str(tmp_path / 'out1'),
                '--save_events',
            ]
        )
        == 0
    )
    assert cv2.imread(str(tmp_path / 'out1' / 'events' / '30000.png')).shape == (HEIGHT, WIDTH, 3)
    (folder / 'exposures.txt').write_text('# name start end\n30000.png, 0.02, 0.04\n60000.png 0.05 0.07\n')
    assert run_deblur([*base, '--image', str(folder), '--output', str(tmp_path / 'out2')]) == 0
    for name in ('30000.png', '60000.png'):
        np.testing.assert_array_equal(
            cv2.imread(str(tmp_path / 'out1' / name)), cv2.imread(str(tmp_path / 'out2' / name))
        )


def bad_input_cases(scene, tmp_path):
    """(arguments that replace the good ones, expected message pattern) for each anticipated mistake."""
    (tmp_path / 'not_an_image.png').write_text('hello')
    cv2.imwrite(str(tmp_path / 'small.png'), scene['frame'][:30, :36])
    cv2.imwrite(str(tmp_path / 'bgra.png'), np.dstack([scene['frame'], np.full((HEIGHT, WIDTH), 255, np.uint8)]))
    table = np.loadtxt(scene['txt'])
    table[0, 1] = WIDTH + 5  # an event outside the 40-pixel wide frame
    np.savetxt(tmp_path / 'outside.txt', table)
    torch.save({'params': torch.nn.Conv2d(3, 8, 3).state_dict()}, tmp_path / 'foreign.pth')
    (tmp_path / 'truncated.pth').write_bytes(scene['weights'].read_bytes()[:2000])
    return [
        ({'--image': tmp_path / 'missing.png'}, "--image '.*missing.png' does not exist"),
        ({'--image': tmp_path / 'not_an_image.png'}, 'cannot be read as an image'),
        ({'--image': tmp_path / 'small.png'}, r'is 36x30 \(WxH\) but the events file .* 40x32 sensor'),
        ({'--image': tmp_path / 'bgra.png'}, 'has 4 channels; expected 3 .* Remove the alpha channel'),
        ({'--events': tmp_path / 'outside.txt', '--time_unit': 'ms'}, 'lie outside image .* x up to 45'),
        ({'--events': tmp_path / 'missing.h5'}, "events file '.*missing.h5' does not exist"),
        (
            {'--exposure': ('5', '6')},
            r'exposure window \[5.000000, 6.000000\) s is outside the events .* span '
            r'\[0.0',
        ),
        ({'--exposure': ('0.0200001', '0.0200002')}, 'is without events'),
        ({'--weights': tmp_path / 'missing.pth'}, "weights file '.*missing.pth' does not exist"),
        ({'--weights': tmp_path / 'foreign.pth'}, 'not an EFNet state dict: no conv_01.weight'),
        ({'--weights': tmp_path / 'truncated.pth'}, 'is not a readable torch file'),
        ({'--param_key': 'params_ema'}, "has no key 'params_ema'.*--param_key"),
    ]


def test_every_bad_input_gets_its_message(scene, tmp_path):
    good = {
        '--weights': scene['weights'],
        '--image': scene['root'] / 'blurry.png',
        '--events': scene['h5'],
        '--exposure': ('0.02', '0.08'),
        '--output': tmp_path / 'out.png',
        '--device': 'cpu',
    }
    for change, pattern in bad_input_cases(scene, tmp_path):
        arguments = {**good, **change}
        argv = [
            str(v)
            for key, value in arguments.items()
            for v in ([key, *value] if isinstance(value, tuple) else [key, value])
        ]
        with pytest.raises(UserError, match=pattern):
            run_deblur(argv)
    assert not (tmp_path / 'out.png').exists()


def test_the_command_exits_2_with_one_error_paragraph(scene, tmp_path, run_python):
    result = run_python(
        str(REPO_ROOT / 'basicsr' / 'deblur.py'),
        '--weights',
        str(scene['weights']),
        '--image',
        str(scene['root'] / 'blurry.png'),
        '--events',
        str(scene['h5']),
        '--exposure',
        '5',
        '6',
        '--output',
        str(tmp_path / 'out.png'),
        '--device',
        'cpu',
    )
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'outside the events' in errors[0]


def test_deblurrer_rejects_a_bad_frame_and_a_missing_file(scene):
    deblurrer = Deblurrer(scene['weights'], device='cpu')
    events = random_events(10, 0, 1)
    with pytest.raises(InvalidInputError, match=r'\(H, W, 3\) colour uint8, got shape \(32, 40, 4\)'):
        deblurrer(np.zeros((HEIGHT, WIDTH, 4), np.uint8), events)
    with pytest.raises(MissingInputError):
        Deblurrer(scene['root'] / 'none.pth')


def test_importable_as_documented():
    import basicsr.deblur

    assert basicsr.deblur.Deblurrer is Deblurrer and callable(basicsr.deblur.main)
    assert 'deblur' in sys.modules['basicsr.deblur'].__doc__
