"""Building blocks of EFNet (Sun et al., "Event-Based Fusion for Motion Deblurring with Cross-modal
Attention", ECCV 2022): the U-Net convolution blocks with event-guided fusion, the event-encoder
blocks, the up-sampling blocks, the supervised attention module (SAM) between the two stages, and
EICA, the event-image cross-modal channel attention.

Submodule and parameter names follow the reference implementation so that its checkpoints load
with ``strict=True``; the arithmetic is the reference's, arranged to avoid needless copies.
All feature maps are (B, C, H, W) float tensors; H and W are multiples of 2 wherever a block
down-samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from basicsr.archs.arch_util import ChannelLayerNorm

# On CPU the EICA feed-forward runs over chunks of pixels whose 4C-wide hidden activations hold at
# most this many elements (4 MiB of float32). Large temporaries are returned to the OS when freed
# and page-faulted in again at the next allocation; cache-sized chunks avoid that (the level-0
# feed-forward at 256 x 256 took 25 instead of 63 ms on 2 cores) and bound the memory of the
# hidden activations. The numbers are identical (every pixel is processed independently). CUDA's
# caching allocator has no such cost, so there the whole map is processed at once.
_CPU_FFN_CHUNK_ELEMENTS = 1 << 20


def conv3x3(in_chn: int, out_chn: int) -> nn.Conv2d:
    """3x3 convolution with bias, stride 1, padding 1: (B, in_chn, H, W) -> (B, out_chn, H, W)."""
    return nn.Conv2d(in_chn, out_chn, kernel_size=3, stride=1, padding=1, bias=True)


def conv_down(chn: int) -> nn.Conv2d:
    """4x4 convolution, stride 2, padding 1, no bias: (B, chn, H, W) -> (B, chn, H // 2, W // 2)."""
    return nn.Conv2d(chn, chn, kernel_size=4, stride=2, padding=1, bias=False)


class _ResidualConvBody(nn.Module):
    """The residual body shared by the U-Net blocks: y = act(conv_2(act(conv_1(x)))) + identity(x).

    ``act`` is LeakyReLU(relu_slope); ``identity`` is a 1x1 convolution with bias.
    Shapes: x (B, in_chn, H, W) -> y (B, out_chn, H, W).
    """

    def __init__(self, in_chn: int, out_chn: int, relu_slope: float):
        super().__init__()
        self.identity = nn.Conv2d(in_chn, out_chn, kernel_size=1, bias=True)
        self.conv_1 = conv3x3(in_chn, out_chn)
        self.conv_2 = conv3x3(out_chn, out_chn)
        self.relu_slope = relu_slope
        # The activations overwrite fresh convolution outputs; autograd supports that only for a
        # positive slope (the backward recovers the sign from the output).
        self._act_inplace = relu_slope > 0

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chn, H, W) -> (B, out_chn, H, W): the residual body above."""
        hidden = F.leaky_relu(self.conv_1(x), self.relu_slope, inplace=self._act_inplace)
        hidden = F.leaky_relu(self.conv_2(hidden), self.relu_slope, inplace=self._act_inplace)
        return self.identity(x).add_(hidden)


class UNetConvBlock(_ResidualConvBody):
    """Encoder/decoder block of the image U-Nets, with optional EMGC and EICA.

    Submodules, in checkpoint order: ``identity``, ``conv_1``, ``conv_2``; with ``use_emgc``:
    ``emgc_enc``, ``emgc_dec``, ``emgc_enc_mask``, ``emgc_dec_mask`` (3x3, C -> C, with bias); with
    ``downsample``: ``downsample`` (:func:`conv_down`); with ``num_heads``:
    ``image_event_transformer`` (:class:`EventImageChannelAttention`).

    forward(x, event_feature=None, enc=None, dec=None, mask=None):
        x: (B, in_chn, H, W) input feature.
        event_feature: (B, out_chn, H, W) event feature to fuse with EICA (blocks built with
            ``num_heads`` only).
        enc, dec, mask: EMGC guidance (blocks built with ``use_emgc`` only; all three or none):
            enc and dec are (B, out_chn, H, W) stage-1 encoder and decoder features at this
            resolution, mask is (B, 1, H, W) float in {0, 1}, 1 where events occurred.
        Returns the block output y (B, out_chn, H, W) or, when down-sampling,
        ``(downsample(y), y)`` with downsample(y) of shape (B, out_chn, H // 2, W // 2).

    Order: residual body, then EMGC, then EICA, then down-sampling.
    """

    def __init__(
        self,
        in_chn: int,
        out_chn: int,
        downsample: bool,
        relu_slope: float,
        use_emgc: bool = False,
        num_heads: int | None = None,
    ):
        super().__init__(in_chn, out_chn, relu_slope)
        self.use_emgc = use_emgc
        if use_emgc:
            self.emgc_enc = conv3x3(out_chn, out_chn)
            self.emgc_dec = conv3x3(out_chn, out_chn)
            self.emgc_enc_mask = conv3x3(out_chn, out_chn)
            self.emgc_dec_mask = conv3x3(out_chn, out_chn)
        self.downsample = conv_down(out_chn) if downsample else None
        self.image_event_transformer = EventImageChannelAttention(out_chn, num_heads) if num_heads is not None else None

    def forward(
        self,
        x: torch.Tensor,
        event_feature: torch.Tensor | None = None,
        enc: torch.Tensor | None = None,
        dec: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ):
        y = self.residual(x)
        if mask is not None:
            y = self.add_emgc(y, enc, dec, mask)
        if event_feature is not None:
            if self.image_event_transformer is None:
                raise ValueError(
                    'this UNetConvBlock was built without num_heads, so it has no EICA to fuse an event feature with'
                )
            y = self.image_event_transformer(y, event_feature)
        if self.downsample is None:
            return y
        return self.downsample(y), y

    def add_emgc(self, y: torch.Tensor, enc: torch.Tensor, dec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Event-mask gated connection: y + emgc_enc(enc) + emgc_enc_mask((1 - mask) * enc)
        + emgc_dec(dec) + emgc_dec_mask(mask * dec), summed in the reference's order.

        Encoder features are kept where no events occurred, decoder features where they did.
        Shapes: y, enc, dec (B, C, H, W); mask (B, 1, H, W) in {0, 1}, broadcast over channels.
        ``y`` is updated in place and returned.
        """
        if not self.use_emgc:
            raise ValueError('this UNetConvBlock was built without use_emgc, so it cannot use an event mask')
        if enc is None or dec is None:
            raise ValueError('EMGC needs the stage-1 encoder and decoder features (enc and dec) with the mask')
        mask = mask.to(enc.dtype)  # exact for {0, 1}; keeps bf16 features bf16 under autocast
        from_enc = self.emgc_enc(enc).add_(self.emgc_enc_mask((1 - mask) * enc))
        from_dec = self.emgc_dec(dec).add_(self.emgc_dec_mask(mask * dec))
        return y.add_(from_enc).add_(from_dec)


class UNetEVConvBlock(_ResidualConvBody):
    """Event-encoder block: the residual body, then a 1x1 projection for fusion.

    Submodules, in checkpoint order: ``identity``, ``conv_1``, ``conv_2``, ``conv_before_merge``
    (1x1 with bias), and with ``downsample``: ``downsample`` (:func:`conv_down`).

    forward(x): x (B, in_chn, H, W) event feature. Returns ``conv_before_merge(y)``
    (B, out_chn, H, W) for the last level, or ``(downsample(y), conv_before_merge(y))`` when
    down-sampling: the next level receives the un-projected y, down-sampled to (H // 2, W // 2).
    """

    def __init__(self, in_chn: int, out_chn: int, downsample: bool, relu_slope: float):
        super().__init__(in_chn, out_chn, relu_slope)
        self.conv_before_merge = nn.Conv2d(out_chn, out_chn, kernel_size=1, bias=True)
        self.downsample = conv_down(out_chn) if downsample else None

    def forward(self, x: torch.Tensor):
        y = self.residual(x)
        if self.downsample is None:
            return self.conv_before_merge(y)
        return self.downsample(y), self.conv_before_merge(y)


class UNetUpBlock(nn.Module):
    """Decoder block: 2x transposed-convolution up-sampling, concatenation with the skip feature
    (up-sampled feature first), then a :class:`UNetConvBlock` (2 * out_chn -> out_chn, no EICA,
    no EMGC, no down-sampling).

    Submodules: ``up`` (ConvTranspose2d, kernel 2, stride 2, bias), ``conv_block``.
    forward(x, bridge): x (B, in_chn, H, W), bridge (B, out_chn, 2H, 2W) -> (B, out_chn, 2H, 2W).
    """

    def __init__(self, in_chn: int, out_chn: int, relu_slope: float):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_chn, out_chn, kernel_size=2, stride=2, bias=True)
        self.conv_block = UNetConvBlock(2 * out_chn, out_chn, downsample=False, relu_slope=relu_slope)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.up(x), bridge], dim=1))


