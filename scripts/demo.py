"""The demo behind `make demo`: synthetic data -> train a small EFNet -> test.py -> comparison figure.

    python scripts/demo.py --train_opt options/train/Synthetic/EFNet_demo.yml \
                           --test_opt options/test/Synthetic/EFNet_demo.yml

1. builds ``datasets/GoPro_synthetic/{train,test}`` with make_synthetic_gopro.py if absent;
2. trains the demo configuration (``--auto_resume``: a finished run is not trained again);
3. evaluates it with basicsr/test.py and prints PSNR/SSIM of the blurry input and of the output;
4. writes ``figures/demo_comparison.png``: blurry | events | output | sharp for a few test samples.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from basicsr.engine.options import load_options
from basicsr.engine.run_setup import build_dataset
from basicsr.utils.img_util import imread, imwrite, tensor2img

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str]) -> None:
    print('$', ' '.join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def has_h5_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob('*.h5'))


def ensure_synthetic_data(train_opt, test_opt) -> None:
    folders = [Path(train_opt['datasets']['train']['dataroot']), Path(test_opt['datasets']['test']['dataroot'])]
    if all(has_h5_files(ROOT / f) for f in folders):
        print(f'Synthetic data found in {", ".join(map(str, folders))}.')
        return
    run([sys.executable, 'scripts/data_preparation/make_synthetic_gopro.py'])


def event_image(voxel: np.ndarray) -> np.ndarray:
    """SCER (C, H, W) -> BGR uint8 picture: net polarity of the window, red ON, blue OFF, white none.

    The last channel sums the second half of the window and the first one minus the first half,
    so their difference is the net polarity per pixel over the whole window.
    """
    net = voxel[-1] - voxel[0]
    scale = max(np.abs(net).max(), 1e-6)
    strength = np.clip(np.abs(net) / scale * 2.0, 0, 1)[..., None]
    on_colour, off_colour = np.array([40, 40, 220.0]), np.array([220, 90, 30.0])
    colour = np.where(net[..., None] > 0, on_colour, off_colour)
    picture = 255.0 * (1 - strength) + colour * strength
    return picture.astype(np.uint8)


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def comparison_figure(test_opt, visualization: Path, out_path: Path, samples: int = 3) -> None:
    """Rows of blurry | events | output | sharp for the first image of a few test sequences."""
    dataset_opt = test_opt['datasets']['test']
    dataset = build_dataset(dataset_opt)
    rows, seen = [], set()
    for i in range(len(dataset)):
        item = dataset[i]
        if item['seq'] in seen:
            continue
        seen.add(item['seq'])
        output = imread(visualization / dataset_opt['name'] / item['seq'] / f'{item["index"]:04d}.png')
        panels = [
            label(tensor2img(item['frame'], rgb2bgr=False), 'blurry'),
            label(event_image(item['voxel'].numpy()), 'events (SCER)'),
            label(output, 'EFNet output'),
            label(tensor2img(item['frame_gt'], rgb2bgr=False), 'sharp'),
        ]
        rows.append(np.concatenate(panels, axis=1))
        if len(rows) == samples:
            break
    imwrite(np.concatenate(rows, axis=0), out_path)
    print(f'Figure written to {out_path.relative_to(ROOT)}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--train_opt', default='options/train/Synthetic/EFNet_demo.yml')
    parser.add_argument('--test_opt', default='options/test/Synthetic/EFNet_demo.yml')
    parser.add_argument('--figure', default='figures/demo_comparison.png')
    args = parser.parse_args()
    train_opt = load_options(ROOT / args.train_opt, is_train=True)
    test_opt = load_options(ROOT / args.test_opt, is_train=False)

    ensure_synthetic_data(train_opt, test_opt)
    run([sys.executable, 'basicsr/train.py', '-opt', args.train_opt, '--auto_resume'])
    run([sys.executable, 'basicsr/test.py', '-opt', args.test_opt])

    results = ROOT / 'results' / test_opt['name']
    metrics = json.loads((results / 'metrics.json').read_text())
    for set_name, summary in metrics.items():
        print(f'\n{set_name}:')
        for kind in ('input', 'output'):
            values = ', '.join(f'{k} {v:.4f}' for k, v in summary[kind].items())
            print(f'  {"blurry input" if kind == "input" else "EFNet output"}: {values}')
        gain = summary['output']['psnr'] - summary['input']['psnr']
        print(f'  PSNR gain: {gain:+.2f} dB')
    comparison_figure(test_opt, results / 'visualization', ROOT / args.figure)


if __name__ == '__main__':
    main()
