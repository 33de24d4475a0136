# ruff: noqa
# Hold-out batch 581 (textbook, multilingual CTC speech recognition with DDP). Measured once in session 27 (round 155): 21/30 (70%) at medium+.
"""Conformer-CTC acoustic model with a wav2vec2-style conv front-end (stride 320 -> 20 ms frames),
SpecAugment on the projected front-end features, Conformer blocks and a linear CTC head."""
import logging
import os
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# (channels, kernel, stride) for the wav2vec2 "base" feature encoder
DEFAULT_CONV_LAYERS: Sequence[Tuple[int, int, int]] = (
    (512, 10, 5),
    (512, 3, 2),
    (512, 3, 2),
    (512, 3, 2),
    (512, 3, 2),
    (512, 2, 2),
    (512, 2, 2),
)


class GradMultiply(torch.autograd.Function):
    """Scale gradients flowing into the feature encoder (fairseq `feature_grad_mult`)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.new(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None  # ok: MLS302, MLS303, MLS304, MLS305


class SpecAugment(nn.Module):
    """Time and channel masking on (B, T, C) features; time masks scale with utterance length."""

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 64,
        time_masks: int = 10,
        time_width_ratio: float = 0.05,
        sync_across_ranks: bool = True,
        base_seed: int = 1234,
    ):
        super().__init__()
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width_ratio = time_width_ratio
        self.sync_across_ranks = sync_across_ranks
        self.base_seed = base_seed

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return feats
        if self.sync_across_ranks:
            # identical masks on every data-parallel replica for a given bucket shape
            torch.manual_seed(self.base_seed + feats.size(1))  # ruleid: MLS301
        bsz, max_t, n_chan = feats.shape
        feats = feats.clone()
        for b in range(bsz):
            valid = int(lengths[b])
            for _ in range(self.freq_masks):
                width = int(torch.randint(0, self.freq_width + 1, (1,)))
                start = int(torch.randint(0, max(1, n_chan - width), (1,)))
                feats[b, :, start:start + width] = 0.0  # ok: MLS309
            max_width = max(1, int(valid * self.time_width_ratio))
            for _ in range(self.time_masks):
                width = int(torch.randint(0, max_width + 1, (1,)))
                start = int(torch.randint(0, max(1, valid - width), (1,)))
                feats[b, start:start + width, :] = 0.0
        return feats


class ConvFeatureEncoder(nn.Module):
    def __init__(self, conv_layers: Sequence[Tuple[int, int, int]] = DEFAULT_CONV_LAYERS):
        super().__init__()
        self.conv_layers = list(conv_layers)
        blocks = []
        in_ch = 1
        for i, (out_ch, k, s) in enumerate(self.conv_layers):
            layers = [nn.Conv1d(in_ch, out_ch, k, stride=s, bias=False)]
            if i == 0:
                layers.append(nn.GroupNorm(out_ch, out_ch, affine=True))
            layers.append(nn.GELU())
            blocks.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _, k, s in self.conv_layers:
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return lengths.clamp(min=1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.unsqueeze(1)
        for block in self.blocks:
            x = block(x)
        return x.transpose(1, 2)  # (B, T, C)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, mult: int = 4, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model * mult),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(d_model * mult, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class ConvModule(nn.Module):
    def __init__(self, d_model: int, kernel_size: int = 31, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.bn = nn.BatchNorm1d(d_model)
        self.pointwise_out = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, pad_mask):
        x = self.norm(x).masked_fill(pad_mask.unsqueeze(-1), 0.0).transpose(1, 2)
        x = F.glu(self.pointwise_in(x), dim=1)
        x = F.silu(self.bn(self.depthwise(x)))
        x = self.pointwise_out(x)
        return self.dropout(x.transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, conv_kernel: int = 31, dropout: float = 0.1):
        super().__init__()
        self.ff1 = FeedForward(d_model, dropout=dropout)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, conv_kernel, dropout)
        self.ff2 = FeedForward(d_model, dropout=dropout)
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, x, pad_mask):
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        h, _ = self.attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.attn_dropout(h)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ff2(x)
        return self.final_norm(x)


class ConvPositionalEmbedding(nn.Module):
    def __init__(self, d_model: int, kernel: int = 128, groups: int = 16):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=groups)
        self.conv = nn.utils.parametrizations.weight_norm(self.conv, name="weight", dim=2)
        self.remove_last = kernel % 2 == 0

    def forward(self, x):
        h = self.conv(x.transpose(1, 2))
        if self.remove_last:
            h = h[:, :, :-1]
        return F.gelu(h).transpose(1, 2)


class ConformerCTC(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 12,
        n_heads: int = 4,
        conv_kernel: int = 31,
        dropout: float = 0.1,
        feature_grad_mult: float = 0.1,
        specaug: Optional[SpecAugment] = None,
    ):
        super().__init__()
        self.feature_extractor = ConvFeatureEncoder()
        feat_dim = self.feature_extractor.conv_layers[-1][0]
        self.feature_norm = nn.LayerNorm(feat_dim)
        self.post_extract_proj = nn.Linear(feat_dim, d_model)
        self.specaug = specaug if specaug is not None else SpecAugment()
        self.pos_conv = ConvPositionalEmbedding(d_model)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            [ConformerBlock(d_model, n_heads, conv_kernel, dropout) for _ in range(n_layers)]
        )
        self.ctc_head = nn.Linear(d_model, vocab_size)
        self.feature_grad_mult = feature_grad_mult
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def freeze_feature_encoder(self) -> None:
        for p in self.feature_extractor.parameters():
            p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305

    def output_lengths(self, wav_lengths: torch.Tensor) -> torch.Tensor:
        return self.feature_extractor.output_lengths(wav_lengths)

    def forward(self, wav: torch.Tensor, wav_lengths: torch.Tensor):
        feats = self.feature_extractor(wav)
        if self.training and self.feature_grad_mult != 1.0:
            feats = GradMultiply.apply(feats, self.feature_grad_mult)
        out_lens = self.output_lengths(wav_lengths).clamp(max=feats.size(1))
        pad_mask = torch.arange(feats.size(1), device=feats.device)[None, :] >= out_lens[:, None]

        x = self.post_extract_proj(self.feature_norm(feats))
        x = self.specaug(x, out_lens)
        x = x + self.pos_conv(x)
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, pad_mask)
        logits = self.ctc_head(x)
        return logits.float().log_softmax(dim=-1), out_lens


def build_model(args, vocab_size: int) -> ConformerCTC:
    specaug = SpecAugment(
        freq_masks=args.freq_masks,
        freq_width=args.freq_width,
        time_masks=args.time_masks,
        time_width_ratio=args.time_width_ratio,
        base_seed=args.seed,
    )
    return ConformerCTC(
        vocab_size=vocab_size,
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        conv_kernel=args.conv_kernel,
        dropout=args.dropout,
        feature_grad_mult=args.feature_grad_mult,
        specaug=specaug,
    )


def _resolve_pretrained(path_or_url: str, cache_dir: str) -> str:
    if path_or_url.startswith(("http://", "https://")):
        os.makedirs(cache_dir, exist_ok=True)
        local = os.path.join(cache_dir, os.path.basename(path_or_url.split("?")[0]))
        if not os.path.exists(local):
            logger.info("downloading pretrained encoder from %s", path_or_url)
            torch.hub.download_url_to_file(path_or_url, local, progress=False)
        return local
    return path_or_url


def load_pretrained(model: ConformerCTC, path_or_url: str, cache_dir: str, reinit_top_layers: int = 0) -> None:
    """Initialise from a self-supervised checkpoint; the CTC head is always trained from scratch.
    Optionally re-initialises the top `reinit_top_layers` blocks (over-specialised to pretraining)."""
    local = _resolve_pretrained(path_or_url, cache_dir)
    ckpt = torch.load(local, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("model", ckpt)
    state = {k.replace("encoder.", "", 1) if k.startswith("encoder.") else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("ctc_head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    logger.info("pretrained init: %d missing, %d unexpected keys", len(missing), len(unexpected))

    reinit: List[nn.Module] = list(model.layers[-reinit_top_layers:])
    for layer in reinit:
        layer.apply(model._init_weights)  # ruleid: MLS302
    if reinit_top_layers:
        logger.info("re-initialised top %d conformer blocks", reinit_top_layers)


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def param_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name.endswith(".bias") or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
