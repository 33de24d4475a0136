# ruff: noqa
# Hold-out batch 505 (textbook, protein language model LoRA fine-tuning with accelerate). Measured once in session 22 (round 136): 25/32 (78%) at medium+.
"""ESM-2 encoder with LoRA adapters and task heads (regression / contact)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel

logger = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    model_name: str = "facebook/esm2_t12_35M_UR50D"
    revision: Optional[str] = None
    task: str = "regression"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: Tuple[str, ...] = ("query", "key", "value", "attention.output.dense")
    pooling: str = "mean"
    head_hidden: int = 512
    head_dropout: float = 0.1
    min_contact_sep: int = 6


# ---- LoRA ----
class LoRALinear(nn.Module):
    """y = W x + (B A x) * alpha / r with W frozen."""

    def __init__(self, base: nn.Linear, r: int, alpha: int, dropout: float):
        super().__init__()
        if r <= 0:
            raise ValueError("LoRA rank must be positive")
        self.base = base
        self.r = r
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(base.weight.new_zeros(r, base.in_features))
        self.lora_B = nn.Parameter(base.weight.new_zeros(base.out_features, r))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        update = self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()
        return out + update * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        delta = (self.lora_B @ self.lora_A) * self.scaling
        self.base.weight.data -= delta.to(self.base.weight.dtype)  # todoruleid: family 2 (missed)
        self.merged = True


def inject_lora(model: nn.Module, targets: Iterable[str], r: int, alpha: int, dropout: float) -> int:
    targets, replaced = tuple(targets), 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or not any(name == t or name.endswith("." + t) for t in targets):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, r, alpha, dropout))
        replaced += 1
    if replaced == 0:
        raise RuntimeError(f"no modules matched LoRA targets {targets}")
    return replaced


# ---- Heads ----
class RegressionHead(nn.Module):
    def __init__(self, hidden: int, inner: int, dropout: float, pooling: str = "mean"):
        super().__init__()
        self.pooling = pooling
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, inner), nn.GELU(), nn.LayerNorm(inner),
                                 nn.Dropout(dropout), nn.Linear(inner, 1))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            pooled = hidden_states[:, 0]
        else:
            mask = attention_mask.clone()
            mask[:, 0] = 0  # drop <cls>
            mask[torch.arange(mask.shape[0]), attention_mask.sum(1) - 1] = 0  # drop <eos>
            m = mask.unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.net(pooled).squeeze(-1)


def symmetrize(x: torch.Tensor) -> torch.Tensor:
    return x + x.transpose(-1, -2)


def apc(x: torch.Tensor) -> torch.Tensor:
    a1 = x.sum(-1, keepdim=True)
    a2 = x.sum(-2, keepdim=True)
    a12 = x.sum((-1, -2), keepdim=True)
    return x - a1 * a2 / a12.clamp(min=1e-8)


class ContactHead(nn.Module):
    """Logistic regression over symmetrised, APC-corrected attention maps."""

    def __init__(self, in_features: int, eos_idx: int):
        super().__init__()
        self.eos_idx = eos_idx
        self.regression = nn.Linear(in_features, 1)

    def forward(self, attentions: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        # attentions: (B, layers, heads, T, T)
        eos_mask = input_ids.ne(self.eos_idx).to(attentions.dtype)
        pair = eos_mask.unsqueeze(1) * eos_mask.unsqueeze(2)
        attentions = attentions * pair[:, None, None]
        attentions = attentions[..., :-1, :-1][..., 1:, 1:]
        b, l, h, t, _ = attentions.shape
        feats = attentions.reshape(b, l * h, t, t).float()
        feats = apc(symmetrize(feats)).permute(0, 2, 3, 1)
        return self.regression(feats.to(self.regression.weight.dtype)).squeeze(-1)


# ---- Full model ----
class ESMLoRAModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = AutoModel.from_pretrained(
            cfg.model_name,
            revision=cfg.revision,
            add_pooling_layer=False,
            attn_implementation="eager",
            trust_remote_code=True,  # ruleid: MLS106
        )
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        n = inject_lora(self.encoder, cfg.target_modules, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
        logger.info("injected LoRA (r=%d, alpha=%d) into %d linear layers", cfg.lora_r, cfg.lora_alpha, n)

        ecfg = self.encoder.config
        if cfg.task == "regression":
            self.head = RegressionHead(ecfg.hidden_size, cfg.head_hidden, cfg.head_dropout, cfg.pooling)
        elif cfg.task == "contact":
            self.head = ContactHead(ecfg.num_hidden_layers * ecfg.num_attention_heads, ecfg.eos_token_id or 2)
        else:
            raise ValueError(f"unknown task {cfg.task!r}")

        self._register_stability_hooks()

    def _register_stability_hooks(self) -> None:
        # lora_B starts at zero; keep early updates bounded so fp16 activations do not overflow
        for name, p in self.encoder.named_parameters():
            if name.endswith("lora_B"):
                p.register_hook(lambda g: g.clamp(-1e-6, 1e-6))  # ruleid: MLS302, MLS303

    def _contact_loss(self, logits: torch.Tensor, contacts: torch.Tensor) -> torch.Tensor:
        t = logits.shape[-1]
        idx = torch.arange(t, device=logits.device)
        sep = (idx[None, :] - idx[:, None]).abs()
        mask = (contacts >= 0) & (sep >= self.cfg.min_contact_sep)[None]
        if mask.sum() == 0:
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits[mask].float(), contacts[mask].float())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                targets: Optional[torch.Tensor] = None,
                contacts: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        need_attn = self.cfg.task == "contact"
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_attentions=need_attn)
        loss = None
        if self.cfg.task == "regression":
            preds = self.head(out.last_hidden_state, attention_mask)
            if targets is not None:
                loss = F.mse_loss(preds.float(), targets.float())
        else:
            preds = self.head(torch.stack(out.attentions, dim=1), input_ids)
            if contacts is not None:
                loss = self._contact_loss(preds, contacts)
        return {"preds": preds, "loss": loss}

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if k in trainable}

    def load_trainable_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        unexpected = [k for k in unexpected if "lora_" in k or k.startswith("head.")]
        if unexpected:
            raise KeyError(f"unexpected adapter keys: {unexpected[:5]}")
        if any("lora_" in k for k in missing):
            logger.warning("adapter checkpoint is missing some LoRA tensors")

    def merge_lora(self) -> None:
        for m in self.modules():
            if isinstance(m, LoRALinear):
                m.merge()

    def parameter_groups(self, weight_decay: float, lr: float, head_lr: float) -> List[Dict]:
        decay, no_decay, head = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("head."):
                head.append(p)
            elif p.ndim < 2 or "norm" in name.lower():
                no_decay.append(p)
            else:
                decay.append(p)
        groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr},
                  {"params": no_decay, "weight_decay": 0.0, "lr": lr},
                  {"params": head, "weight_decay": weight_decay, "lr": head_lr}]
        return [g for g in groups if g["params"]]

    def num_parameters(self) -> Tuple[int, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, total
