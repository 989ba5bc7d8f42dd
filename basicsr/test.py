"""Evaluate a trained model on every test (and val) set of a YAML option file.

    python basicsr/test.py -opt options/test/GoPro/EFNet.yml

Writes the restored images per sequence under ``results/<name>/visualization/<set>/<seq>/`` (with
``val.save_img``), logs a table per set, and writes ``results/<name>/metrics.json``: for each set
the metrics of the network output and of the blurry input, overall and per sequence.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ''):  # run as a script: make the package importable without installing it
    sys.path[:] = [str(Path(__file__).resolve().parents[1]) if p == str(Path(__file__).resolve().parent) else p
                   for p in sys.path]

from basicsr.models import build_model
from basicsr.models.evaluation import format_table
from basicsr.utils.dist_util import destroy_dist
from basicsr.utils.logger import close_file_handlers
from basicsr.utils.options import parse_options
from basicsr.utils.run_setup import build_eval_loaders, prepare_run_folders, seed_everything, start_logging


def test_pipeline(argv: list[str] | None = None) -> dict:
    """Run the evaluation; returns the metrics written to metrics.json (rank 0; {} elsewhere)."""
    opt, ctx = parse_options(is_train=False, argv=argv)
    prepare_run_folders(opt, ctx, resuming=False)
    logger = start_logging(opt, ctx)
    seed_everything(opt, ctx)
    if opt['path']['pretrain_network_g'] is None:
        logger.warning('path.pretrain_network_g is not set: testing a randomly initialised network.')
    loaders = build_eval_loaders(opt, ctx, phases=('test', 'val'))
    model = build_model(opt, ctx)
    all_metrics = {}
    for dataset_opt, loader in loaders:
        save_dir = ctx.paths.visualization / dataset_opt['name'] if opt['val']['save_img'] else None
        result = model.validation(loader, dataset_opt, current_iter=-1, save_dir=save_dir)
        if result is None:
            continue
        if not result['summary']['output']:
            logger.warning('No metrics for %s: the set has no ground truth (return_gt_frame: false) or val.metrics '
                           'is empty.', dataset_opt['name'])
        logger.info(format_table(dataset_opt['name'], result['summary']))
        all_metrics[dataset_opt['name']] = result['summary']
    if ctx.is_main:
        path = ctx.paths.results_root / 'metrics.json'
        path.write_text(json.dumps(all_metrics, indent=2) + '\n', encoding='utf-8')
        logger.info('Metrics written to %s', path)
    close_file_handlers()
    destroy_dist()
    return all_metrics


if __name__ == '__main__':
    test_pipeline()
