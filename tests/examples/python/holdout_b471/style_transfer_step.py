# ruff: noqa
# Hold-out batch 471 (16 short files, mixed domains). Measured once in session 20 (round 127): 15/17 (88%) at medium+.
"""Training step for multi-style feed-forward style transfer (conditional instance norm)."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


def gram(feat):
    b, c, h, w = feat.shape
    f = feat.view(b, c, h * w)
    return f.bmm(f.transpose(1, 2)) / (c * h * w)


class StyleTrainer:
    def __init__(self, net, vgg, style_grams, lr=1e-3, content_w=1.0, style_w=5e5, tv_w=1e-6, ema=0.999):
        self.net, self.vgg = net, vgg.eval().requires_grad_(False)
        self.style_grams = style_grams
        self.opt = torch.optim.Adam(net.parameters(), lr=lr)
        self.content_w, self.style_w, self.tv_w = content_w, style_w, tv_w
        self.ema_decay = ema
        self.ema_net = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def _update_ema(self):
        for e, p in zip(self.ema_net.parameters(), self.net.parameters()):
            e.mul_(self.ema_decay).add_(p.detach(), alpha=1 - self.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def step(self, content, style_ids):
        out = self.net(content, style_ids)
        feats_out, feats_in = self.vgg(out), self.vgg(content)
        c_loss = F.mse_loss(feats_out["relu3_3"], feats_in["relu3_3"])
        s_loss = sum(F.mse_loss(gram(feats_out[k]), self.style_grams[k][style_ids])
                     for k in self.style_grams)
        tv = (out[..., 1:, :] - out[..., :-1, :]).abs().mean() + (out[..., 1:] - out[..., :-1]).abs().mean()
        loss = self.content_w * c_loss + self.style_w * s_loss + self.tv_w * tv
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            for m in self.net.modules():
                if isinstance(m, nn.InstanceNorm2d) and m.affine:
                    m.weight.fill_(1.0)  # ruleid: MLS302
        self._update_ema()
        return {"content": c_loss.item(), "style": s_loss.item(), "tv": tv.item()}
