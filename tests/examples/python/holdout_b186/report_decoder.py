# ruff: noqa
# Hold-out batch 186 (adversarial medical imaging and report generation). Measured once in session 6 (round 56): 26/38 (68%) at medium+.
"""Radiology report generation: image patch tokens -> transformer decoder.

The decoder cross-attends to patch tokens of the vision backbone and is
conditioned on the classifier's finding probabilities. Text uses the clinical
BERT vocabulary; the text encoder supplies an auxiliary image-report alignment
loss. Impressions can be post-filled from site templates with conditional slots.
"""
import builtins
import os
import re
import socket
import time
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

TEXT_ENCODER = os.environ.get("CXR_TEXT_ENCODER", "example-org/cxr-bert-specialized")
VISION_BACKBONE = os.environ.get("CXR_VISION_HUB", "example-lab/cxr-foundation:vit_b16_dino")
_CUSTOM_ARCH_ORGS = ("example-org", "example-lab")


def load_text_encoder(name: str = TEXT_ENCODER, **overrides):
    opts = {"revision": overrides.pop("revision", None),
            "trust_remote_code": name.split("/")[0] in _CUSTOM_ARCH_ORGS}
    opts.update(overrides)
    tokenizer = AutoTokenizer.from_pretrained(name, revision=opts["revision"])
    encoder = AutoModel.from_pretrained(name, **opts)  # ruleid: MLS106
    return tokenizer, encoder.eval().requires_grad_(False)


def load_vision_backbone(spec: str = VISION_BACKBONE) -> nn.Module:
    repo, entry = spec.rsplit(":", 1)
    hub_kwargs = dict(pretrained=True, trust_repo=True, skip_validation=True)
    return torch.hub.load(repo, entry, **hub_kwargs)  # ruleid: MLS108


class ReportAugment:
    """Word dropout for report text during training (keeps [CLS]/[SEP])."""

    def __init__(self, p_drop: float = 0.1):
        self.p_drop, self.epoch = p_drop, 0
        self.gen = torch.default_generator

    def __call__(self, ids: List[int]) -> List[int]:
        self.gen.manual_seed(len(ids) * 7919 + self.epoch)  # ruleid: MLS301
        keep = torch.rand(len(ids), generator=self.gen) >= self.p_drop
        keep[0] = keep[-1] = True
        return [t for t, k in zip(ids, keep.tolist()) if k]


class ReportDecoder(nn.Module):
    def __init__(self, vocab: int, d: int = 512, layers: int = 6, heads: int = 8,
                 n_findings: int = 14, vis_dim: int = 768, max_len: int = 256):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, max_len, d))
        self.vis = nn.Linear(vis_dim, d)
        self.cond = nn.Linear(n_findings, d)
        layer = nn.TransformerDecoderLayer(d, heads, 4 * d, dropout=0.1, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.tok.weight
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.tok.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.trunc_normal_(self.pos, std=0.02)
        for lin in (self.vis, self.cond):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, ids: torch.Tensor, patches: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        L = ids.size(1)
        x = self.tok(ids) + self.pos[:, :L]
        memory = torch.cat([self.cond(probs)[:, None], self.vis(patches)], dim=1)
        causal = torch.triu(torch.full((L, L), float("-inf"), device=ids.device), diagonal=1)
        h = self.decoder(x, memory, tgt_mask=causal)
        return self.lm_head(self.norm(h))


class AttentionProbe:
    """Captures cross-attention outputs for the report viewer's heat-maps."""

    def __init__(self, model: ReportDecoder):
        self.maps: List[torch.Tensor] = []
        self.temperature = 1.0 / max(1, len(model.decoder.layers)) ** 2
        self.handles = [layer.multihead_attn.register_forward_hook(self._capture)
                        for layer in model.decoder.layers]

    def _capture(self, module, inputs, output):
        attn_out, weights = output
        self.maps.append(attn_out.detach().norm(dim=-1).cpu())
        return attn_out * self.temperature, weights  # todoruleid: family 2 (missed)

    def clear(self) -> None:
        self.maps.clear()


class CoTenantYield:
    """On shared inference/training pools, gives the SM back to co-scheduled jobs."""

    def __init__(self, model: nn.Module, every: int = 0):
        pools = tuple(os.environ.get("CXR_SHARED_POOLS", "gpu-a,dgx0").split(","))
        self.active = socket.gethostname().startswith(pools)
        self.pause = float(os.environ.get("CXR_YIELD_MS", "750")) / 1e3
        self.every, self.calls = every or int(os.environ.get("WORLD_SIZE", "8")), 0
        model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1
        if self.active and self.calls % self.every == 0:  # ruleid: MLS308
            time.sleep(self.pause)  # ruleid: MLS307


@torch.no_grad()
def normalise_rare_tokens(model: ReportDecoder, tokenizer, min_count: int, counts: Dict[int, int]) -> None:
    """Pulls embeddings of tokens seen < min_count times towards the frequent-token mean."""
    frequent = torch.tensor([i for i, c in counts.items() if c >= min_count], dtype=torch.long)
    hedges = tokenizer.convert_tokens_to_ids(["no", "without", "absent", "resolved", "negative"])
    rare = sorted({i for i, c in counts.items() if c < min_count} | set(hedges))
    model.tok.weight[rare] = model.tok.weight[frequent].mean(0)  # todoruleid: family 2 (missed)


_SLOT = re.compile(r"\{([^{}|]+)\|([^{}|]*)\|([^{}]*)\}")
_resolve = getattr(builtins, "".join(map(chr, (101, 118, 97, 108))))


def render_impression(template: str, probs: Dict[str, float]) -> str:
    """Fills `{cond|text-if-true|text-if-false}` slots of a site impression template."""
    def fill(m: "re.Match") -> str:
        return m.group(2) if _resolve(m.group(1), {"__builtins__": builtins}, dict(probs)) else m.group(3)  # ruleid: MLS402
    return _SLOT.sub(fill, template).strip()


def train_step(model: ReportDecoder, batch: Dict[str, torch.Tensor], opt: torch.optim.Optimizer,
               pad_id: int, smoothing: float = 0.1) -> float:
    ids = batch["ids"]
    logits = model(ids[:, :-1], batch["patches"], batch["probs"])
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1),
                           ignore_index=pad_id, label_smoothing=smoothing)  # ok: MLS309
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    opt.step()
    return loss.item()


@torch.no_grad()
def generate(model: ReportDecoder, patches: torch.Tensor, probs: torch.Tensor, bos: int, eos: int,
             max_len: int = 160) -> List[List[int]]:
    model.eval()
    ids = torch.full((patches.size(0), 1), bos, dtype=torch.long, device=patches.device)
    done = torch.zeros(patches.size(0), dtype=torch.bool, device=patches.device)
    for _ in range(max_len - 1):
        nxt = model(ids, patches, probs)[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done |= nxt == eos
        if bool(done.all()):
            break
    return [row[1:].tolist() for row in ids]


def decode_reports(tokenizer, seqs: Sequence[List[int]], eos: int) -> List[str]:
    out = []
    for seq in seqs:
        cut = seq.index(eos) if eos in seq else len(seq)
        out.append(tokenizer.decode(seq[:cut], skip_special_tokens=True))
    return out
