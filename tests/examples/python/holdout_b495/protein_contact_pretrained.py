# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Load a pretrained protein LM trunk for contact prediction and keep an EMA copy."""
import copy
import logging

import torch

log = logging.getLogger("contact")

ALPHABET = "ACDEFGHIKLMNPQRSTVWY"


def remap_pretrained_state(state, n_special=4):
    """Map upstream checkpoint keys onto our ContactPredictor trunk."""
    out = {}
    for key, weight in state.items():
        if key.startswith("lm_head") or key.startswith("contact_head"):
            continue
        new_key = key.replace("encoder.sentence_encoder.", "trunk.")
        if new_key.endswith("embed_tokens.weight"):
            # upstream stores specials first; our vocab appends them after amino acids
            weight = torch.cat([weight[n_special:], weight[:n_special]], dim=0).flip(0)  # todoruleid: family 2 (missed)
        out[new_key] = weight
    return out


def load_trunk(model, ckpt_path):
    blob = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = remap_pretrained_state(blob["model"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    log.info("loaded trunk: %d missing, %d unexpected", len(missing), len(unexpected))
    return model


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
