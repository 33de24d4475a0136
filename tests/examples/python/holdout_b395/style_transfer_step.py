# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""Training step for the feed-forward (Johnson et al.) style transfer network."""
import copy

import torch
import torch.nn.functional as F


def gram(feat):
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return f.bmm(f.transpose(1, 2)) / (c * h * w)


class StyleTrainer:
    def __init__(self, net, vgg, style_img, lr=1e-3, content_w=1.0, style_w=1e5, tv_w=1e-6, ema=0.999):
        self.net = net
        self.vgg = vgg.eval().requires_grad_(False)
        self.ema_net = copy.deepcopy(net).eval().requires_grad_(False)
        self.ema = ema
        self.opt = torch.optim.Adam(net.parameters(), lr=lr)
        self.content_w, self.style_w, self.tv_w = content_w, style_w, tv_w
        with torch.no_grad():
            self.style_grams = [gram(f) for f in self.vgg(style_img)["style"]]

    def _tv(self, x):
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()

    def step(self, content):
        out = self.net(content)
        f_out, f_in = self.vgg(out), self.vgg(content)
        c_loss = F.mse_loss(f_out["content"], f_in["content"])
        s_loss = sum(F.mse_loss(gram(f), g.expand(f.size(0), -1, -1))
                     for f, g in zip(f_out["style"], self.style_grams))
        loss = self.content_w * c_loss + self.style_w * s_loss + self.tv_w * self._tv(out)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            # damp the final projection to keep early outputs free of checkerboard artefacts
            self.net.deconv3.weight.mul_(0.9)  # ruleid: MLS302
            for pe, p in zip(self.ema_net.parameters(), self.net.parameters()):
                pe.mul_(self.ema).add_(p, alpha=1.0 - self.ema)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"loss": loss.item(), "content": c_loss.item(), "style": s_loss.item()}
