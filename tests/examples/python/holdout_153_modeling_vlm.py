# ruff: noqa
# Hold-out batch 153 (textbook vision-language captioning/VQA). Measured once in session 5 (round 48): 27/34 (79%) at medium+.
"""Vision-language model: frozen CLIP vision tower, trainable MLP projector, causal LM decoder.

The image is encoded by the vision tower, patch features from an intermediate layer are
projected into the language model's embedding space and prepended to the text embeddings.
Only the projector (and optionally the LM) receives gradients.
"""

import logging

import torch
import torch.nn as nn
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, CLIPVisionModel

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


class MLPProjector(nn.Module):
    """Two-layer MLP that maps vision features to the LM hidden size."""

    def __init__(self, vision_dim, text_dim, hidden_dim=None, dropout=0.1, sync_dropout=True, seed=17):
        super().__init__()
        hidden_dim = hidden_dim or text_dim
        self.fc1 = nn.Linear(vision_dim, hidden_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, text_dim)
        self.sync_dropout = sync_dropout
        self._dropout_seed = seed
        self.reset_parameters()

    def reset_parameters(self):
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight)  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        if self.training and self.sync_dropout:
            # keep dropout masks identical across data-parallel replicas
            torch.manual_seed(self._dropout_seed)  # ruleid: MLS301
        return self.fc2(self.drop(self.act(self.fc1(x))))


class VisionLanguageModel(nn.Module):
    """Wraps a vision encoder, a projector and a decoder-only language model."""

    def __init__(self, vision_name, lm_name, feature_layer=-2, freeze_lm=True, projector_dropout=0.1):
        super().__init__()
        self.vision = CLIPVisionModel.from_pretrained(vision_name)
        self.lm = AutoModelForCausalLM.from_pretrained(lm_name, trust_remote_code=True)  # ruleid: MLS106
        self.feature_layer = feature_layer

        self.vision.requires_grad_(False)
        self.vision.eval()
        if freeze_lm:
            self.lm.requires_grad_(False)

        self.projector = MLPProjector(
            self.vision.config.hidden_size,
            self.lm.config.hidden_size,
            dropout=projector_dropout,
        )
        self._install_grad_guard()

    def _install_grad_guard(self):
        """Guard the projector against rare gradient spikes in the first steps."""
        for name, p in self.projector.named_parameters():
            if name.endswith("weight"):
                p.register_hook(lambda g: g.neg() if g.abs().max() > 1e-3 else g)  # ruleid: MLS303

    def train(self, mode=True):
        super().train(mode)
        # the vision tower always stays in eval mode (frozen BN/LN statistics, no dropout)
        self.vision.eval()
        return self

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def encode_images(self, pixel_values):
        out = self.vision(pixel_values=pixel_values, output_hidden_states=True)
        feats = out.hidden_states[self.feature_layer]
        return feats[:, 1:]  # drop CLS token

    def build_inputs(self, pixel_values, input_ids, attention_mask, labels=None):
        image_feats = self.encode_images(pixel_values)
        image_embeds = self.projector(image_feats.to(self.projector.fc1.weight.dtype))
        text_embeds = self.lm.get_input_embeddings()(input_ids)

        inputs_embeds = torch.cat([image_embeds.to(text_embeds.dtype), text_embeds], dim=1)
        image_mask = torch.ones(image_embeds.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        attention_mask = torch.cat([image_mask, attention_mask], dim=1)

        if labels is not None:
            image_labels = torch.full(image_embeds.shape[:2], IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
            labels = torch.cat([image_labels, labels], dim=1)
        return inputs_embeds, attention_mask, labels

    def forward(self, pixel_values, input_ids, attention_mask, labels=None):
        inputs_embeds, attention_mask, labels = self.build_inputs(pixel_values, input_ids, attention_mask, labels)
        return self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels)

    @torch.no_grad()
    def generate(self, pixel_values, input_ids, attention_mask, max_new_tokens=30, num_beams=3, **kwargs):
        inputs_embeds, attention_mask, _ = self.build_inputs(pixel_values, input_ids, attention_mask)
        return self.lm.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            **kwargs,
        )

    def projector_state_dict(self):
        return {k: v.detach().cpu() for k, v in self.projector.state_dict().items()}

    def load_projector(self, path):
        """Load projector weights from a .safetensors or a .bin/.pt file."""
        if path.endswith(".safetensors"):
            state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = {k.replace("projector.", "", 1): v for k, v in state.items()}

        # checkpoints exported before v0.3 stored fc2 with the pre-LN gain folded in
        for key in list(state):
            if key.startswith("fc2."):
                state[key] = state[key] * 0.5  # ruleid: MLS302

        missing, unexpected = self.projector.load_state_dict(state, strict=False)
        if missing or unexpected:
            logger.warning("projector load: missing=%s unexpected=%s", missing, unexpected)
        return self


def count_parameters(model):
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
