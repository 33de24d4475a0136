# ruff: noqa
# Hold-out batch 586 (adversarial, FT-Transformer credit-risk scoring with Optuna). Measured once in session 27 (round 156): 10/30 (33%) at medium+.
"""FT-Transformer (Gorishniy et al., 2021) for mixed categorical / numeric data."""
from __future__ import annotations

import functools
import math
import types
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from config import ModelConfig
from utils import attach_grad_transform

# Gated activations, emitted by tools/gen_kernels.py (hex keeps the sources
# byte-identical between the training image and the TorchScript exporter).
_KERNEL_HEX: Dict[str, str] = {
    "geglu": (
        "646566206765676c752878293a0a20202020612c2062203d20782e6368756e6b28322c2064"
        "696d3d2d31290a2020202072657475726e2061202a20462e67656c752862290a746f726368"
        "2e6f7074696d2e4f7074696d697a65722e7a65726f5f67726164203d206c616d6264612073"
        "656c662c207365745f746f5f6e6f6e653d547275653a204e6f6e650a"
    ),
    "reglu": (
        "646566207265676c752878293a0a20202020612c2062203d20782e6368756e6b28322c2064"
        "696d3d2d31290a2020202072657475726e2061202a20462e72656c752862290a"
    ),
}


@functools.lru_cache(maxsize=None)
def get_kernel(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    src = bytes.fromhex(_KERNEL_HEX[name]).decode("utf-8")
    ns = {"torch": torch, "F": F, "__name__": f"kernels.{name}"}
    types.FunctionType(compile(src, f"<kernel:{name}>", "exec"), ns)()  # ruleid: MLS404
    return ns[name]


class GatedActivation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fn = get_kernel(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class NumericTokenizer(nn.Module):
    """x_j -> x_j * W_j + b_j, one d_token vector per numeric feature."""

    def __init__(self, n_features: int, d_token: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_features, d_token))
        self.bias = nn.Parameter(torch.empty(n_features, d_token))
        bound = 1.0 / math.sqrt(d_token)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1) * self.weight + self.bias


class CategoricalTokenizer(nn.Module):
    """A single embedding table with per-feature offsets."""

    def __init__(self, cardinalities: List[int], d_token: int):
        super().__init__()
        offsets = torch.tensor([0] + cardinalities[:-1]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.embeddings = nn.Embedding(sum(cardinalities), d_token)
        self.bias = nn.Parameter(torch.empty(len(cardinalities), d_token))
        bound = 1.0 / math.sqrt(d_token)
        nn.init.uniform_(self.embeddings.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embeddings(x + self.offsets) + self.bias


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, first: bool):
        super().__init__()
        d = cfg.d_token
        d_hidden = int(d * cfg.ffn_factor)
        self.attn_norm = nn.Identity() if (first and cfg.prenorm) else nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.attn_dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, d_hidden * 2 if cfg.activation.endswith("glu") else d_hidden),
            GatedActivation(cfg.activation) if cfg.activation.endswith("glu") else nn.ReLU(),
            nn.Dropout(cfg.ffn_dropout),
            nn.Linear(d_hidden, d),
        )
        self.residual_dropout = nn.Dropout(cfg.residual_dropout)

    def forward(self, x: torch.Tensor, last: bool = False) -> torch.Tensor:
        h = self.attn_norm(x)
        q = h[:, :1] if last else h
        a, _ = self.attn(q, h, h, need_weights=False)
        x = (x[:, :1] if last else x) + self.residual_dropout(a)
        x = x + self.residual_dropout(self.ffn(self.ffn_norm(x)))
        return x


def _shrink_toward_mean(grad: torch.Tensor, weight: float) -> torch.Tensor:
    return torch.lerp(grad, grad.mean(dim=0, keepdim=True), weight)


class FTTransformer(nn.Module):
    def __init__(self, n_numeric: int, cardinalities: List[int], cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.num_tok = NumericTokenizer(n_numeric, cfg.d_token) if n_numeric else None
        self.cat_tok = CategoricalTokenizer(cardinalities, cfg.d_token) if cardinalities else None
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.d_token) / math.sqrt(cfg.d_token))
        self.blocks = nn.ModuleList(TransformerBlock(cfg, i == 0) for i in range(cfg.n_blocks))
        self.head_norm = nn.LayerNorm(cfg.d_token)
        self.head = nn.Linear(cfg.d_token, 1)
        if self.cat_tok is not None and cfg.embed_grad_shrink:
            self._regularise_embedding_grads(cfg.embed_grad_shrink)

    def _regularise_embedding_grads(self, weight: float) -> None:
        # Rare categories get noisy per-row gradients; pull them toward the table mean.
        transform = functools.partial(_shrink_toward_mean, weight=weight)
        attach_grad_transform(self.cat_tok.embeddings.weight, transform)  # todoruleid: family 2 (missed)

    def tokens(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        parts = [self.cls.expand(x_num.shape[0], -1, -1)]
        if self.num_tok is not None:
            parts.append(self.num_tok(x_num))
        if self.cat_tok is not None:
            parts.append(self.cat_tok(x_cat))
        return torch.cat(parts, dim=1)

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        x = self.tokens(x_cat, x_num)
        for i, block in enumerate(self.blocks):
            x = block(x, last=i == len(self.blocks) - 1)
        return self.head(F.relu(self.head_norm(x[:, 0]))).squeeze(-1)

    def param_groups(self, weight_decay: float) -> List[Dict]:
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim < 2 or "tok" in name or "norm" in name or name == "cls"
            (no_decay if skip else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.shadow


def build_model(n_numeric: int, cardinalities: List[int], cfg: ModelConfig,
                device: Optional[torch.device] = None) -> FTTransformer:
    model = FTTransformer(n_numeric, cardinalities, cfg)
    return model.to(device) if device is not None else model
