"""The image + event restoration model of EFNet: its options, training step, evaluation and test.

``TestImageEventRestorationModel`` is another registered name of the same class, so the original
option files work with either ``train.py`` or ``test.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.distributed as torch_dist
from tqdm import tqdm

from basicsr.archs.arch_util import count_parameters
from basicsr.models.base_model import BaseModel
from basicsr.models.evaluation import summarize_records, tiled_forward
from basicsr.utils.checkpoint import unwrap_network
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.img_util import imwrite, tensor2img
from basicsr.utils.option_schema import Component, FrozenDict, Key, MapOf, Node, Section
from basicsr.utils.performance import autocast, to_memory_format
from basicsr.utils.registry import (
    ARCH_REGISTRY,
    LOSS_REGISTRY,
    METRIC_REGISTRY,
    MODEL_REGISTRY,
    OPTIMIZER_REGISTRY,
    SCHEDULER_REGISTRY,
    build,
)

if TYPE_CHECKING:
    from basicsr.engine.context import RunContext

logger = logging.getLogger(__name__)


def _positive(value: Any) -> str | None:
    return None if value > 0 else f'must be > 0, got {value}'


def _val_rules(val: Mapping[str, Any]) -> list[tuple[str, str]]:
    if val['grids'] and not val['crop_size']:
        return [('crop_size', 'val.grids: true needs the tile size val.crop_size')]
    return []


TRAIN_OPTIONS = Section(
    {
        'optim_g': Component(OPTIMIZER_REGISTRY, doc='e.g. {type: AdamW, lr: 2e-4}'),
        'scheduler': Component(SCHEDULER_REGISTRY),
        'total_iter': Key(int, check=_positive, doc='number of training iterations'),
        'warmup_iter': Key(int, default=-1, doc='linear warm-up iterations; -1 = none'),
        'pixel_opt': Component(LOSS_REGISTRY, doc='e.g. {type: PSNRLoss, loss_weight: 0.5}'),
        'perceptual_opt': Key(
            (dict, None),
            default=None,
            check=lambda v: 'perceptual losses are not supported; set it to ~',
            doc='accepted for compatibility; must be null',
        ),
        'stage_weights': Key(
            (list, None), default=None, doc='per-output loss weights; null = equal weights (the reference)'
        ),
        'use_grad_clip': Key(bool, default=True, doc='clip the gradient norm (the reference does)'),
        'grad_clip_norm': Key(float, default=0.01, check=_positive, doc='max gradient norm'),
        'max_nonfinite_steps': Key(
            int,
            default=10,
            check=_positive,
            doc='stop after this many consecutive updates skipped for a NaN/inf loss or gradient',
        ),
        'ema_decay': Key(
            float,
            default=0.0,
            check=lambda v: None if 0 <= v < 1 else 'must be in [0, 1)',
            doc='EMA of the weights; 0 = off',
        ),
    }
)

VAL_OPTIONS = Section(
    {
        'val_freq': Key(int, default=5000, check=_positive, doc='validate every N iterations'),
        'save_img': Key(bool, default=False),
        'grids': Key((bool, None), default=None, doc='tiled inference on crop_size tiles'),
        'crop_size': Key((int, None), default=None, doc='tile size for grids'),
        'grid_overlap': Key(
            int, default=32, check=lambda v: None if v >= 0 else f'must be >= 0, got {v}', doc='tile overlap in pixels'
        ),
        'max_minibatch': Key(int, default=8, check=_positive, doc='tiles per forward pass'),
        'rgb2bgr': Key(
            (bool, None),
            default=None,
            doc="swap the colour channels for OpenCV (PNGs, metrics); null = follow the data's channel "
            'order (BGR frames: no swap)',
        ),
        'use_image': Key(bool, default=True, doc='metrics on uint8-rounded images (the reference)'),
        'pbar': Key(bool, default=True, doc='progress bar during validation'),
        'metrics': MapOf(Component(METRIC_REGISTRY), default=None),
    },
    rules=_val_rules,
)

MetricFunction = Callable[[np.ndarray, np.ndarray], float]


def swaps_channels(rgb2bgr: bool | None, channel_order: str) -> bool:
    """Whether frames of ``channel_order`` ('BGR' or 'RGB') are swapped for OpenCV (``val.rgb2bgr``; null:
    swap exactly RGB data)."""
    return rgb2bgr if rgb2bgr is not None else channel_order == 'RGB'


def metric_image(tensor: torch.Tensor, swap: bool, use_image: bool) -> np.ndarray:
    """(1, 3, H, W) tensor in [0, 1] -> (H, W, 3) image on the [0, 255] scale in BGR order, as the metrics take it.

    ``use_image``: rounded to uint8 (the reference), else float64 not rounded.
    """
    if use_image:
        return tensor2img(tensor, rgb2bgr=swap)
    return tensor2img(tensor, rgb2bgr=swap, out_type=np.float32).astype(np.float64) * 255.0


def compute_metrics(
    metrics: Mapping[str, MetricFunction],
    output: torch.Tensor,
    frame: torch.Tensor,
    frame_gt: torch.Tensor | None,
    swap: bool,
    use_image: bool,
) -> dict[str, dict[str, float]]:
    """Each metric of the restored ``output`` and of the blurry ``frame`` against ``frame_gt``.

    Args:
        metrics: name -> ``f(img, img2) -> float`` on (H, W, 3) [0, 255] BGR images.
        output, frame, frame_gt: (1, 3, H, W) float32 in [0, 1] (frame_gt None: no metric).
        swap: swap the channels to get BGR (see :func:`swaps_channels`).
        use_image: compare uint8-rounded images.

    Returns:
        ``{'output': {name: value}, 'input': {name: value}}`` (empty without ground truth or metrics).
    """
    if frame_gt is None or not metrics:
        return {'output': {}, 'input': {}}
    gt_img = metric_image(frame_gt, swap, use_image)
    result = {}
    for kind, tensor in (('output', output), ('input', frame)):
        img = metric_image(tensor, swap, use_image)
        result[kind] = {name: float(metric(img, gt_img)) for name, metric in metrics.items()}
    return result


def check_finite(dataset_name: str, seq: str, index: int, **tensors: torch.Tensor | None) -> None:
    """Raise InvalidInputError naming the data set, the item and the tensor when one holds NaN or inf."""
    for name, tensor in tensors.items():
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            where = 'the network output' if name == 'output' else f'the input {name}'
            raise InvalidInputError(
                f"Evaluating data set '{dataset_name}', item {seq}/{index}: {where} contains NaN or inf, so no metric "
                'can be computed. Check that item of the data (frames, voxels) and the checkpoint (a diverged '
                'training writes non-finite weights).'
            )


@MODEL_REGISTRY.register()
@MODEL_REGISTRY.register(name='TestImageEventRestorationModel')
class ImageEventRestorationModel(BaseModel):
    """EFNet-style model: blurry ``frame`` + ``voxel`` (+ ``mask``) -> sharp frame.

    Batches are dicts from the data sets: ``frame`` (B, 3, H, W) float32 in [0, 1], ``voxel``
    (B, ev_chn, H, W) float32 in [-1, 1], ``mask`` (B, 1, H, W) float32 in {0, 1} (optional),
    ``frame_gt`` (B, 3, H, W) (optional at test time), ``seq``, ``index`` and ``name`` per item.

    The network is called ``net(frame, voxel, mask)`` and returns a list of predictions (EFNet:
    ``[out_1, out_2]``); the pixel loss is summed over all of them (weights ``train.stage_weights``,
    equal by default as the reference) and the last one is the restored frame.
    """

    option_schema: ClassVar[dict[str, Node]] = {'train': TRAIN_OPTIONS, 'val': VAL_OPTIONS}
    training_keys: ClassVar[tuple[str, ...]] = ('optim_g', 'total_iter', 'pixel_opt')
    """Keys of ``train`` that training needs (testing does not)."""

    def __init__(self, opt: FrozenDict, ctx: RunContext):
        super().__init__(opt, ctx)
        net = build(ARCH_REGISTRY, opt['network_g'])
        logger.info('Network [%s] is created with %s parameters.', type(net).__name__, f'{count_parameters(net):,}')
        self.load_pretrained(net)
        train_set = opt['datasets'].get('train') or {}
        self.use_mask_train = bool(train_set.get('use_mask', False))
        self.net_g = self.model_to_device(net, find_unused_parameters=ctx.is_train and not self.use_mask_train)
        self.metrics: dict[str, MetricFunction] = {
            name: build(METRIC_REGISTRY, metric_opt) for name, metric_opt in (opt['val']['metrics'] or {}).items()
        }
        if ctx.is_train:
            self.init_training_settings()
        else:
            self.net_g.eval()

    def init_training_settings(self) -> None:
        train_opt = self.opt['train']
        self.net_g.train()
        self.cri_pix = build(LOSS_REGISTRY, train_opt['pixel_opt']).to(self.device)
        if train_opt['ema_decay'] > 0:
            self.init_ema(self.net_g, train_opt['ema_decay'])
        self.setup_optimizer(self.net_g)
        self.log_dict: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ data
    def check_event_channels(self, dataset: Any, dataset_name: str) -> None:
        """Compare the voxel channels ``dataset`` reports with the network's ``ev_chn`` (before any batch).

        Raises:
            InvalidInputError: they differ; the message names both and the fix.
        """
        voxel_channels = getattr(dataset, 'voxel_channels', None)
        ev_chn = getattr(unwrap_network(self.net_g), 'ev_chn', None)
        if voxel_channels is None or ev_chn is None or voxel_channels == ev_chn:
            return
        raise InvalidInputError(
            f"Data set '{dataset_name}' gives voxels with {voxel_channels} channels but network_g.ev_chn is {ev_chn}; "
            'make them equal: set network_g.ev_chn, or make the voxels with that many bins (make_voxels.py '
            '--num_bins; RawEventDataset: num_bins, plus 1 with keep_middle).'
        )

    def feed_data(self, batch: dict[str, Any]) -> None:
        """Move a batch to the device (``self.frame``, ``self.voxel``, ``self.mask``, ``self.frame_gt``).

        Raises:
            ValueError: the frame, voxel, mask and ground truth differ in size.
        """
        self.frame = to_memory_format(batch['frame'].to(self.device, non_blocking=True), self.perf)
        self.voxel = to_memory_format(batch['voxel'].to(self.device, non_blocking=True), self.perf)
        self.mask = batch['mask'].to(self.device, non_blocking=True) if 'mask' in batch else None
        self.frame_gt = batch['frame_gt'].to(self.device, non_blocking=True) if 'frame_gt' in batch else None
        size = self.frame.shape[-2:]
        for name, tensor in (('voxel', self.voxel), ('mask', self.mask), ('frame_gt', self.frame_gt)):
            if tensor is not None and tensor.shape[-2:] != size:
                raise ValueError(f'Batch item {name} has size {tuple(tensor.shape[-2:])} but frame has {tuple(size)}.')

    # ------------------------------------------------------------------ training
    def optimize_parameters(self, current_iter: int) -> bool:
        """One optimiser step on the fed batch; the loss values are kept for :meth:`get_current_log`.

        The NaN guard: a non-finite loss or gradient norm skips the update (no optimiser step, no EMA update;
        the fp16 grad scaler lowers its scale, as after an overflow). One host sync decides it.

        Returns:
            True when the weights were updated, False when the step was skipped for a non-finite value.
        """
        train_opt = self.opt['train']
        optimizer = self.optimizers[0]
        optimizer.zero_grad(set_to_none=True)
        with autocast(self.perf):
            preds = self.net_g(self.frame, self.voxel, self.mask if self.use_mask_train else None)
        preds = list(preds) if isinstance(preds, (list, tuple)) else [preds]
        weights = train_opt['stage_weights'] or [1.0] * len(preds)
        if len(weights) != len(preds):
            raise ValueError(
                f'train.stage_weights has {len(weights)} entries but the network returns {len(preds)} outputs.'
            )
        stage_losses = [w * self.cri_pix(pred.float(), self.frame_gt) for w, pred in zip(weights, preds)]
        l_pix = torch.stack(stage_losses).sum()
        self.scaler.scale(l_pix).backward()
        self.scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group['params']]
        max_norm = train_opt['grad_clip_norm'] if train_opt['use_grad_clip'] else float('inf')
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.log_dict = {'l_pix': l_pix.detach(), 'grad_norm': grad_norm.detach()}
        if len(stage_losses) > 1:
            self.log_dict.update({f'l_pix_{i + 1}': loss.detach() for i, loss in enumerate(stage_losses)})
        loss_finite, grad_finite = torch.stack((torch.isfinite(l_pix), torch.isfinite(grad_norm))).tolist()
        if not loss_finite or not (grad_finite or self.scaler.is_enabled()):
            optimizer.zero_grad(set_to_none=True)
            self.scaler.update()  # a no-op unless fp16
            return False
        self.scaler.step(optimizer)  # fp16: after an overflow (finite loss, inf gradient) the scaler skips it itself
        self.scaler.update()
        if self.net_g_ema is not None and grad_finite:
            self.update_ema(self.net_g)
        return True

    def get_current_log(self) -> dict[str, float]:
        """The last step's loss values, averaged over processes (call on every rank)."""
        names = sorted(self.log_dict)
        values = torch.stack([self.log_dict[n].float() for n in names])
        if self.ctx.dist:
            torch_dist.all_reduce(values)
            values /= self.ctx.world_size
        return dict(zip(names, values.tolist()))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def test(self, frame: torch.Tensor, voxel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Restore frames: (B, 3, H, W) float32, not clamped. Uses the EMA weights if any.

        Args:
            frame: (B, 3, H, W) float32 blurry frames in [0, 1], on the model's device.
            voxel: (B, ev_chn, H, W) float32 voxels in [-1, 1].
            mask: (B, 1, H, W) float32 event mask in {0, 1}, or None (no gating).
        """
        net = self.net_g_ema if self.net_g_ema is not None else unwrap_network(self.net_g)
        was_training = net.training
        net.eval()

        def forward(*inputs: torch.Tensor | None) -> torch.Tensor:
            with autocast(self.perf):
                preds = net(*inputs)
            return (preds[-1] if isinstance(preds, (list, tuple)) else preds).float()

        val_opt = self.opt['val']
        if val_opt['grids']:
            outputs = [
                tiled_forward(
                    forward,
                    [t if t is None else t[i : i + 1] for t in (frame, voxel, mask)],
                    val_opt['crop_size'],
                    val_opt['grid_overlap'],
                    val_opt['max_minibatch'],
                )
                for i in range(len(frame))
            ]
            output = torch.cat(outputs)
        else:
            output = forward(frame, voxel, mask)
        net.train(was_training)
        return output

    def validation(
        self,
        dataloader: torch.utils.data.DataLoader,
        dataset_opt: FrozenDict,
        current_iter: int,
        tb_logger: Any = None,
        save_dir: Path | None = None,
    ) -> dict | None:
        """Evaluate a data set (batch 1, full frames or tiles); under torch.distributed each rank
        takes its share (the loader's sampler) and rank 0 gathers every image's metrics.

        Args:
            dataset_opt: the data set's options (``name``, ``use_mask``, ``eval_rows``).
            current_iter: for TensorBoard steps (-1 at test time).
            save_dir: write ``<save_dir>/<seq>/<index:04d>.png`` (and ``_gt.png``) when set.

        Returns:
            On rank 0: ``{'records': [...], 'summary': summarize_records(...)}``; None elsewhere.
        """
        name = dataset_opt['name']
        use_mask = bool(dataset_opt.get('use_mask', False))
        rows = slice(0, dataset_opt.get('eval_rows'))
        channel_order = getattr(dataloader.dataset, 'channel_order', 'BGR')
        swap = swaps_channels(self.opt['val']['rgb2bgr'], channel_order)
        show_bar = self.opt['val']['pbar'] and self.ctx.is_main
        records, previews = [], []
        for batch in tqdm(dataloader, desc=f'Test {name}', unit='img', disable=not show_bar, leave=False):
            self.feed_data(batch)
            frame, voxel = self.frame[..., rows, :], self.voxel[..., rows, :]
            mask = self.mask[..., rows, :] if use_mask and self.mask is not None else None
            frame_gt = None if self.frame_gt is None else self.frame_gt[..., rows, :]
            output = self.test(frame, voxel, mask)
            for i in range(len(output)):
                seq, index = batch['seq'][i], int(batch['index'][i])
                item = slice(i, i + 1)
                gt_i = None if frame_gt is None else frame_gt[item]
                check_finite(name, seq, index, output=output[item], frame=frame[item], frame_gt=gt_i)
                record = {'name': batch['name'][i], 'seq': seq, 'index': index}
                record.update(
                    compute_metrics(self.metrics, output[item], frame[item], gt_i, swap, self.opt['val']['use_image'])
                )
                records.append(record)
                if save_dir is not None:
                    imwrite(tensor2img(output[item], rgb2bgr=swap), save_dir / seq / f'{index:04d}.png')
                    if gt_i is not None:
                        imwrite(tensor2img(gt_i, rgb2bgr=swap), save_dir / seq / f'{index:04d}_gt.png')
            if tb_logger is not None and len(previews) < 3:
                panels = [frame[:1], output[:1].clamp(0, 1)] + ([frame_gt[:1]] if frame_gt is not None else [])
                previews.append(preview_rgb(torch.cat(panels, dim=-1)[0].cpu(), data_is_rgb=swap))
        records = self._gather(records)
        if not self.ctx.is_main:
            return None
        summary = summarize_records(records)
        logger.info('Evaluated %d images of %s.', len(records), name)
        if tb_logger is not None:
            for metric, value in summary['output'].items():
                tb_logger.add_scalar(f'metrics/{name}/{metric}', value, current_iter)
            for k, image in enumerate(previews):  # blurry | output | sharp
                tb_logger.add_image(f'val/{name}/{k}', image, current_iter)
        return {'records': records, 'summary': summary}

    def _gather(self, records: list[dict]) -> list[dict]:
        if not self.ctx.dist:
            return records
        gathered: list[list[dict] | None] = [None] * self.ctx.world_size
        torch_dist.all_gather_object(gathered, records)
        return sorted((r for part in gathered for r in part), key=lambda r: r['name'])

    # ------------------------------------------------------------------ checkpoints
    def save(self, epoch: int, current_iter: int | str, extra_state: dict | None = None) -> None:
        """Write ``net_g_<iter>.pth`` and, for a numbered iteration, the training state with ``extra_state``
        (rank 0 only; the engine gathers the per-rank parts of ``extra_state`` on every rank first)."""
        if not self.ctx.is_main:
            return
        meta = {'meta': {'network_g': self.opt['network_g'].to_dict(), 'iter': current_iter}}
        self.save_network(self.net_g, current_iter, extra=meta)
        if isinstance(current_iter, int):
            self.save_training_state(epoch, current_iter, extra_state)


def preview_rgb(image: torch.Tensor, data_is_rgb: bool) -> torch.Tensor:
    """A (3, H, W) image of the data's channel order in RGB order, as TensorBoard wants it."""
    return image if data_is_rgb else image.flip(0)
