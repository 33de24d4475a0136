# ruff: noqa
# Hold-out batch 589 (textbook, ESM-2 variant-effect fine-tuning with the HF Trainer). Measured once in session 27 (round 157): 20/31 (65%) at medium+.
"""ESM-2 backbone with a regression head (DMS fitness) and a classification head
(damaging vs. benign) on top of a sequence + mutated-site representation."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
from transformers import AutoConfig, EsmModel, EsmPreTrainedModel
from transformers.utils import ModelOutput

logger = logging.getLogger(__name__)

HEAD_PREFIXES = ("regression_head.", "classification_head.")


@dataclass
class VariantEffectOutput(ModelOutput):
    loss: Optional[torch.FloatTensor] = None
    predictions: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None


class VariantHead(nn.Module):
    def __init__(self, in_features: int, hidden_size: int, num_outputs: int = 1, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.dense = nn.Linear(in_features, hidden_size)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.act(self.dense(self.norm(x))))
        return self.out_proj(x)


class EsmForVariantEffect(EsmPreTrainedModel):
    """Shared ESM-2 encoder and two heads on [mean over residues ; mean over mutated
    residues] (the latter falls back to the sequence mean if the crop has no mutation)."""

    def __init__(self, config):
        super().__init__(config)
        self.esm = EsmModel(config, add_pooling_layer=False)
        in_features = 2 * config.hidden_size
        head_hidden = getattr(config, "head_hidden_size", 512)
        head_dropout = getattr(config, "head_dropout", 0.1)
        self.regression_head = VariantHead(in_features, head_hidden, 1, head_dropout)
        self.classification_head = VariantHead(in_features, head_hidden, 1, head_dropout)
        self.post_init()

    @staticmethod
    def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.LongTensor, attention_mask: Optional[torch.LongTensor] = None,
                mutation_mask: Optional[torch.BoolTensor] = None, output_hidden_states: Optional[bool] = None,
                **unused) -> VariantEffectOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        outputs = self.esm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden = outputs.last_hidden_state
        seq_rep = self._masked_mean(hidden, attention_mask)
        if mutation_mask is None:
            site_rep = seq_rep
        else:
            has_site = mutation_mask.any(dim=1, keepdim=True)
            site_rep = torch.where(has_site, self._masked_mean(hidden, mutation_mask), seq_rep)
        rep = torch.cat([seq_rep, site_rep], dim=-1)
        return VariantEffectOutput(
            predictions=self.regression_head(rep).squeeze(-1),
            logits=self.classification_head(rep).squeeze(-1),
            hidden_states=outputs.hidden_states,
        )


# --------------------------------------------------------------------------- #
# Construction helpers
# --------------------------------------------------------------------------- #
def reinit_top_layers(model: EsmForVariantEffect, num_layers: int) -> None:
    """Re-initialise the top-k encoder blocks (Zhang et al., 'Revisiting few-sample
    BERT fine-tuning'); helps when the downstream task is far from MLM."""
    if num_layers < 0:
        raise ValueError("num_layers must be >= 0")
    for layer in model.esm.encoder.layer[-num_layers:]:
        layer.apply(model._init_weights)  # ruleid: MLS302
    logger.info("Re-initialised the top %d encoder layers", num_layers)


def freeze_backbone_layers(model: EsmForVariantEffect, num_layers: int) -> None:
    """Freeze embeddings and the bottom ``num_layers`` encoder blocks."""
    if num_layers <= 0:
        return
    for p in model.esm.embeddings.parameters():
        p.requires_grad = False
    for layer in model.esm.encoder.layer[:num_layers]:
        for p in layer.parameters():
            p.requires_grad = False
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("Froze %d layers; %.1fM trainable parameters", num_layers, n_trainable / 1e6)


def load_head_state(model: EsmForVariantEffect, path: str) -> None:
    """Warm-start the heads from a checkpoint trained on another assay collection."""
    state = torch.load(path, map_location="cpu")  # todoruleid: family 10 (missed)  # ruleid: MLS102
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    heads = {k: v for k, v in state.items() if k.startswith(HEAD_PREFIXES)}
    missing, unexpected = model.load_state_dict(heads, strict=False)
    missing = [k for k in missing if k.startswith(HEAD_PREFIXES)]
    if missing:
        logger.warning("Head weights missing from %s: %s", path, missing)
    logger.info("Loaded %d head tensors from %s", len(heads), path)


def build_model(model_args, tokenizer) -> EsmForVariantEffect:
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=True,  # ruleid: MLS106
    )
    config.head_hidden_size = model_args.head_hidden_size
    config.head_dropout = model_args.head_dropout
    # Context masking in the collator already perturbs inputs; ESM's token-dropout
    # rescaling assumes the 15% MLM rate and biases the embeddings otherwise.
    config.token_dropout = False

    model = EsmForVariantEffect.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        revision=model_args.model_revision,
    )
    if len(tokenizer) != model.config.vocab_size:
        model.resize_token_embeddings(len(tokenizer))

    reinit_top_layers(model, model_args.reinit_top_layers)
    freeze_backbone_layers(model, model_args.freeze_layers)
    if model_args.init_head_from:
        load_head_state(model, model_args.init_head_from)
    return model
