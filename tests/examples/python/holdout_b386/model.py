# ruff: noqa
# Hold-out batch 386 (adversarial, protein language model fine-tuning). Measured once in session 15 (round 106): 13/32 (41%) at medium+.
"""ESM-2 style protein encoder with masked-LM and regression heads."""

import functools
import logging
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass
class EncoderConfig:
    vocab_size: int = 33
    hidden_size: int = 480
    num_layers: int = 12
    num_heads: int = 20
    ffn_mult: int = 4
    dropout: float = 0.0
    attn_dropout: float = 0.0
    pad_id: int = 1
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), persistent=False)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    def forward(self, q: torch.Tensor, k: torch.Tensor):
        freqs = torch.outer(torch.arange(q.shape[-2], device=q.device, dtype=self.inv_freq.dtype), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)[None, None]
        cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)
        return q * cos + self._rotate_half(q) * sin, k * cos + self._rotate_half(k) * sin


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.rotary = RotaryEmbedding(self.head_dim)
        self.attn_dropout = cfg.attn_dropout

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        q = self._shape(self.q_proj(x)) * self.head_dim ** -0.5
        k = self._shape(self.k_proj(x))
        v = self._shape(self.v_proj(x))
        q, k = self.rotary(q, k)
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = key_padding_mask[:, None, None, :].to(torch.bool)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0, scale=1.0
        )
        out = out.transpose(1, 2).reshape(x.shape)
        return self.out_proj(out)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = SelfAttention(cfg)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.hidden_size * cfg.ffn_mult)
        self.fc2 = nn.Linear(cfg.hidden_size * cfg.ffn_mult, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), mask))
        x = x + self.dropout(self.fc2(F.gelu(self.fc1(self.ffn_norm(x)))))
        return x


class ProteinEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_id)
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        if attention_mask is not None:
            x = x * attention_mask.unsqueeze(-1).to(x.dtype)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return self.final_norm(x)


def _fp32_head(fn):
    """Run small prediction heads in fp32 regardless of the autocast context."""

    @functools.wraps(fn)
    def wrapper(self, hidden, *args, **kwargs):
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return fn(self, hidden.detach().float(), *args, **kwargs)  # todoruleid: family 2 (missed)

    return wrapper


class LMHead(nn.Module):
    def __init__(self, cfg: EncoderConfig, embed_weight: nn.Parameter):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.weight = embed_weight
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.norm(F.gelu(self.dense(hidden)))
        return F.linear(x, self.weight) + self.bias


class RegressionHead(nn.Module):
    def __init__(self, cfg: EncoderConfig, extra_features: int = 0, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(cfg.hidden_size + extra_features, hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, 1))

    @_fp32_head
    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, features=None) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        if features is not None:
            pooled = torch.cat([pooled, features.to(pooled.dtype)], dim=-1)
        return self.net(pooled).squeeze(-1)


class ESMForTask(nn.Module):
    def __init__(self, cfg: EncoderConfig, task: str = "mlm", extra_features: int = 0):
        super().__init__()
        self.cfg, self.task = cfg, task
        self.encoder = ProteinEncoder(cfg)
        self.lm_head = LMHead(cfg, self.encoder.embed_tokens.weight)
        self.reg_head = RegressionHead(cfg, extra_features) if task == "regression" else None
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.cfg.init_std
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)  # ok: MLS302, MLS303, MLS304, MLS305
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def load_encoder_weights(self, state_dict: Dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if not k.startswith("reg_head.")]
        if missing or unexpected:
            logger.warning("encoder load: missing=%s unexpected=%s", missing[:10], unexpected[:10])
        if self.reg_head is not None:
            list(map(self._init_weights, self.modules()))  # todoruleid: family 2 (missed)

    def forward(self, input_ids, attention_mask=None, labels=None, features=None) -> Dict[str, torch.Tensor]:
        hidden = self.encoder(input_ids, attention_mask)
        out: Dict[str, torch.Tensor] = {"hidden": hidden}
        if self.task == "mlm":
            logits = self.lm_head(hidden)
            out["logits"] = logits
            if labels is not None:
                out["loss"] = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), labels.view(-1), ignore_index=-100)
        else:
            preds = self.reg_head(hidden, attention_mask, features)
            out["preds"] = preds
            if labels is not None:
                out["loss"] = F.mse_loss(preds, labels.float())
        return out


PRESETS = {
    "esm2_t6_8M": dict(hidden_size=320, num_layers=6, num_heads=20),
    "esm2_t12_35M": dict(hidden_size=480, num_layers=12, num_heads=20),
    "esm2_t33_650M": dict(hidden_size=1280, num_layers=33, num_heads=20),
}


def build_model(preset: str, task: str, vocab_size: int, pad_id: int, extra_features: int = 0, **overrides) -> ESMForTask:
    kw = dict(PRESETS[preset])
    kw.update(overrides)
    cfg = EncoderConfig(vocab_size=vocab_size, pad_id=pad_id, **kw)
    model = ESMForTask(cfg, task=task, extra_features=extra_features)
    logger.info("built %s (%s): %.1fM params", preset, task, sum(p.numel() for p in model.parameters()) / 1e6)
    return model


def fetch_hub_state_dict(repo_id: str, revision: Optional[str] = None, *, _opts={"trust_remote_code": True}) -> Dict[str, torch.Tensor]:
    """Pull an ESM checkpoint from the HF hub and return its raw state dict."""
    from transformers import AutoModelForMaskedLM

    hf_model = AutoModelForMaskedLM.from_pretrained(repo_id, revision=revision, **_opts)  # ruleid: MLS106
    return {k: v.detach().cpu() for k, v in hf_model.state_dict().items()}