class SAM(nn.Module):
    """Supervised attention module (MPRNet) between the two stages.

    Submodules ``conv1`` (3x3, n_feat -> n_feat), ``conv2`` (3x3, n_feat -> image_chn), ``conv3``
    (3x3, image_chn -> n_feat), all with bias.

    forward(x, image): x (B, n_feat, H, W) stage-1 decoder feature, image (B, image_chn, H, W) the
    blurry input. Returns ``(feature, restored)``: restored = conv2(x) + image (B, image_chn, H, W),
    the stage-1 output; feature = conv1(x) * sigmoid(conv3(restored)) + x (B, n_feat, H, W).
    """

    def __init__(self, n_feat: int, image_chn: int = 3):
        super().__init__()
        self.conv1 = conv3x3(n_feat, n_feat)
        self.conv2 = conv3x3(n_feat, image_chn)
        self.conv3 = conv3x3(image_chn, n_feat)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        restored = self.conv2(x) + image
        attention = torch.sigmoid(self.conv3(restored))
        feature = self.conv1(x).mul(attention).add_(x)
        return feature, restored


class MutualAttention(nn.Module):
    """Cross-modal transposed (channel) attention: queries from the image, keys and values from the
    events, attention between channels within each head.

    Parameters: ``temperature`` (heads, 1, 1), initialised to 1; ``q``, ``k``, ``v``,
    ``project_out``: 1x1 convolutions C -> C without bias, stored as (C, C, 1, 1) weights and
    applied as matrix products over the channel axis.

    forward(image, event): both (B, C, H, W), layer-normalised, equal shapes -> (B, C, H, W).
        Q = q(image), K = k(event), V = v(event), each split into heads as (B, heads, C / heads,
        H * W) (channel index = head * C / heads + c). With Q and K L2-normalised along H * W
        (eps 1e-12), A = softmax((Q K^T) * temperature[head]) of shape (B, heads, C / heads,
        C / heads), no sqrt(d) scaling; output = project_out(A V).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.k = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.v = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def forward(self, image: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        batch, chn, height, width = image.shape
        image_tokens = image.permute(0, 2, 3, 1).reshape(batch, height * width, chn)
        event_tokens = event.permute(0, 2, 3, 1).reshape(batch, height * width, chn)
        return self.attend(image_tokens, event_tokens).view(batch, height, width, chn).permute(0, 3, 1, 2)

    def attend(self, image_tokens: torch.Tensor, event_tokens: torch.Tensor) -> torch.Tensor:
        """The attention on pixel tokens: (B, N, C) image and event tokens -> (B, N, C) contiguous.

        The heads' value maps, their attention and the output projection are linear in the event
        token, so they are folded into one (C, C) matrix per sample, Wp blockdiag(A) Wv, applied
        to the tokens in a single product: V and the attended values are never materialised.
        """
        batch, _, chn = image_tokens.shape
        heads, head_dim = self.num_heads, chn // self.num_heads
        query = F.linear(image_tokens, _matrix(self.q))
        key = F.linear(event_tokens, _matrix(self.k))
        # normalize(Q) normalize(K)^T computed as (Q K^T) / (|Q| |K|^T), for all channel pairs at
        # once (the off-diagonal head blocks are dropped: C x C is small next to the N pixels).
        query_norm = torch.linalg.vector_norm(query, dim=1).clamp_min(1e-12)
        key_norm = torch.linalg.vector_norm(key, dim=1).clamp_min(1e-12)
        scores = torch.bmm(query.transpose(1, 2), key) / (query_norm[:, :, None] * key_norm[:, None, :])
        scores = scores.view(batch, heads, head_dim, heads, head_dim).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)
        attention = (scores * self.temperature).softmax(dim=-1)  # (B, heads, head_dim, head_dim)
        attended_value = torch.matmul(attention, _matrix(self.v).view(heads, head_dim, chn)).view(batch, chn, chn)
        combined = torch.matmul(_matrix(self.project_out), attended_value)  # (B, C, C)
        return torch.bmm(event_tokens, combined.transpose(1, 2))


def _matrix(conv: nn.Conv2d) -> torch.Tensor:
    """The (C_out, C_in) weight of a bias-free 1x1 convolution."""
    return conv.weight.view(conv.out_channels, conv.in_channels)


class FeedForward(nn.Module):
    """Token MLP: fc2(GELU(fc1(x))) with the exact (erf) GELU, no dropout.

    Submodules ``fc1`` (Linear dim -> hidden, bias) and ``fc2`` (Linear hidden -> dim, bias).
    forward(x): (..., dim) -> (..., dim).
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EventImageChannelAttention(nn.Module):
    """EICA: event-image cross-modal channel-attention transformer block (``image_event_transformer``
    in checkpoints). Only the image stream is updated.

    Submodules: ``norm1_image``, ``norm1_event`` (:class:`ChannelLayerNorm`), ``attn``
    (:class:`MutualAttention`), ``norm2`` (nn.LayerNorm over channels, eps 1e-5), ``ffn``
    (:class:`FeedForward`, hidden = ffn_expansion_factor * dim).

    forward(image, event): both (B, dim, H, W), equal shapes -> (B, dim, H, W), channels_last when
    ``image`` is, else contiguous:
        fused = image + attn(norm1_image(image), norm1_event(event))   (un-normalised residual)
        out = fused + ffn(norm2(fused)), per pixel over channels.
    """

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: int = 4):
        super().__init__()
        self.norm1_image = ChannelLayerNorm(dim)
        self.norm1_event = ChannelLayerNorm(dim)
        self.attn = MutualAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.ffn = FeedForward(dim, dim * ffn_expansion_factor)

    def forward(self, image: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        if image.shape != event.shape:
            raise ValueError(
                f'EICA needs image and event features of equal shape, got {tuple(image.shape)} and {tuple(event.shape)}'
            )
        batch, chn, height, width = image.shape
        image_tokens = image.permute(0, 2, 3, 1)  # free for channels_last inputs
        attended = self.attn.attend(
            self.norm1_image.tokens(image).view(batch, height * width, chn),
            self.norm1_event.tokens(event).view(batch, height * width, chn),
        )
        fused = attended.view(batch, height, width, chn).add_(image_tokens)
        out = self.add_feed_forward(fused.view(batch * height * width, chn))
        out = out.view(batch, height, width, chn).permute(0, 3, 1, 2)
        return out if image.is_contiguous(memory_format=torch.channels_last) else out.contiguous()

    def add_feed_forward(self, fused: torch.Tensor) -> torch.Tensor:
        """(P, C) pixel tokens -> (P, C) contiguous: fused + ffn(norm2(fused)) for every pixel.

        On CPU the pixels are processed in cache-sized chunks (see ``_CPU_FFN_CHUNK_ELEMENTS``).
        """
        pixels = fused.shape[0]
        step = pixels
        if fused.device.type == 'cpu':
            step = max(1, _CPU_FFN_CHUNK_ELEMENTS // self.ffn.fc1.out_features)
        parts = [part + self.ffn(self.norm2(part)) for part in fused.split(step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
