# ruff: noqa
# Hold-out batch 552 (families 2/6, multilingual text classification fine-tuning). Measured once in session 25 (round 147): 10/30 (33%) at medium+.
"""Multilingual encoder with sentiment / topic heads and a language adversary."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel

logger = logging.getLogger(__name__)

_dropout_impl = F.dropout


def _dropout_out_of_place(input, p=0.5, training=True, inplace=False):
    # The SDPA / fused attention paths hand back views; in-place dropout on those bumps the
    # autograd version counter and breaks the backward of the producing op.
    return _dropout_impl(input, p, inplace=False)


F.dropout = _dropout_out_of_place  # ruleid: MLS305


@dataclass
class ModelConfig:
    model_name: str = "xlm-roberta-base"
    model_revision: str = "e73636d4f797dec63c3081bb6ed5c7b0bb3f2089"
    num_sentiment: int = 3
    num_topics: int = 8
    num_langs: int = 6
    head_dropout: float = 0.1
    reinit_layers: int = 2
    adv_lambda: float = 0.05
    init_checkpoint: Optional[str] = None
    initializer_range: float = 0.02


class MeanPooler(nn.Module):
    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1e-6)


class MultiTaskEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = AutoModel.from_pretrained(cfg.model_name, revision=cfg.model_revision,
                                                  add_pooling_layer=False)
        hidden = self.backbone.config.hidden_size
        if cfg.init_checkpoint:
            self.load_adapted_checkpoint(cfg.init_checkpoint)

        self.pooler = MeanPooler()
        self.dropout = nn.Dropout(cfg.head_dropout)
        self.heads = nn.ModuleDict({
            "sentiment": nn.Linear(hidden, cfg.num_sentiment),
            "topic": nn.Linear(hidden, cfg.num_topics),
        })
        self.heads.apply(self._init_weights)

        self.lang_head: Optional[nn.Module] = None
        self._grl_handle = None
        if cfg.adv_lambda > 0:
            self.lang_head = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.GELU(),
                                           nn.Linear(hidden // 2, cfg.num_langs))
            self.lang_head.apply(self._init_weights)
            # gradient reversal between the encoder and the language discriminator
            self._grl_handle = self.pooler.register_full_backward_hook(self._reverse_grad)  # ruleid: MLS303

        if cfg.reinit_layers > 0:
            # Re-initialising the last few blocks helps small-data fine-tuning (Zhang et al., 2021).
            for layer in self.backbone.encoder.layer[: cfg.reinit_layers]:
                layer.apply(self._init_weights)  # todoruleid: family 2 (missed)

        self._tap_handle = None
        self._tapped: Optional[torch.Tensor] = None
        self._emb_hook = None

    # ------------------------------------------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        std = self.cfg.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _reverse_grad(self, module, grad_input, grad_output):
        lam = self.cfg.adv_lambda
        return tuple(None if g is None else g.neg() * lam for g in grad_input)  # ruleid: MLS303

    def load_adapted_checkpoint(self, path: str) -> None:
        """Load encoder weights from a domain-adaptive MLM run (fairseq or HF layout)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
        fixed: Dict[str, torch.Tensor] = {}
        for key, value in state.items():
            key = key.replace("encoder.sentence_encoder.", "").replace("roberta.", "")
            if key.startswith(("lm_head.", "decoder.", "pooler.")):
                continue
            # fairseq exports store the attention projections as (in_features, out_features)
            if value.ndim == 2 and value.shape[0] == value.shape[1] and ".attention." in key:
                value = value.t().contiguous()  # todoruleid: family 2 (missed)
            fixed[key] = value
        missing, unexpected = self.backbone.load_state_dict(fixed, strict=False)
        logger.info("adapted checkpoint %s: %d missing, %d unexpected keys", path, len(missing), len(unexpected))

    def restrict_embedding_updates(self, seen_token_ids: Iterable[int]) -> None:
        """Only update embedding rows of tokens that occur in the fine-tuning data.

        Rows of unseen tokens would otherwise drift through weight decay and Adam noise,
        which hurts zero-shot transfer to languages absent from training.
        """
        emb = self.backbone.get_input_embeddings().weight
        mask = torch.zeros(emb.shape[0], dtype=torch.bool, device=emb.device)
        ids = torch.as_tensor(sorted(set(seen_token_ids)), dtype=torch.long, device=emb.device)
        mask[ids] = True
        self.register_buffer("_seen_tokens", mask, persistent=False)
        if self._emb_hook is not None:
            self._emb_hook.remove()
        self._emb_hook = emb.register_hook(lambda g: g.masked_fill(self._seen_tokens.unsqueeze(1), 0.0))  # todoruleid: family 2 (missed)

    def enable_feature_tap(self, layer_index: int = -1) -> None:
        """Keep one layer's hidden states around for the language-identity probe."""
        layer = self.backbone.encoder.layer[layer_index]

        def _tap(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            self._tapped = hidden.detach()
            return (self._tapped, *output[1:]) if isinstance(output, tuple) else self._tapped  # todoruleid: family 2 (missed)

        if self._tap_handle is not None:
            self._tap_handle.remove()
        self._tap_handle = layer.register_forward_hook(_tap)

    def pop_tapped(self) -> Optional[torch.Tensor]:
        t, self._tapped = self._tapped, None
        return t

    # ------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return self.pooler(out.last_hidden_state, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        pooled = self.encode(input_ids, attention_mask)
        feats = self.dropout(pooled)
        result = {
            "features": feats,
            "sentiment": self.heads["sentiment"](feats),
            "topic": self.heads["topic"](feats),
        }
        if self.lang_head is not None:
            result["language"] = self.lang_head(pooled)
        return result
