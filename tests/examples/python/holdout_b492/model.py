# ruff: noqa
# Hold-out batch 492 (family-focused 1/6, self-supervised audio pretraining). Measured once in session 21 (round 132): 9/30 (30%) at medium+.
"""Conv + Transformer speech encoder with two self-supervised objectives:

* ``w2v``    - wav2vec 2.0 style: mask spans of latent frames and identify the
               true (projected) latent among distractors from the same utterance.
* ``simclr`` - clip-level NT-Xent between two augmented views, with negatives
               gathered from all ranks.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

CONV_LAYERS: Sequence[Tuple[int, int, int]] = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


class ConvFeatureEncoder(nn.Module):
    def __init__(self, layers: Sequence[Tuple[int, int, int]] = CONV_LAYERS, dropout: float = 0.0) -> None:
        super().__init__()
        blocks, in_ch = [], 1
        for i, (dim, kernel, stride) in enumerate(layers):
            mods = [nn.Conv1d(in_ch, dim, kernel, stride=stride, bias=False), nn.Dropout(dropout)]
            if i == 0:
                mods.append(nn.GroupNorm(dim, dim, affine=True))
            mods.append(nn.GELU())
            blocks.append(nn.Sequential(*mods))
            in_ch = dim
        self.blocks = nn.ModuleList(blocks)
        self.layers = list(layers)
        self.out_dim = in_ch

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.unsqueeze(1)
        for block in self.blocks:
            x = block(x)
        return x.transpose(1, 2)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _, kernel, stride in self.layers:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp_min(0)


class ConvPositionalEmbedding(nn.Module):
    def __init__(self, dim: int, kernel: int = 128, groups: int = 16) -> None:
        super().__init__()
        conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=(4.0 / (kernel * dim)) ** 0.5)
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[..., : -self.trim]
        return F.gelu(y).transpose(1, 2)


class ContextEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, ff_mult: int = 4, dropout: float = 0.1,
                 layerdrop: float = 0.05, layerdrop_seed: int = 0) -> None:
        super().__init__()
        self.pos = ConvPositionalEmbedding(dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, heads, dim * ff_mult, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(depth)
        ])
        self.final_norm = nn.LayerNorm(dim)
        self.layerdrop = layerdrop
        self.layerdrop_seed = layerdrop_seed

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos(x)
        x = self.dropout(self.norm(x))
        for i, layer in enumerate(self.layers):
            if self.training and self.layerdrop > 0:
                torch.manual_seed(self.layerdrop_seed + i)  # ruleid: MLS301
                if float(torch.rand(())) < self.layerdrop:
                    continue
            x = layer(x, src_key_padding_mask=padding_mask)
        return self.final_norm(x)


def compute_mask_indices(shape: Tuple[int, int], padding_mask: Optional[torch.Tensor], mask_prob: float,
                         mask_length: int, min_masks: int = 2) -> torch.Tensor:
    bsz, all_sz = shape
    rng = np.random.default_rng(bsz * all_sz)  # todoruleid: family 1 (missed)
    mask = np.zeros((bsz, all_sz), dtype=bool)
    pad = padding_mask.cpu().numpy() if padding_mask is not None else None
    for i in range(bsz):
        sz = all_sz - int(pad[i].sum()) if pad is not None else all_sz
        span_max = sz - mask_length
        if span_max <= 0:
            continue
        num = int(mask_prob * sz / float(mask_length) + rng.random())
        num = min(max(min_masks, num), span_max)
        starts = rng.choice(span_max, num, replace=False)
        idx = (starts[:, None] + np.arange(mask_length)[None, :]).reshape(-1)
        mask[i, idx[idx < sz]] = True
    return torch.from_numpy(mask)


class NegativeSampler:
    """Draws distractor frames uniformly from the same utterance."""

    def __init__(self, num_negatives: int, seed: int = 0) -> None:
        self.num_negatives = num_negatives
        self.seed = seed
        self._gen = torch.Generator()

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        bsz, tsz, dim = y.shape
        self._gen.manual_seed(self.seed)  # ruleid: MLS301
        idx = torch.randint(0, tsz - 1, (bsz, tsz, self.num_negatives), generator=self._gen)
        own = torch.arange(tsz).view(1, tsz, 1)
        idx = idx + (idx >= own).long()
        idx = idx + (torch.arange(bsz) * tsz).view(bsz, 1, 1)
        negs = y.reshape(bsz * tsz, dim)[idx.view(-1).to(y.device)]
        return negs.view(bsz, tsz, self.num_negatives, dim)


def gather_with_grad(z: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(z), dim=0)


def nt_xent(za: torch.Tensor, zb: torch.Tensor, temperature: float) -> Tuple[torch.Tensor, torch.Tensor]:
    za = F.normalize(za.float(), dim=-1)
    zb = F.normalize(zb.float(), dim=-1)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    all_a, all_b = gather_with_grad(za), gather_with_grad(zb)
    bsz = za.size(0)
    labels = torch.arange(bsz, device=za.device) + rank * bsz
    self_mask = F.one_hot(labels, all_a.size(0)).bool()

    def _side(q, same, other):
        logits_pos = q @ other.t() / temperature
        logits_neg = (q @ same.t() / temperature).masked_fill(self_mask, float("-inf"))
        return torch.cat([logits_pos, logits_neg], dim=1)

    logits_a = _side(za, all_a, all_b)
    logits_b = _side(zb, all_b, all_a)
    loss = 0.5 * (F.cross_entropy(logits_a, labels) + F.cross_entropy(logits_b, labels))
    with torch.no_grad():
        acc = (logits_a.argmax(dim=1) == labels).float().mean()
    return loss, acc


class AudioSSLModel(nn.Module):
    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, proj_dim: int = 256,
                 clip_proj_dim: int = 128, dropout: float = 0.1, layerdrop: float = 0.05,
                 mask_prob: float = 0.65, mask_length: int = 10, num_negatives: int = 100,
                 logit_temp: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        self.feature_extractor = ConvFeatureEncoder()
        feat_dim = self.feature_extractor.out_dim
        self.feature_norm = nn.LayerNorm(feat_dim)
        self.post_proj = nn.Linear(feat_dim, dim)
        self.mask_emb = nn.Parameter(torch.empty(dim).uniform_())
        self.encoder = ContextEncoder(dim, depth, heads, dropout=dropout, layerdrop=layerdrop, layerdrop_seed=seed)
        self.final_proj = nn.Linear(dim, proj_dim)
        self.target_proj = nn.Linear(feat_dim, proj_dim)
        self.clip_head = nn.Sequential(
            nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, clip_proj_dim)
        )
        self.negatives = NegativeSampler(num_negatives, seed)
        self.mask_prob, self.mask_length, self.logit_temp = mask_prob, mask_length, logit_temp
        self.embed_dim = dim

    def _features(self, wav: torch.Tensor, padding_mask: Optional[torch.Tensor]):
        feats = self.feature_norm(self.feature_extractor(wav))
        frame_pad = None
        if padding_mask is not None and padding_mask.any():
            lengths = self.feature_extractor.output_lengths((~padding_mask).sum(-1))
            frame_pad = torch.arange(feats.size(1), device=feats.device)[None, :] >= lengths[:, None]
        return feats, frame_pad

    def forward_masked(self, wav: torch.Tensor, padding_mask: Optional[torch.Tensor] = None):
        feats, frame_pad = self._features(wav, padding_mask)
        x = self.post_proj(feats)
        mask = compute_mask_indices(x.shape[:2], frame_pad, self.mask_prob, self.mask_length).to(x.device)
        x = x.clone()
        x[mask] = self.mask_emb.to(x.dtype)
        ctx = self.final_proj(self.encoder(x, frame_pad))
        y = self.target_proj(feats)
        negs = self.negatives(y)
        c_m, y_m, n_m = ctx[mask].float(), y[mask].float(), negs[mask].float()
        cand = torch.cat([y_m.unsqueeze(1), n_m], dim=1)
        logits = F.cosine_similarity(c_m.unsqueeze(1), cand, dim=-1) / self.logit_temp
        same = (n_m == y_m.unsqueeze(1)).all(-1)
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, float("-inf"))], dim=1)
        target = logits.new_zeros(logits.size(0), dtype=torch.long)
        loss = F.cross_entropy(logits, target)
        with torch.no_grad():
            acc = (logits.argmax(-1) == 0).float().mean()
        return loss, {"w2v_loss": loss.detach(), "w2v_acc": acc, "mask_frac": mask.float().mean()}

    def encode(self, wav: torch.Tensor, padding_mask: Optional[torch.Tensor] = None):
        feats, frame_pad = self._features(wav, padding_mask)
        return self.encoder(self.post_proj(feats), frame_pad), frame_pad

    def embed(self, wav: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        ctx, frame_pad = self.encode(wav, padding_mask)
        if frame_pad is None:
            return ctx.mean(dim=1)
        valid = (~frame_pad).unsqueeze(-1).to(ctx.dtype)
        return (ctx * valid).sum(1) / valid.sum(1).clamp_min(1.0)

    def forward(self, batch: Dict[str, torch.Tensor], objective: str = "both", temperature: float = 0.1):
        total = 0.0
        logs: Dict[str, torch.Tensor] = {}
        if objective in ("w2v", "both"):
            wav = batch["wave"] if "wave" in batch else batch["view_a"]
            loss, parts = self.forward_masked(wav, batch.get("padding_mask"))
            total = total + loss
            logs.update(parts)
        if objective in ("simclr", "both"):
            z = self.clip_head(torch.cat([self.embed(batch["view_a"]), self.embed(batch["view_b"])]))
            za, zb = z.chunk(2)
            loss, acc = nt_xent(za, zb, temperature)
            total = total + loss
            logs.update({"clip_loss": loss.detach(), "clip_acc": acc})
        return total, logs


_MODEL_KEYS = ("dim", "depth", "heads", "proj_dim", "dropout", "layerdrop", "mask_prob", "mask_length",
               "num_negatives", "logit_temp", "seed")


def build_model(cfg: dict) -> AudioSSLModel:
    return AudioSSLModel(**{k: cfg[k] for k in _MODEL_KEYS if k in cfg})
