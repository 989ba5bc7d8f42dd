"""The test loop (``test.py``) and the validation log line shared with training."""

from __future__ import annotations

import logging

from basicsr.engine.context import RunContext
from basicsr.engine.run_setup import (
    attach_log_file,
    build_eval_loaders,
    build_model,
    check_event_channels,
    close_logging,
    cores_per_process,
    prepare_run_folders,
    seed_run,
    size_compute_threads,
    start_logging,
)
from basicsr.models.evaluation import format_table
from basicsr.utils.dist_util import destroy_dist
from basicsr.utils.file_io import write_json_atomic
from basicsr.utils.option_schema import FrozenDict


def log_validation(logger: logging.Logger, dataset_name: str, current_iter: int, result: dict | None) -> None:
    """One line with the metrics of the output and of the blurry input (rank 0; ``result`` None elsewhere)."""
    if result is None:
        return
    summary = result['summary']
    text = ' '.join(f'# {k}: {v:.4f}' for k, v in summary['output'].items())
    gain = ' '.join(f'{k} {v:.4f}' for k, v in summary['input'].items())
    logger.info('Validation %s, iter %d, %s (blurry input: %s)', dataset_name, current_iter, text, gain or '-')


def test_pipeline(opt: FrozenDict, ctx: RunContext) -> dict:
    """Evaluate every test (and val) set; returns the metrics written to ``results/<name>/metrics.json``
    (rank 0; {} elsewhere)."""
    logger = start_logging(opt, ctx)
    try:
        seed = seed_run(opt, ctx)
        size_compute_threads(cores_per_process(ctx), loader_workers=0)  # test sets load in this process
        if opt['path']['pretrain_network_g'] is None:
            logger.warning('path.pretrain_network_g is not set: testing a randomly initialised network.')
        loaders = build_eval_loaders(opt, ctx, phases=('test', 'val'), seed=seed)
        model = build_model(opt, ctx)
        check_event_channels(model, {dataset_opt['name']: loader.dataset for dataset_opt, loader in loaders})
        prepare_run_folders(opt, ctx, resuming=False)
        attach_log_file(opt, ctx)
        all_metrics = {}
        for dataset_opt, loader in loaders:
            save_dir = ctx.paths.visualization / dataset_opt['name'] if opt['val']['save_img'] else None
            result = model.validation(loader, dataset_opt, current_iter=-1, save_dir=save_dir)
            if result is None:
                continue
            if not result['summary']['output']:
                logger.warning(
                    'No metrics for %s: the set has no ground truth (return_gt_frame: false) or val.metrics is empty.',
                    dataset_opt['name'],
                )
            logger.info(format_table(dataset_opt['name'], result['summary']))
            all_metrics[dataset_opt['name']] = result['summary']
        if ctx.is_main:
            path = ctx.paths.results_root / 'metrics.json'
            write_json_atomic(path, all_metrics)
            logger.info('Metrics written to %s', path)
        return all_metrics
    finally:
        close_logging()
        destroy_dist()
