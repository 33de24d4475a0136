# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Teacher construction for self-training and distillation.

Loads pretrained weights from safetensors or a tensor-only checkpoint, keeps
an EMA copy of the student as the pseudo-labelling teacher, and initializes
the freshly added adapter layers.
"""
import copy

import torch
import torch.nn as nn
from safetensors.torch import load_file


def load_pretrained(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    return missing, unexpected


def init_adapters(model):
    for name, m in model.named_modules():
        if "adapter" not in name:
            continue
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.LayerNorm):
            m.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            m.bias.data.zero_()


class EMATeacher:
    def __init__(self, student, decay=0.9995, warmup_steps=2000):
        self.model = copy.deepcopy(student).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.num_updates = 0

    @torch.no_grad()
    def update(self, student):
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (self.warmup_steps + self.num_updates))
        for ema_p, p in zip(self.model.parameters(), student.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.model.buffers(), student.buffers()):
            ema_b.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def pseudo_label(self, feats, feat_lens, decoder):
        hyps = decoder(self.model, feats, feat_lens)
        return [h for h in hyps if h.score / max(len(h.tokens), 1) > -0.5]
