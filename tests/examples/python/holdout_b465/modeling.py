# ruff: noqa
# Hold-out batch 465 (textbook, speech emotion recognition with the HF Trainer). Measured once in session 20 (round 126): 23/31 (74%) at medium+.
"""wav2vec2-style encoder with a pooling head for utterance-level emotion classification."""
import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel
from transformers.utils import ModelOutput

logger = logging.getLogger(__name__)


@dataclass
class EmotionClassifierOutput(ModelOutput):
    loss: Optional[torch.FloatTensor] = None
    logits: torch.FloatTensor = None
    speaker_logits: Optional[torch.FloatTensor] = None
    hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None


class GradientReverse(torch.autograd.Function):
    """Identity in the forward pass, scaled negation in the backward pass (DANN)."""

    @staticmethod
    def forward(ctx, x, lambd):
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.lambd * grad_output, None  # ok: MLS302, MLS303, MLS304, MLS305


class MeanPooling(nn.Module):
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is None:
            return x.mean(dim=1)
        m = mask.unsqueeze(-1).to(x.dtype)
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class AttentiveStatisticsPooling(nn.Module):
    """Attention-weighted mean and standard deviation over time."""

    def __init__(self, hidden_size: int, attn_dim: int = 128):
        super().__init__()
        self.attn = nn.Sequential(nn.Linear(hidden_size, attn_dim), nn.Tanh(), nn.Linear(attn_dim, 1))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        scores = self.attn(x).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1).unsqueeze(-1)
        mean = (weights * x).sum(dim=1)
        var = (weights * (x - mean.unsqueeze(1)).pow(2)).sum(dim=1)
        std = var.clamp(min=1e-6).sqrt()
        return torch.cat([mean, std], dim=-1)


def compute_class_weights(counts: Sequence[int], power: float = 1.0) -> torch.Tensor:
    """Inverse-frequency class weights normalised to mean 1."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = np.maximum(counts, 1.0)
    weights = (counts.sum() / counts) ** power
    weights = weights / weights.mean()
    return torch.tensor(weights, dtype=torch.float32)


class Wav2Vec2ForEmotion(nn.Module):
    """Pretrained speech encoder + learned layer weighting + pooling + MLP classifier.

    An optional speaker-adversarial head (gradient reversal) encourages
    speaker-invariant representations for cross-speaker evaluation.
    """

    def __init__(self, model_name_or_path: str, num_labels: int, pooling: str = "attentive",
                 use_layer_weights: bool = True, head_dropout: float = 0.1, num_speakers: int = 0,
                 adv_lambda: float = 0.1, class_weights: Optional[torch.Tensor] = None,
                 label_smoothing: float = 0.0, mask_time_prob: float = 0.05, layerdrop: float = 0.05,
                 cache_dir: Optional[str] = None, revision: Optional[str] = None):
        super().__init__()
        self.config = AutoConfig.from_pretrained(model_name_or_path, cache_dir=cache_dir, revision=revision)
        self.config.update({"mask_time_prob": mask_time_prob, "layerdrop": layerdrop})
        self.encoder = AutoModel.from_pretrained(
            model_name_or_path,
            config=self.config,
            cache_dir=cache_dir,
            revision=revision,
            trust_remote_code=True,  # ruleid: MLS106
        )
        hidden = self.config.hidden_size
        self.num_labels = num_labels
        self.adv_lambda = adv_lambda
        self.label_smoothing = label_smoothing

        if use_layer_weights:
            self.layer_weights = nn.Parameter(torch.zeros(self.config.num_hidden_layers + 1))
        else:
            self.layer_weights = None

        if pooling == "attentive":
            self.pooler = AttentiveStatisticsPooling(hidden)
            pooled_dim = 2 * hidden
        elif pooling == "mean":
            self.pooler = MeanPooling()
            pooled_dim = hidden
        else:
            raise ValueError(f"unknown pooling: {pooling}")

        self.projector = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(pooled_dim, 256), nn.GELU(),
                                       nn.Dropout(head_dropout))
        self.classifier = nn.Linear(256, num_labels)
        self.speaker_head = nn.Linear(pooled_dim, num_speakers) if num_speakers > 0 else None

        if class_weights is not None:
            self.register_buffer("class_weights", class_weights.float(), persistent=True)
        else:
            self.class_weights = None

        self._init_head()

    def _init_head(self) -> None:
        for module in list(self.projector.modules()) + [self.classifier]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ freezing
    def freeze_feature_encoder(self) -> None:
        for param in self.encoder.feature_extractor.parameters():
            param.requires_grad = False  # ok: MLS302, MLS303, MLS304, MLS305
        self.encoder.feature_extractor._requires_grad = False

    def freeze_encoder(self) -> None:
        for name, param in self.encoder.named_parameters():
            if not name.startswith("feature_extractor"):
                param.requires_grad = False

    def unfreeze_encoder(self) -> None:
        for name, param in self.encoder.named_parameters():
            if not name.startswith("feature_extractor"):
                param.requires_grad = True

    # ------------------------------------------------------------------ forward
    def _feature_mask(self, hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]):
        if attention_mask is None:
            return None
        mask = self.encoder._get_feature_vector_attention_mask(hidden.shape[1], attention_mask)
        return mask.bool()

    def forward(self, input_values: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, speaker_ids: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False) -> EmotionClassifierOutput:
        need_hidden = self.layer_weights is not None or output_hidden_states
        outputs = self.encoder(input_values, attention_mask=attention_mask,
                               output_hidden_states=need_hidden, return_dict=True)
        if self.layer_weights is not None:
            stacked = torch.stack(outputs.hidden_states, dim=0)
            norm_w = F.softmax(self.layer_weights, dim=0).view(-1, 1, 1, 1)
            hidden = (norm_w * stacked).sum(dim=0)
        else:
            hidden = outputs.last_hidden_state

        feat_mask = self._feature_mask(hidden, attention_mask)
        pooled = self.pooler(hidden, feat_mask)

        speaker_logits = None
        if self.training and self.adv_lambda > 0 and pooled.requires_grad:
            # balance shared-feature gradients between the emotion and speaker heads
            pooled.register_hook(lambda g: g * (1.0 - 1.0 / self.adv_lambda))  # todoruleid: family 2 (missed)
        if self.speaker_head is not None:
            speaker_logits = self.speaker_head(GradientReverse.apply(pooled, self.adv_lambda))

        logits = self.classifier(self.projector(pooled))

        loss = None
        if labels is not None:
            weight = self.class_weights.to(logits.dtype) if self.class_weights is not None else None
            loss = F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.label_smoothing)
            if speaker_logits is not None and speaker_ids is not None:
                loss = loss + F.cross_entropy(speaker_logits, speaker_ids)

        return EmotionClassifierOutput(loss=loss, logits=logits, speaker_logits=speaker_logits,
                                       hidden_states=outputs.hidden_states if output_hidden_states else None)
