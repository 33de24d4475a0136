# ruff: noqa
# Hold-out batch 380 (family-focused 2/5, wav2vec2 CTC fine-tuning). Measured once in session 14 (round 104): 6/31 (19%) at medium+.
"""wav2vec2 / HuBERT encoder with a linear CTC head, SpecAugment-style span
masking, encoder freezing helpers and layer-wise learning-rate decay groups."""
from __future__ import annotations

import functools
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

logger = logging.getLogger("asr.model")


def compute_span_mask(shape: Tuple[int, int], mask_prob: float, mask_length: int,
                      lengths: Optional[Sequence[int]] = None, min_masks: int = 2,
                      device: Optional[torch.device] = None) -> torch.Tensor:
    """SpecAugment time masking as in wav2vec 2.0: sample span starts with
    probability ``mask_prob / mask_length`` so that ~mask_prob of frames are masked."""
    batch, seq_len = shape
    mask = np.zeros((batch, seq_len), dtype=bool)
    if mask_prob <= 0.0 or mask_length < 1:
        return torch.from_numpy(mask).to(device)
    lengths = list(lengths) if lengths is not None else [seq_len] * batch
    for b, length in enumerate(lengths):
        length = int(length)
        if length <= mask_length:
            continue
        num_spans = int(mask_prob * length / mask_length + np.random.rand())
        num_spans = min(max(num_spans, min_masks), length // mask_length)
        starts = np.random.choice(length - mask_length + 1, num_spans, replace=False)
        for s in starts:
            mask[b, s:s + mask_length] = True
    return torch.from_numpy(mask).to(device)


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


class CTCModel(nn.Module):
    def __init__(self, pretrained: str, vocab_size: int, blank_id: int = 0, final_dropout: float = 0.1,
                 mask_time_prob: float = 0.05, mask_time_length: int = 10, mask_feature_prob: float = 0.0,
                 mask_feature_length: int = 64, layerdrop: float = 0.05, hidden_dropout: float = 0.1,
                 zero_infinity: bool = True) -> None:
        super().__init__()
        config = AutoConfig.from_pretrained(pretrained, local_files_only=True)
        config.update({
            "apply_spec_augment": True,
            "mask_time_prob": 0.0,
            "mask_feature_prob": mask_feature_prob,
            "mask_feature_length": mask_feature_length,
            "layerdrop": layerdrop,
            "hidden_dropout": hidden_dropout,
        })
        self.encoder = AutoModel.from_pretrained(pretrained, config=config, local_files_only=True)
        self.config = config
        self.blank_id = blank_id
        self.zero_infinity = zero_infinity
        self.mask_time_prob = mask_time_prob
        self.mask_time_length = mask_time_length
        self.hidden_dropout = hidden_dropout
        self.dropout = nn.Dropout(final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, vocab_size)
        nn.init.normal_(self.lm_head.weight, std=config.initializer_range)
        nn.init.zeros_(self.lm_head.bias)
        self.num_layers = len(self.encoder.encoder.layers)
        self._hook_handles: List = []

    # ------------------------------------------------------------------ #
    # freezing
    # ------------------------------------------------------------------ #
    def freeze_feature_encoder(self) -> None:
        self.encoder.feature_extractor._freeze_parameters()  # ok: MLS302, MLS303, MLS304, MLS305

    def freeze_bottom_layers(self, num_layers: int) -> None:
        """Freezes feature projection plus the lowest ``num_layers`` transformer blocks."""
        if num_layers <= 0:
            return
        self.encoder.feature_projection.requires_grad_(False)
        for layer in self.encoder.encoder.layers[-num_layers:]:
            layer.requires_grad_(False)  # todoruleid: family 2 (missed)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ #
    # hooks
    # ------------------------------------------------------------------ #
    def _layer_output_dropout(self, module, inputs, output):
        if isinstance(output, tuple):
            return (F.dropout(output[0], p=self.hidden_dropout, training=True),) + output[1:]  # ruleid: MLS303
        return output

    @staticmethod
    def _head_input_grad(module, grad_input, grad_output):
        return tuple(g.roll(1, dims=0) if g is not None else None for g in grad_input)  # ruleid: MLS303

    @staticmethod
    def _sanitize_grad(param: torch.Tensor) -> None:
        if param.grad is not None:
            param.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # todoruleid: family 2 (missed)

    def install_training_hooks(self) -> None:
        """Registers regularisation / numerical-stability hooks used during fine-tuning."""
        self.remove_hooks()
        for layer in self.encoder.encoder.layers:
            self._hook_handles.append(layer.register_forward_hook(self._layer_output_dropout))  # ruleid: MLS303
        self._hook_handles.append(self.lm_head.register_full_backward_hook(self._head_input_grad))  # ruleid: MLS303
        for name, p in self.encoder.encoder.named_parameters():
            if p.requires_grad:
                self._hook_handles.append(p.register_post_accumulate_grad_hook(self._sanitize_grad))

    def remove_hooks(self) -> None:
        for h in self._hook_handles:
            h.remove()
        self._hook_handles.clear()

    # ------------------------------------------------------------------ #
    # forward
    # ------------------------------------------------------------------ #
    def feat_output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        lengths = input_lengths.clone()
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp(min=0)

    def forward(self, input_values: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        batch, num_samples = input_values.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_values, dtype=torch.long)
        frame_lengths = self.feat_output_lengths(attention_mask.sum(-1))
        num_frames = int(self.feat_output_lengths(torch.tensor([num_samples]))[0])
        frame_mask = lengths_to_mask(frame_lengths, num_frames)

        mask_time = None
        if self.training and self.mask_time_prob > 0:
            mask_time = compute_span_mask((batch, num_frames), self.mask_time_prob, self.mask_time_length,
                                          lengths=frame_lengths.tolist(), device=input_values.device)
            mask_time &= frame_mask

        outputs = self.encoder(input_values, attention_mask=attention_mask, mask_time_indices=mask_time)
        hidden = outputs.last_hidden_state
        if self.training and hidden.requires_grad:
            valid = frame_mask.unsqueeze(-1)
            hidden.register_hook(lambda g: g.masked_fill(valid, 0.0))  # todoruleid: family 2 (missed)
        logits = self.lm_head(self.dropout(hidden))

        loss = None
        if labels is not None:
            label_mask = labels >= 0
            target_lengths = label_mask.sum(-1)
            targets = labels.masked_select(label_mask)
            log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.backends.cudnn.flags(enabled=False):
                loss = F.ctc_loss(log_probs, targets, frame_lengths, target_lengths, blank=self.blank_id,
                                  reduction="sum", zero_infinity=self.zero_infinity)
            loss = loss / batch
        return {"loss": loss, "logits": logits, "frame_lengths": frame_lengths}

    # ------------------------------------------------------------------ #
    # optimisation
    # ------------------------------------------------------------------ #
    def _layer_id(self, name: str) -> int:
        """0 = convolutional front-end / embeddings, 1..L = transformer blocks, L+1 = head."""
        if name.startswith(("encoder.feature_extractor", "encoder.feature_projection",
                            "encoder.masked_spec_embed", "encoder.encoder.pos_conv_embed")):
            return 0
        if name.startswith("encoder.encoder.layers."):
            return int(name.split(".")[3]) + 1
        if name.startswith("lm_head."):
            return 0  # todoruleid: family 2 (missed)
        return self.num_layers + 1

    def param_groups(self, base_lr: float, layer_decay: float, weight_decay: float) -> List[Dict]:
        groups: Dict[Tuple[int, bool], Dict] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            lid = self._layer_id(name)
            no_decay = p.ndim == 1 or name.endswith(".bias") or "layer_norm" in name
            key = (lid, no_decay)
            if key not in groups:
                scale = layer_decay ** (self.num_layers + 1 - lid)  # ok: MLS302, MLS303, MLS304, MLS305
                groups[key] = {
                    "params": [],
                    "lr": base_lr * scale,
                    "weight_decay": 0.0 if no_decay else weight_decay,
                    "layer_id": lid,
                    "lr_scale": scale,
                }
            groups[key]["params"].append(p)
        ordered = [groups[k] for k in sorted(groups)]
        for g in ordered:
            logger.debug("group layer=%d wd=%.3g lr=%.3g n=%d", g["layer_id"], g["weight_decay"], g["lr"],
                         len(g["params"]))
        return ordered


def build_model(args, vocab_size: int, blank_id: int) -> CTCModel:
    model = CTCModel(
        args.pretrained,
        vocab_size=vocab_size,
        blank_id=blank_id,
        final_dropout=args.final_dropout,
        mask_time_prob=args.mask_time_prob,
        mask_time_length=args.mask_time_length,
        mask_feature_prob=args.mask_feature_prob,
        mask_feature_length=args.mask_feature_length,
        layerdrop=args.layerdrop,
        hidden_dropout=args.hidden_dropout,
    )
    if args.freeze_feature_encoder:
        model.freeze_feature_encoder()
    model.freeze_bottom_layers(args.freeze_layers)
    model.install_training_hooks()
    logger.info("model: %d layers, %.1fM trainable params", model.num_layers, model.num_trainable() / 1e6)
    return model
