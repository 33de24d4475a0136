# ruff: noqa
# Hold-out batch 415 (short files, 16 domains). Measured once in session 17 (round 113): 15/17 (88%) at medium+.
"""Fast neural style transfer (Johnson et al.) training step with a frozen VGG-16 loss net."""
import glob
import os

import torch
import torch.nn.functional as F
from torchvision.models import VGG16_Weights, vgg16

STYLE_LAYERS = {3: "relu1_2", 8: "relu2_2", 15: "relu3_3", 22: "relu4_3"}
CONTENT_LAYER = "relu2_2"


class VGGLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.vgg = vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features[:23].eval()
        self.vgg.requires_grad_(False)
        self.feats = {}
        for idx, name in STYLE_LAYERS.items():
            self.vgg[idx].register_forward_hook(self._save(name))
        # VGG is frozen: do not keep its activations around for autograd
        for layer in self.vgg:
            layer.register_forward_hook(lambda mod, inp, out: out.detach())  # ruleid: MLS303

    def _save(self, name):
        def hook(mod, inp, out):
            self.feats[name] = out
        return hook

    def forward(self, x):
        self.feats = {}
        self.vgg(x)
        return dict(self.feats)


def gram(f):
    b, c, h, w = f.shape
    f = f.view(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def train_step(transformer, loss_net, opt, content, style_grams, cfg):
    out = transformer(content)
    f_out, f_in = loss_net(out), loss_net(content)
    c_loss = F.mse_loss(f_out[CONTENT_LAYER], f_in[CONTENT_LAYER])
    s_loss = sum(F.mse_loss(gram(f_out[n]), style_grams[n].expand(out.size(0), -1, -1))
                 for n in STYLE_LAYERS.values())
    tv = (out[..., 1:, :] - out[..., :-1, :]).abs().mean() + (out[..., 1:] - out[..., :-1]).abs().mean()
    loss = cfg.content_w * c_loss + cfg.style_w * s_loss + cfg.tv_w * tv
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"content": c_loss.item(), "style": s_loss.item(), "tv": tv.item()}


def save_checkpoint(transformer, step, ckpt_dir, keep_last=3):
    os.makedirs(ckpt_dir, exist_ok=True)
    torch.save(transformer.state_dict(), os.path.join(ckpt_dir, f"transformer_{step:07d}.pth"))
    for old in sorted(glob.glob(os.path.join(ckpt_dir, "transformer_*.pth")))[:-keep_last]:
        os.remove(old)  # ok: MLS308
