"""The image + event restoration model of EFNet: training step, validation and test.

``TestImageEventRestorationModel`` is another registered name of the same class, so the original
option files work with either ``train.py`` or ``test.py``.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from tqdm import tqdm

from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from basicsr.models.evaluation import summarize_records, tiled_forward
from basicsr.utils.checkpoint import unwrap_network
from basicsr.utils.dist_util import get_dist_info
from basicsr.utils.img_util import imwrite, tensor2img
from basicsr.utils.option_schema import FrozenDict
from basicsr.utils.options import RunContext
from basicsr.utils.performance import autocast, to_memory_format
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

logger = logging.getLogger(__name__)

REBLUR_EVAL_ROWS = 256
"""The published REBlur protocol evaluates the first 256 of the 260 rows."""


def expected_event_channels(network_opt: FrozenDict) -> int | None:
    """``ev_chn`` of the network options, or the constructor's default; None if it has none."""
    if 'ev_chn' in network_opt:
        return network_opt['ev_chn']
    parameter = inspect.signature(ARCH_REGISTRY.get(network_opt['type'])).parameters.get('ev_chn')
    return None if parameter is None else parameter.default


@MODEL_REGISTRY.register()
@MODEL_REGISTRY.register(name='TestImageEventRestorationModel')
class ImageEventRestorationModel(BaseModel):
    """EFNet-style model: blurry ``frame`` + ``voxel`` (+ ``mask``) -> sharp frame.

    Batches are dicts from the data sets: ``frame`` (B, 3, H, W) float32 in [0, 1], ``voxel``
    (B, ev_chn, H, W) float32 in [-1, 1], ``mask`` (B, 1, H, W) float32 in {0, 1} (optional),
    ``frame_gt`` (B, 3, H, W) (optional at test time), ``seq`` and ``index`` per item.

    The network returns a list of predictions (EFNet: ``[out_1, out_2]``); the pixel loss is
    summed over all of them (weights ``train.stage_weights``, equal by default as the reference)
    and the last one is the restored frame.
    """

    def __init__(self, opt: FrozenDict, ctx: RunContext):
        super().__init__(opt, ctx)
        self.event_channels = expected_event_channels(opt['network_g'])
        net = build_network(opt['network_g'])
        self.load_pretrained(net)
        train_set = opt['datasets'].get('train') or {}
        self.use_mask_train = bool(train_set.get('use_mask', False))
        self.net_g = self.model_to_device(net, find_unused_parameters=ctx.is_train and not self.use_mask_train)
        if ctx.is_train:
            self.init_training_settings()
        else:
            self.net_g.eval()

    def init_training_settings(self) -> None:
        train_opt = self.opt['train']
        self.net_g.train()
        pixel_opt = train_opt['pixel_opt']
        self.cri_pix = LOSS_REGISTRY.get(pixel_opt['type'])(**{k: v for k, v in pixel_opt.items() if k != 'type'})
        self.cri_pix = self.cri_pix.to(self.device)
        if train_opt['ema_decay'] > 0:
            self.init_ema(self.net_g, train_opt['ema_decay'])
        self.setup_optimizer(self.net_g)
        self.log_dict: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ data
    def feed_data(self, batch: dict[str, Any]) -> None:
        """Move a batch to the device and check its shapes.

        Raises:
            ValueError: the voxel's channel count differs from the network's ``ev_chn``, or the
                frame, voxel, mask and ground truth differ in size.
        """
        self.lq = to_memory_format(batch['frame'].to(self.device, non_blocking=True), self.perf)
        self.voxel = to_memory_format(batch['voxel'].to(self.device, non_blocking=True), self.perf)
        self.mask = batch['mask'].to(self.device, non_blocking=True) if 'mask' in batch else None
        self.gt = batch['frame_gt'].to(self.device, non_blocking=True) if 'frame_gt' in batch else None
        self._check_batch_shapes()

    def _check_batch_shapes(self) -> None:
        if self.event_channels is not None and self.voxel.shape[1] != self.event_channels:
            raise ValueError(
                f'The data set gives voxels with {self.voxel.shape[1]} channels but network_g.ev_chn is '
                f'{self.event_channels}; make the event bins (make_voxels.py --num_bins, keep_middle) and ev_chn agree.'
            )
        size = self.lq.shape[-2:]
        for name, tensor in (('voxel', self.voxel), ('mask', self.mask), ('frame_gt', self.gt)):
            if tensor is not None and tensor.shape[-2:] != size:
                raise ValueError(f'Batch item {name} has size {tuple(tensor.shape[-2:])} but frame has {tuple(size)}.')

    def crop_for_protocol(self) -> None:
        """REBlur is evaluated on the first 256 rows (``dataset_name: REBlur``), as published."""
        if self.opt['dataset_name'] == 'REBlur':
            rows = slice(0, REBLUR_EVAL_ROWS)
            self.lq, self.voxel = self.lq[..., rows, :], self.voxel[..., rows, :]
            self.mask = None if self.mask is None else self.mask[..., rows, :]
            self.gt = None if self.gt is None else self.gt[..., rows, :]

    # ------------------------------------------------------------------ training
    def optimize_parameters(self, current_iter: int) -> None:
        """One optimiser step on the fed batch; the loss values are kept for :meth:`get_current_log`."""
        train_opt = self.opt['train']
        optimizer = self.optimizers[0]
        optimizer.zero_grad(set_to_none=True)
        with autocast(self.perf, self.device):
            preds = self.net_g(x=self.lq, event=self.voxel, mask=self.mask if self.use_mask_train else None)
        preds = list(preds) if isinstance(preds, (list, tuple)) else [preds]
        weights = train_opt['stage_weights'] or [1.0] * len(preds)
        if len(weights) != len(preds):
            raise ValueError(f'train.stage_weights has {len(weights)} entries but the network returns {len(preds)} '
                             'outputs.')
        stage_losses = [w * self.cri_pix(pred.float(), self.gt) for w, pred in zip(weights, preds)]
        l_pix = torch.stack(stage_losses).sum()
        if not torch.isfinite(l_pix):
            raise FloatingPointError(
                f'The loss is {l_pix.item()} at iteration {current_iter}; the last checkpoint is in '
                f'{self.ctx.paths.models}. Check the data (voxels, frames) or lower the learning rate.'
            )
        self.scaler.scale(l_pix).backward()
        self.scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group['params']]
        max_norm = train_opt['grad_clip_norm'] if train_opt['use_grad_clip'] else float('inf')
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
        if self.net_g_ema is not None:
            self.update_ema(self.net_g)
        self.log_dict = {'l_pix': l_pix.detach(), 'grad_norm': grad_norm.detach()}
        if len(stage_losses) > 1:
            self.log_dict.update({f'l_pix_{i + 1}': loss.detach() for i, loss in enumerate(stage_losses)})

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
    def test(self, use_mask: bool) -> torch.Tensor:
        """Restore the fed frame: (B, 3, H, W) float32, not clamped. Uses the EMA weights if any."""
        net = self.net_g_ema if self.net_g_ema is not None else unwrap_network(self.net_g)
        was_training = net.training
        net.eval()
        mask = self.mask if use_mask else None

        def forward(x, event, mask=None):
            with autocast(self.perf, self.device):
                preds = net(x=x, event=event, mask=mask)
            return (preds[-1] if isinstance(preds, (list, tuple)) else preds).float()

        val_opt = self.opt['val']
        if val_opt['grids']:
            inputs = {'x': self.lq, 'event': self.voxel}
            if mask is not None:
                inputs['mask'] = mask
            outputs = [tiled_forward(forward, {k: v[i:i + 1] for k, v in inputs.items()}, val_opt['crop_size'],
                                     val_opt['grid_overlap'], val_opt['max_minibatch']) for i in range(len(self.lq))]
            output = torch.cat(outputs)
        else:
            output = forward(self.lq, self.voxel, mask)
        net.train(was_training)
        return output

    def _metric_images(self, tensor: torch.Tensor) -> np.ndarray:
        """(1, 3, H, W) tensor in [0, 1] -> HWC image in [0, 255] the metric functions take."""
        val_opt = self.opt['val']
        if val_opt['use_image']:
            return tensor2img(tensor, rgb2bgr=val_opt['rgb2bgr'])
        return tensor2img(tensor, rgb2bgr=val_opt['rgb2bgr'], out_type=np.float32).astype(np.float64) * 255.0

    def compute_metrics(self, output: torch.Tensor) -> dict[str, dict[str, float]]:
        """Each ``val.metrics`` entry for the output and for the blurry input, against the ground truth."""
        metrics_opt = self.opt['val']['metrics'] or {}
        if self.gt is None or not metrics_opt:
            return {'output': {}, 'input': {}}
        gt_img = self._metric_images(self.gt)
        result: dict[str, dict[str, float]] = {}
        for kind, tensor in (('output', output), ('input', self.lq)):
            img = self._metric_images(tensor)
            result[kind] = {
                name: float(METRIC_REGISTRY.get(m['type'])(img, gt_img, **{k: v for k, v in m.items() if k != 'type'}))
                for name, m in metrics_opt.items()
            }
        return result

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
            dataset_opt: the data set's options (``name``, ``use_mask``).
            current_iter: for image file names and TensorBoard steps (-1 or a string at test time).
            save_dir: write ``<save_dir>/<seq>/<index:04d>.png`` (and ``_gt.png``) when set.

        Returns:
            On rank 0: ``{'records': [...], 'summary': summarize_records(...)}``; None elsewhere.
        """
        use_mask = bool(dataset_opt.get('use_mask', False))
        rank, _ = get_dist_info()
        show_bar = self.opt['val']['pbar'] and rank == 0
        records = []
        preview = []
        for batch in tqdm(dataloader, desc=f"Test {dataset_opt['name']}", unit='img', disable=not show_bar,
                          leave=False):
            self.feed_data(batch)
            self.crop_for_protocol()
            output = self.test(use_mask)
            for i in range(len(output)):
                seq, index = batch['seq'][i], int(batch['index'][i])
                record = {'name': batch['name'][i], 'seq': seq, 'index': index}
                record.update(self._evaluate_item(i, output, save_dir, seq, index))
                records.append(record)
            if tb_logger is not None and len(preview) < 3:
                preview.append(torch.cat([self.lq[:1], output[:1].clamp(0, 1)]
                                         + ([self.gt[:1]] if self.gt is not None else []), dim=-1).cpu())
        records = self._gather(records)
        if rank != 0:
            return None
        summary = summarize_records(records)
        logger.info('Evaluated %d images of %s.', len(records), dataset_opt['name'])
        if tb_logger is not None:
            for name, value in summary['output'].items():
                tb_logger.add_scalar(f"metrics/{dataset_opt['name']}/{name}", value, current_iter)
            for k, image in enumerate(preview):  # blurry | output | sharp; TensorBoard wants RGB
                rgb = image[0] if self.opt['val']['rgb2bgr'] else image[0].flip(0)
                tb_logger.add_image(f"val/{dataset_opt['name']}/{k}", rgb, current_iter)
        return {'records': records, 'summary': summary}

    def _evaluate_item(self, i: int, output: torch.Tensor, save_dir: Path | None, seq: str, index: int) -> dict:
        """Metrics of item ``i`` of the current batch, and its images written when asked."""
        full = (self.lq, self.voxel, self.mask, self.gt)
        self.lq, self.voxel, self.mask, self.gt = (None if t is None else t[i:i + 1] for t in full)
        item_output = output[i:i + 1]
        metrics = self.compute_metrics(item_output)
        if save_dir is not None:
            rgb2bgr = self.opt['val']['rgb2bgr']
            imwrite(tensor2img(item_output, rgb2bgr=rgb2bgr), save_dir / seq / f'{index:04d}.png')
            if self.gt is not None:
                imwrite(tensor2img(self.gt, rgb2bgr=rgb2bgr), save_dir / seq / f'{index:04d}_gt.png')
        self.lq, self.voxel, self.mask, self.gt = full
        return metrics

    def _gather(self, records: list[dict]) -> list[dict]:
        if not self.ctx.dist:
            return records
        gathered: list[list[dict] | None] = [None] * self.ctx.world_size
        torch_dist.all_gather_object(gathered, records)
        return sorted((r for part in gathered for r in part), key=lambda r: r['name'])

    # ------------------------------------------------------------------ checkpoints
    def save(self, epoch: int, current_iter: int | str) -> None:
        """Write ``net_g_<iter>.pth`` and, for a numbered iteration, the training state (rank 0 only)."""
        if not self.ctx.is_main:
            return
        meta = {'meta': {'network_g': self.opt['network_g'].to_dict(), 'iter': current_iter}}
        self.save_network(self.net_g, current_iter, extra=meta)
        if isinstance(current_iter, int):
            self.save_training_state(epoch, current_iter)
