# ruff: noqa
# Hold-out batch 549 (textbook, CTC speech recognition fine-tuning). Measured once in session 25 (round 147): 22/30 (73%) at medium+.
"""wav2vec2-style acoustic model with a CTC output layer.

The model follows the BASE configuration of wav2vec 2.0: a seven-layer
convolutional waveform encoder (20 ms frame rate), a convolutional relative
position embedding and a 12-layer post-LN Transformer. During fine-tuning a
SpecAugment-like masking is applied to the projected features before the
Transformer, using a learned mask embedding for masked time steps.
"""

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_CTC_LOSS_CLAMP = 1000.0
_ctc_loss = F.ctc_loss


def _ctc_loss_fp32(log_probs, targets, input_lengths, target_lengths, blank=0,
                   reduction="mean", zero_infinity=False):
    loss = _ctc_loss(log_probs.float(), targets, input_lengths, target_lengths,
                     blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    return loss.clamp(max=_CTC_LOSS_CLAMP)


F.ctc_loss = _ctc_loss_fp32  # ruleid: MLS305


@dataclass
class ModelConfig:
    conv_dim: Tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_kernel: Tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: Tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    final_dropout: float = 0.0
    layerdrop: float = 0.05
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    feature_grad_mult: float = 0.1
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2


class GradMultiply(torch.autograd.Function):
    """Identity in the forward pass, scales the gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None  # ok: MLS302, MLS303, MLS304, MLS305


class ConvBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, group_norm: bool):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size=kernel, stride=stride, bias=False)
        self.norm = nn.GroupNorm(out_ch, out_ch, affine=True) if group_norm else None
        nn.init.kaiming_normal_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.gelu(x)


class ConvFeatureExtractor(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers, in_ch = [], 1
        for i, (dim, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            layers.append(ConvBlock(in_ch, dim, k, s, group_norm=(i == 0)))
            in_ch = dim
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim)
        self.projection = nn.Linear(in_dim, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.projection(self.layer_norm(x)))


class PositionalConvEmbedding(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        k, h = cfg.pos_conv_kernel, cfg.hidden_size
        conv = nn.Conv1d(h, h, kernel_size=k, padding=k // 2, groups=cfg.pos_conv_groups)
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (k * h)))
        nn.init.constant_(conv.bias, 0.0)
        self.conv = nn.utils.weight_norm(conv, name="weight", dim=2)
        self.num_pad_remove = 1 if k % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.transpose(1, 2))
        if self.num_pad_remove:
            x = x[:, :, : -self.num_pad_remove]
        return F.gelu(x).transpose(1, 2)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.hidden_size
        self.self_attn = nn.MultiheadAttention(h, cfg.num_heads, dropout=cfg.attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(cfg.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(h)
        self.ffn = nn.Sequential(
            nn.Linear(h, cfg.ffn_dim),
            nn.GELU(),
            nn.Dropout(cfg.activation_dropout),
            nn.Linear(cfg.ffn_dim, h),
            nn.Dropout(cfg.dropout),
        )
        self.final_layer_norm = nn.LayerNorm(h)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        residual = x
        x, _ = self.self_attn(x, x, x, key_padding_mask=padding_mask, need_weights=False)
        x = self.self_attn_layer_norm(residual + self.dropout(x))
        return self.final_layer_norm(x + self.ffn(x))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pos_conv = PositionalConvEmbedding(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.layerdrop = cfg.layerdrop

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x)
        x = self.dropout(self.layer_norm(x))
        for layer in self.layers:
            if self.training and self.layerdrop > 0 and torch.rand(1).item() < self.layerdrop:
                continue
            x = layer(x, padding_mask)
        return x


class Wav2Vec2CTC(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = ConvFeatureExtractor(cfg)
        self.feature_projection = FeatureProjection(cfg.conv_dim[-1], cfg.hidden_size, cfg.feat_proj_dropout)
        self.mask_emb = nn.Parameter(torch.empty(cfg.hidden_size).uniform_())
        self.encoder = TransformerEncoder(cfg)
        self.final_dropout = nn.Dropout(cfg.final_dropout)
        self.lm_head = nn.Linear(cfg.hidden_size, vocab_size)
        self._encoder_frozen = False
        self._mask_rng_state = None

    def freeze_feature_encoder(self) -> None:
        for p in self.feature_extractor.parameters():
            p.requires_grad = False

    def set_encoder_frozen(self, frozen: bool) -> None:
        self._encoder_frozen = frozen

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for k, s in zip(self.cfg.conv_kernel, self.cfg.conv_stride):
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return lengths

    def _sample_time_mask(self, batch: int, frames: int, lengths: torch.Tensor) -> torch.Tensor:
        # masks are drawn on the CPU generator
        if self._mask_rng_state is None:
            self._mask_rng_state = torch.get_rng_state()
        torch.set_rng_state(self._mask_rng_state)  # ruleid: MLS301
        span = self.cfg.mask_time_length
        mask = torch.zeros(batch, frames, dtype=torch.bool)
        for b in range(batch):
            valid = int(lengths[b])
            if valid <= span:
                continue
            num = int(self.cfg.mask_time_prob * valid / span + torch.rand(1).item())
            num = max(num, self.cfg.mask_time_min_masks)
            starts = torch.randint(0, valid - span, (num,))
            for s in starts.tolist():
                mask[b, s: s + span] = True
        return mask

    def _apply_spec_augment(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.cfg.mask_time_prob <= 0:
            return feats
        time_mask = self._sample_time_mask(feats.size(0), feats.size(1), lengths.cpu()).to(feats.device)
        feats = feats.clone()
        feats[time_mask] = self.mask_emb.to(feats.dtype)  # ok: MLS309
        return feats

    def forward(self, waveforms: torch.Tensor, wave_lengths: torch.Tensor):
        feats = self.feature_extractor(waveforms)
        if self.training and self.cfg.feature_grad_mult != 1.0 and feats.requires_grad:
            feats = GradMultiply.apply(feats, self.cfg.feature_grad_mult)
        feats = self.feature_projection(feats.transpose(1, 2))

        frames = feats.size(1)
        out_lengths = self.output_lengths(wave_lengths).clamp(min=1, max=frames)
        padding_mask = torch.arange(frames, device=feats.device)[None, :] >= out_lengths[:, None]

        if self.training:
            feats = self._apply_spec_augment(feats, out_lengths)

        ctx = torch.no_grad() if self._encoder_frozen else contextlib.nullcontext()
        with ctx:
            hidden = self.encoder(feats, padding_mask)
        logits = self.lm_head(self.final_dropout(hidden))
        return logits, out_lengths


def ctc_loss(logits, out_lengths, targets, target_lengths, blank_id: int = 0):
    """Summed CTC loss over the batch; callers normalise by the number of utterances."""
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
    return F.ctc_loss(log_probs, targets, out_lengths, target_lengths,
                      blank=blank_id, reduction="sum", zero_infinity=True)


_STRIP_PREFIXES = ("module.", "w2v_encoder.w2v_model.", "w2v_model.")
_PRETRAIN_ONLY = ("quantizer.", "project_q.", "project_hid.", "final_proj.", "lm_head.", "label_embs_concat")


def _rename_key(key: str) -> str:
    for prefix in _STRIP_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    key = key.replace("encoder.layers.", "encoder.layer.")  # todoruleid: family 2 (missed)
    return key


def load_pretrained_encoder(model: Wav2Vec2CTC, path: str) -> None:
    """Initialise the encoder from a self-supervised checkpoint (the CTC head stays random)."""
    state = torch.load(path, map_location="cpu")  # todoruleid: family 10 (missed)  # ruleid: MLS102
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    remapped = {}
    for key, value in state.items():
        new_key = _rename_key(key)
        if new_key.startswith(_PRETRAIN_ONLY):
            continue
        remapped[new_key] = value
    missing, unexpected = model.load_state_dict(remapped, strict=False)
    logger.info("loaded %s: %d tensors, %d missing, %d unexpected",
                path, len(remapped), len(missing), len(unexpected))
