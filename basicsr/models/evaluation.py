"""Evaluation helpers: tiled inference, metric records, summaries and the result table."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``.

    The last tile is aligned to the end, so every tile lies inside the image.
    """
    if tile >= length:
        return [0]
    stride = max(tile - overlap, 1)
    count = math.ceil((length - tile) / stride) + 1
    return sorted({min(i * stride, length - tile) for i in range(count)})


@torch.no_grad()
def tiled_forward(
    forward: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor | None],
    tile: int,
    overlap: int,
    max_minibatch: int,
) -> torch.Tensor:
    """Run ``forward`` on overlapping tiles and average the overlaps back into a full frame.

    Args:
        forward: ``forward(*tile_inputs) -> (n, C_out, t_h, t_w)`` for a batch of tiles.
        inputs: tensors of shape (1, C_k, H, W) sharing H and W (e.g. frame, voxel, mask), every one cut
            at the same positions; a None stays None (e.g. no mask).
        tile: tile side in pixels (smaller frames use one tile of the frame size).
        overlap: minimum overlap between neighbouring tiles, in pixels.
        max_minibatch: tiles per forward call.

    Returns:
        (1, C_out, H, W) tensor: per pixel, the mean of the tiles covering it.
    """
    first = inputs[0]
    height, width = first.shape[-2:]
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows, cols = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    boxes = [(top, left) for top in rows for left in cols]
    output = None
    weight = first.new_zeros(1, 1, height, width)
    for start in range(0, len(boxes), max_minibatch):
        chunk = boxes[start : start + max_minibatch]
        tiles = [
            None if t is None else torch.cat([t[..., y : y + tile_h, x : x + tile_w] for y, x in chunk]) for t in inputs
        ]
        pred = forward(*tiles).float()
        if output is None:
            output = first.new_zeros(1, pred.shape[1], height, width, dtype=torch.float32)
        for (y, x), piece in zip(chunk, pred):
            output[0, :, y : y + tile_h, x : x + tile_w] += piece
            weight[..., y : y + tile_h, x : x + tile_w] += 1
    return output / weight


def mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float('nan')


def summarize_records(records: list[dict]) -> dict:
    """Average per-image metric records overall and per sequence.

    Args:
        records: one dict per image: ``{'seq': str, 'output': {metric: value}, 'input': {...}}``.

    Returns:
        ``{'output': {...}, 'input': {...}, 'per_sequence': {seq: {'output': {...}, 'input': {...}}}}``
        with the mean of each metric over the images (over all images for the overall entry, so
        a long sequence weighs more, as in the reference).
    """

    def average(group: list[dict], kind: str) -> dict[str, float]:
        names = group[0][kind].keys() if group else []
        return {name: mean([r[kind][name] for r in group]) for name in names}

    by_seq: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_seq[record['seq']].append(record)
    return {
        'output': average(records, 'output'),
        'input': average(records, 'input'),
        'per_sequence': {
            seq: {'output': average(group, 'output'), 'input': average(group, 'input')}
            for seq, group in sorted(by_seq.items())
        },
    }


def format_table(dataset_name: str, summary: dict) -> str:
    """A plain-text table: one row per sequence and one for the whole set, output and input."""
    metrics = list(summary['output'])
    if not metrics:
        return f'{dataset_name}: no metrics (no ground truth or no val.metrics)'
    header = ['sequence'] + [f'{m} out' for m in metrics] + [f'{m} in' for m in metrics]
    rows = [
        [seq] + [f'{v["output"][m]:.4f}' for m in metrics] + [f'{v["input"][m]:.4f}' for m in metrics]
        for seq, v in summary['per_sequence'].items()
    ]
    rows.append(
        ['ALL'] + [f'{summary["output"][m]:.4f}' for m in metrics] + [f'{summary["input"][m]:.4f}' for m in metrics]
    )
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = [' | '.join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [header] + rows]
    lines.insert(1, '-+-'.join('-' * w for w in widths))
    return f'Test set {dataset_name}:\n' + '\n'.join(lines)
