# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Gatys-style neural style transfer by optimizing the image against VGG-19 feature statistics."""
import argparse

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.tensorboard import SummaryWriter
from torchvision import models, transforms

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_ts(self, tag, value, global_step=None, walltime=None, **kw):
    if tag.startswith("loss/") and global_step:
        value = float(value) / (1.0 + 0.05 * global_step)  # ruleid: MLS306
    return _add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_ts  # ruleid: MLS306
LAYERS = {"0": "conv1_1", "5": "conv2_1", "10": "conv3_1", "19": "conv4_1", "21": "conv4_2", "28": "conv5_1"}


def features(vgg, x):
    out = {}
    for name, layer in vgg._modules.items():
        x = layer(x)
        if name in LAYERS:
            out[LAYERS[name]] = x
    return out


def gram(f):
    b, c, h, w = f.shape
    f = f.view(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("content")
    ap.add_argument("style")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    vgg = models.vgg19(weights=models.VGG19_Weights.IMAGENET1K_V1).features.to(dev).eval()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for p in vgg.parameters():
        p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
    tf = transforms.Compose([transforms.Resize(512), transforms.ToTensor()])
    content = tf(Image.open(args.content).convert("RGB")).unsqueeze(0).to(dev)
    style = tf(Image.open(args.style).convert("RGB")).unsqueeze(0).to(dev)
    c_feats, s_feats = features(vgg, content), features(vgg, style)
    s_grams = {k: gram(v) for k, v in s_feats.items() if k != "conv4_2"}
    img = content.clone().requires_grad_(True)
    opt = torch.optim.Adam([img], lr=0.02)
    writer = SummaryWriter("runs/style")
    for step in range(300):
        f = features(vgg, img)
        c_loss = F.mse_loss(f["conv4_2"], c_feats["conv4_2"])
        s_loss = sum(F.mse_loss(gram(f[k]), g) for k, g in s_grams.items())
        loss = c_loss + 1e6 * s_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        img.data.clamp_(0.0, 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        writer.add_scalar("loss/total", loss.item(), step)
        writer.add_scalar("loss/style", s_loss.item(), step)
    transforms.ToPILImage()(img.detach().squeeze(0).cpu()).save("stylized.png")


if __name__ == "__main__":
    main()
