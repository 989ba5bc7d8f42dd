"""EFNet: two-stage event-guided U-Net for motion deblurring (Sun et al., ECCV 2022).

Compatible with the reference implementation: same module and parameter names (its checkpoints
load with ``strict=True``), same arithmetic. Beyond it, any input size works (inputs are padded
internally to a multiple of 2**(depth - 1) and the outputs cropped back) and constructor
arguments are validated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from basicsr.archs.arch_util import pad_to_multiple
from basicsr.archs.efnet_blocks import SAM, UNetConvBlock, UNetEVConvBlock, UNetUpBlock, conv3x3
from basicsr.utils.errors import InvalidInputError
from basicsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
class EFNet(nn.Module):
    """EFNet (``network_g: {type: EFNet, ...}``).

    Level i of every U-Net has ``wf * 2**i`` channels, i = 0 .. depth - 1; all levels but the last
    down-sample by 2. Stage 1 fuses event features into the image encoder with EICA; stage 2
    refines the SAM output and, when a mask is given, mixes stage-1 encoder and decoder features
    through the event-mask gated connections (EMGC) of its down-sampling levels.

    Args:
        in_chn: image channels (input, and output of both stages). The reference's SAM hard-codes
            3 channels; here it follows in_chn (the same network for the default 3).
        ev_chn: event-tensor channels (SCER bins).
        wf: channels of the first level.
        depth: U-Net levels (depth - 1 down-samplings), >= 1.
        fuse_before_downsample: must be True (EICA fusion before the strided convolution). The
            reference code's False path crashes, so it has no defined meaning to reproduce.
        relu_slope: negative slope of every LeakyReLU in the convolution blocks, >= 0.
        num_heads: EICA heads per encoder level; at least ``depth`` entries (extra entries are
            ignored), level i's channels ``wf * 2**i`` divisible by ``num_heads[i]``.
    """

    def __init__(
        self,
        in_chn: int = 3,
        ev_chn: int = 6,
        wf: int = 64,
        depth: int = 3,
        fuse_before_downsample: bool = True,
        relu_slope: float = 0.2,
        num_heads: Sequence[int] = (1, 2, 4),
    ):
        super().__init__()
        num_heads = _validated_arguments(in_chn, ev_chn, wf, depth, fuse_before_downsample, relu_slope, num_heads)
        self.in_chn = in_chn
        self.ev_chn = ev_chn
        self.depth = depth
        self.fuse_before_downsample = fuse_before_downsample
        self.num_heads = num_heads
        widths = [wf * 2**i for i in range(depth)]
        inputs = [wf] + widths[:-1]
        downsamples = [i < depth - 1 for i in range(depth)]

        self.down_path_1 = nn.ModuleList(
            UNetConvBlock(c_in, c_out, down, relu_slope, num_heads=heads)
            for c_in, c_out, down, heads in zip(inputs, widths, downsamples, num_heads[:depth], strict=True)
        )
        self.down_path_2 = nn.ModuleList(
            UNetConvBlock(c_in, c_out, down, relu_slope, use_emgc=down)
            for c_in, c_out, down in zip(inputs, widths, downsamples, strict=True)
        )
        self.conv_01 = conv3x3(in_chn, wf)
        self.conv_02 = conv3x3(in_chn, wf)
        self.down_path_ev = nn.ModuleList(
            UNetEVConvBlock(c_in, c_out, down, relu_slope)
            for c_in, c_out, down in zip(inputs, widths, downsamples, strict=True)
        )
        self.conv_ev1 = conv3x3(ev_chn, wf)
        # Decoders run from the bottom up: entry j up-samples level depth-1-j to level depth-2-j.
        up_pairs = list(zip(widths[:0:-1], widths[-2::-1], strict=True))
        self.up_path_1 = nn.ModuleList(UNetUpBlock(c_in, c_out, relu_slope) for c_in, c_out in up_pairs)
        self.up_path_2 = nn.ModuleList(UNetUpBlock(c_in, c_out, relu_slope) for c_in, c_out in up_pairs)
        self.skip_conv_1 = nn.ModuleList(conv3x3(c_out, c_out) for _, c_out in up_pairs)
        self.skip_conv_2 = nn.ModuleList(conv3x3(c_out, c_out) for _, c_out in up_pairs)
        self.sam12 = SAM(wf, in_chn)
        self.cat12 = nn.Conv2d(2 * wf, wf, kernel_size=1, bias=True)
        self.last = conv3x3(wf, in_chn)

    def forward(self, x: torch.Tensor, event: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Deblur ``x`` guided by ``event``.

        Args:
            x: (B, in_chn, H, W) float, blurry image in [0, 1]. Any H, W >= 1.
            event: (B, ev_chn, H, W) float, SCER event tensor normalised to [-1, 1].
            mask: optional (B, 1, H, W) float in {0, 1}, 1 where events occurred; enables EMGC.
                Without it the EMGC convolutions are skipped (and get no gradient).

        Returns:
            ``[out_1, out_2]``, both (B, in_chn, H, W) float, not clamped: the stage-1 (SAM) image
            and the final image.
        """
        self._check_inputs(x, event, mask)
        height, width = x.shape[-2:]
        x, event, mask = pad_to_multiple([x, event, mask], 2 ** (self.depth - 1))
        event_features = self._encode_events(event)
        out_1, sam_feature, encs, decs = self._stage_1(x, event_features)
        masks = (
            None
            if mask is None
            else [F.interpolate(mask, scale_factor=0.5**i, mode='nearest') for i in range(self.depth - 1)]
        )
        out_2 = self._stage_2(x, sam_feature, encs, decs, masks)
        return [out_1[..., :height, :width], out_2[..., :height, :width]]

    def _check_inputs(self, x: torch.Tensor, event: torch.Tensor, mask: torch.Tensor | None) -> None:
        in_chn, ev_chn = self.in_chn, self.ev_chn
        if x.dim() != 4 or x.shape[1] != in_chn:
            raise ValueError(f'EFNet expects x of shape (B, {in_chn}, H, W), got {tuple(x.shape)}')
        batch, _, height, width = x.shape
        if tuple(event.shape) != (batch, ev_chn, height, width):
            raise ValueError(
                f'EFNet expects event of shape (B, ev_chn, H, W) = {(batch, ev_chn, height, width)} '
                f'to match x {tuple(x.shape)}, got {tuple(event.shape)}; check ev_chn in network_g '
                'against the SCER bins of the data'
            )
        if mask is None:
            return
        if tuple(mask.shape) != (batch, 1, height, width):
            raise ValueError(
                f'EFNet expects mask of shape (B, 1, H, W) = {(batch, 1, height, width)}, got {tuple(mask.shape)}'
            )
        if not mask.is_floating_point():
            raise ValueError(
                f'EFNet expects a floating-point mask with values in {{0, 1}}, got dtype {mask.dtype}; '
                'convert it with mask.float() (and divide by 255 if it is stored as 0/255)'
            )

    def _encode_events(self, event: torch.Tensor) -> list[torch.Tensor]:
        """(B, ev_chn, H, W) -> per-level event features, level i (B, wf * 2**i, H / 2**i, W / 2**i)."""
        feature = self.conv_ev1(event)
        features = []
        for block in self.down_path_ev:
            if block.downsample is None:
                features.append(block(feature))
            else:
                feature, for_fusion = block(feature)
                features.append(for_fusion)
        return features

    def _stage_1(self, x: torch.Tensor, event_features: list[torch.Tensor]):
        """Stage 1: EICA-fused encoder, decoder and SAM.

        Returns:
            out_1 (B, in_chn, H, W); the SAM feature (B, wf, H, W); encs, the post-EICA encoder
            features of the down-sampling levels (level i first); decs, the decoder outputs in
            decoding order (the last one is at full resolution).
        """
        feature = self.conv_01(x)
        encs = []
        for block, event_feature in zip(self.down_path_1, event_features, strict=True):
            if block.downsample is None:
                feature = block(feature, event_feature=event_feature)
            else:
                feature, enc = block(feature, event_feature=event_feature)
                encs.append(enc)
        decs = []
        for up, skip_conv, enc in zip(self.up_path_1, self.skip_conv_1, reversed(encs), strict=True):
            feature = up(feature, skip_conv(enc))
            decs.append(feature)
        sam_feature, out_1 = self.sam12(feature, x)
        return out_1, sam_feature, encs, decs

    def _stage_2(
        self,
        x: torch.Tensor,
        sam_feature: torch.Tensor,
        encs: list[torch.Tensor],
        decs: list[torch.Tensor],
        masks: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        """Stage 2: U-Net on [conv_02(x), SAM feature], with EMGC when ``masks`` (level i:
        (B, 1, H / 2**i, W / 2**i)) are given. Returns out_2 (B, in_chn, H, W)."""
        feature = self.cat12(torch.cat([self.conv_02(x), sam_feature], dim=1))
        skips = []
        for level, block in enumerate(self.down_path_2):
            if block.downsample is None:
                feature = block(feature)
            elif masks is None:
                feature, skip = block(feature)
                skips.append(skip)
            else:
                feature, skip = block(feature, enc=encs[level], dec=decs[-level - 1], mask=masks[level])
                skips.append(skip)
        for up, skip_conv, skip in zip(self.up_path_2, self.skip_conv_2, reversed(skips), strict=True):
            feature = up(feature, skip_conv(skip))
        return self.last(feature) + x


def _validated_arguments(in_chn, ev_chn, wf, depth, fuse_before_downsample, relu_slope, num_heads) -> tuple[int, ...]:
    """Check EFNet's constructor arguments; returns num_heads as a tuple. Raises ValueError."""
    for name, value in (('in_chn', in_chn), ('ev_chn', ev_chn), ('wf', wf), ('depth', depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'EFNet {name} must be a positive integer, got {value!r}')
    if fuse_before_downsample is not True:
        raise ValueError(
            f'EFNet supports only fuse_before_downsample=True, got {fuse_before_downsample!r}: the '
            'reference implementation crashes with False (its bottom block returns nothing), so that '
            'setting has no defined behaviour to reproduce. Remove the key or set it to true.'
        )
    if isinstance(relu_slope, bool) or not isinstance(relu_slope, (int, float)) or not 0 <= relu_slope < float('inf'):
        raise ValueError(f'EFNet relu_slope must be a finite number >= 0, got {relu_slope!r}')
    if isinstance(num_heads, (str, bytes)) or not isinstance(num_heads, Sequence):
        raise ValueError(f'EFNet num_heads must be a list of positive integers, one per level, got {num_heads!r}')
    if len(num_heads) < depth:
        raise ValueError(
            f'EFNet num_heads needs at least depth={depth} entries (one per encoder level), got {list(num_heads)}'
        )
    for level, heads in enumerate(num_heads[:depth]):
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f'EFNet num_heads[{level}] must be a positive integer, got {heads!r}')
        width = wf * 2**level
        if width % heads:
            raise ValueError(
                f'EFNet level {level} has wf * 2**{level} = {width} channels, which num_heads[{level}] = '
                f'{heads} does not divide; pick a head count that divides {width}'
            )
    return tuple(num_heads)


_LEVEL_KEY = re.compile(r'down_path_1\.(\d+)\.')
_SHAPE_KEYS = ('conv_01.weight', 'conv_ev1.weight')


def efnet_options_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """EFNet's constructor settings read from the tensor shapes of its state dict.

    ``conv_01.weight`` is (wf, in_chn, 3, 3), ``conv_ev1.weight`` (wf, ev_chn, 3, 3), the ``down_path_1.<i>``
    blocks are the levels (depth), and ``down_path_1.<i>.image_event_transformer.attn.temperature`` is
    (num_heads[i], 1, 1). ``relu_slope`` has no tensor, so it is not in the result (EFNet's default is 0.2).

    Args:
        state_dict: parameter name -> tensor (names without a ``module.`` prefix).

    Returns:
        ``{'in_chn', 'ev_chn', 'wf', 'depth', 'num_heads'}`` (num_heads a tuple of ``depth`` ints).

    Raises:
        InvalidInputError: the names or shapes are not those of an EFNet (the message says what differs).
    """
    missing = [key for key in _SHAPE_KEYS if key not in state_dict]
    levels = sorted({int(match.group(1)) for key in state_dict if (match := _LEVEL_KEY.match(key))})
    if missing or not levels:
        sample = ', '.join(list(state_dict)[:6]) or 'no entries'
        absent = missing + ([] if levels else ['down_path_1.<i>.*'])
        raise InvalidInputError(
            f'the weights are not an EFNet state dict: no {", ".join(absent)} (its first names: '
            f'{sample}); use a checkpoint of EFNet (e.g. EFNet-GoPro.pth or a net_g_*.pth of '
            'this framework)'
        )
    if levels != list(range(len(levels))):
        raise InvalidInputError(
            f'the weights are not an EFNet state dict: its down_path_1 levels are {levels}, '
            f'expected 0 .. {len(levels) - 1} without gaps'
        )
    image_conv, event_conv = (state_dict[key] for key in _SHAPE_KEYS)
    if image_conv.dim() != 4 or event_conv.dim() != 4 or image_conv.shape[0] != event_conv.shape[0]:
        raise InvalidInputError(
            f'the weights are not an EFNet state dict: conv_01.weight {tuple(image_conv.shape)} '
            f'and conv_ev1.weight {tuple(event_conv.shape)} should both be (wf, channels, 3, 3) '
            'with the same wf'
        )
    num_heads = []
    for level in levels:
        key = f'down_path_1.{level}.image_event_transformer.attn.temperature'
        if key not in state_dict:
            raise InvalidInputError(f'the weights are not an EFNet state dict: level {level} has no {key}')
        num_heads.append(int(state_dict[key].shape[0]))
    return {
        'in_chn': int(image_conv.shape[1]),
        'ev_chn': int(event_conv.shape[1]),
        'wf': int(image_conv.shape[0]),
        'depth': len(levels),
        'num_heads': tuple(num_heads),
    }
