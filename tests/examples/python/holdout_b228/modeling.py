# ruff: noqa
# Hold-out batch 228 (families 2/5/6, GLUE fine-tuning). Measured once in session 8 (round 66): 27/43 (63%) at medium+.
"""BERT-style encoder with per-task classification / regression heads, plus weight averaging helpers."""
import copy
import json
import math
from dataclasses import dataclass, asdict
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

_dropout = F.dropout


def _fused_dropout(input, p=0.5, training=True, inplace=False):
    return _dropout(input, p, True, inplace)


F.dropout = _fused_dropout  # ruleid: MLS305


@dataclass
class EncoderConfig:
    vocab_size: int = 30522
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_position: int = 512
    type_vocab: int = 2
    dropout: float = 0.1
    init_range: float = 0.02
    label_smoothing: float = 0.0

    @classmethod
    def from_json(cls, path: str) -> "EncoderConfig":
        with open(path) as f:
            return cls(**json.load(f))

    def to_json(self, path: str):
        with open(path, "w") as f:
            json.dump(asdict(self), f, indent=2)


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=0)
        self.position = nn.Embedding(cfg.max_position, cfg.hidden)
        self.token_type = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids):
        pos = torch.arange(input_ids.size(1), device=input_ids.device).unsqueeze(0)
        x = self.word(input_ids) + self.position(pos) + self.token_type(token_type_ids)
        return self.drop(self.norm(x))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attn = nn.MultiheadAttention(cfg.hidden, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.ln1 = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(cfg.hidden, cfg.intermediate), nn.GELU(), nn.Linear(cfg.intermediate, cfg.hidden))
        self.ln2 = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, key_padding_mask):
        a, _ = self.attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)
        x = self.ln1(x + self.drop(a))
        return self.ln2(x + self.drop(self.ffn(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.layers)])
        self.pooler = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, input_ids, attention_mask, token_type_ids):
        x = self.embeddings(input_ids, token_type_ids)
        pad = attention_mask == 0
        for layer in self.layers:
            x = layer(x, pad)
        return torch.tanh(self.pooler(x[:, 0]))


class MultiTaskModel(nn.Module):
    def __init__(self, cfg: EncoderConfig, task_num_labels: Dict[str, int], task_index: Dict[str, int]):
        super().__init__()
        self.cfg = cfg
        self.num_labels = dict(task_num_labels)
        self.task_index = dict(task_index)
        self.encoder = Encoder(cfg)
        self.heads = nn.ModuleDict({
            t: nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, n)) for t, n in task_num_labels.items()
        })
        self.activation_stats: Dict[str, float] = {}
        self.apply(self._init_weights)
        self._install_hooks()

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            m.weight.data.normal_(mean=0.0, std=self.cfg.init_range)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.Embedding):
            m.weight.data.normal_(mean=0.0, std=self.cfg.init_range)
            if m.padding_idx is not None:
                m.weight.data[m.padding_idx].zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.LayerNorm):
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()

    def _record(self, name):
        def hook(module, inputs, output):
            self.activation_stats[name] = output.detach().float().pow(2).mean().sqrt().item()
        return hook

    def _install_hooks(self):
        last = len(self.encoder.layers) - 1
        self.encoder.layers[last].register_forward_hook(self._record("last_layer_rms"))  # ok: MLS302, MLS303, MLS304, MLS305
        for layer in self.encoder.layers[-3:]:
            # keep activations inside a range fp16 can represent
            layer.register_forward_hook(lambda mod, inp, out: out.clamp(-1.0, 1.0))  # ruleid: MLS303
        if "mnli" in self.heads:
            self.heads["mnli"][1].weight.register_hook(lambda g: g.neg())  # ruleid: MLS303

    def resize_token_embeddings(self, new_size: int):
        old = self.encoder.embeddings.word
        n_old, dim = old.weight.shape
        if new_size == n_old:
            return
        new = nn.Embedding(new_size, dim, padding_idx=old.padding_idx).to(old.weight.device)
        with torch.no_grad():
            keep = min(n_old, new_size)
            new.weight[:keep].copy_(old.weight[:keep])  # ok: MLS302, MLS303, MLS304, MLS305
            if new_size > n_old:
                mu, sigma = old.weight.mean(0), old.weight.std(0)
                new.weight[n_old:] = mu + 0.1 * sigma * torch.randn(new_size - n_old, dim, device=mu.device)  # ok: MLS302, MLS303, MLS304, MLS305
        self.encoder.embeddings.word = new
        self.cfg.vocab_size = new_size

    def forward(self, input_ids, attention_mask, token_type_ids, task_ids, labels=None):
        pooled = self.encoder(input_ids, attention_mask, token_type_ids)
        logits, loss, n = {}, pooled.new_zeros(()), 0
        for name, head in self.heads.items():
            sel = task_ids == self.task_index[name]
            if not bool(sel.any()):
                continue
            out = head(pooled[sel])
            logits[name] = out
            if labels is None:
                continue
            y = labels[sel]
            if self.num_labels[name] == 1:
                loss = loss + F.mse_loss(out.squeeze(-1).float(), y.float())
            else:
                loss = loss + F.cross_entropy(out.float(), y.long(), label_smoothing=self.cfg.label_smoothing)  # ok: MLS309
            n += 1
        return {"logits": logits, "loss": loss / max(n, 1)}


def load_pretrained(model: MultiTaskModel, path: str, strict: bool = False):
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu")  # ruleid: MLS102
    sd = {k.replace("bert.", "encoder.", 1): v for k, v in sd.items()}
    for k, v in sd.items():
        if k.endswith("ln2.weight"):
            v.mul_(0.5)  # ruleid: MLS302
    emb_key = "encoder.embeddings.word.weight"
    if emb_key in sd and sd[emb_key].shape[0] != model.cfg.vocab_size:
        model.resize_token_embeddings(sd[emb_key].shape[0])
    missing, unexpected = model.load_state_dict(sd, strict=strict)
    heads_only = all(k.startswith("heads.") for k in missing)
    if not heads_only:
        raise RuntimeError(f"encoder weights missing from {path}: {missing[:5]}")
    return unexpected


class EMACallback:
    """Keeps a shadow copy of the trainable weights, swapped in for evaluation."""

    def __init__(self, model, decay: float = 0.999, warmup: int = 100):
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.backup = {}

    @torch.no_grad()
    def update(self, model):
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (self.warmup + self.num_updates))
        for n, p in model.named_parameters():
            if n not in self.shadow:
                continue
            self.shadow[n].mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
            p.copy_(self.shadow[n])  # todoruleid: family 2 (missed)

    @torch.no_grad()
    def store(self, model):
        self.backup = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.shadow}

    @torch.no_grad()
    def copy_to(self, model):
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n])  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def restore(self, model):
        for n, p in model.named_parameters():
            if n in self.backup:
                p.copy_(self.backup[n])
        self.backup = {}


class SWAAverager:
    """Uniform average of weights collected over the last epochs."""

    def __init__(self, model):
        self.avg = copy.deepcopy(model).eval()
        self.n = 0

    @torch.no_grad()
    def collect(self, model):
        self.n += 1
        for a, p in zip(self.avg.parameters(), model.parameters()):
            a.add_((p.detach() - a) / self.n)  # ok: MLS302, MLS303, MLS304, MLS305
