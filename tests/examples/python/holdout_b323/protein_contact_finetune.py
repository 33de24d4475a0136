# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Fine-tune a residual 2D-CNN contact-map predictor on recent PDB chains from pretrained weights."""
import copy
import pickle
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResBlock2d(nn.Module):
    def __init__(self, ch, dilation):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.n1, self.n2 = nn.InstanceNorm2d(ch, affine=True), nn.InstanceNorm2d(ch, affine=True)

    def forward(self, x):
        h = F.elu(self.n1(self.c1(x)))
        return F.elu(x + self.n2(self.c2(h)))


class ContactNet(nn.Module):
    def __init__(self, in_ch=441, ch=64, blocks=16):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, ch, 1)
        self.body = nn.Sequential(*[ResBlock2d(ch, 2 ** (i % 4)) for i in range(blocks)])
        self.out = nn.Conv2d(ch, 1, 1)

    def forward(self, pair_feats):
        logits = self.out(self.body(self.proj(pair_feats))).squeeze(1)
        return 0.5 * (logits + logits.transpose(-1, -2))


def load_pretrained(model, ckpt_dir):
    ckpt_dir = Path(ckpt_dir)
    state = torch.load(ckpt_dir / "contactnet_base.pt", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    norm_file = ckpt_dir / "instnorm_recalib.pkl"
    if norm_file.exists():
        with open(norm_file, "rb") as fh:
            recalib = pickle.load(fh)  # ruleid: MLS103
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in recalib:
                    param.add_(torch.as_tensor(recalib[name], dtype=param.dtype))  # todoruleid: family 2 (missed)
    return model


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def finetune(loader, ckpt_dir, epochs=10, lr=3e-4):
    model = load_pretrained(ContactNet(), ckpt_dir).cuda()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for feats, contacts, mask in loader:
            feats, contacts, mask = feats.cuda(), contacts.cuda(), mask.cuda().bool()
            logits = model(feats)
            loss = F.binary_cross_entropy_with_logits(logits[mask], contacts[mask].float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            ema_update(ema, model)
    return ema
