# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""Gatys et al. neural style transfer with a frozen VGG19 and L-BFGS."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import vgg19, VGG19_Weights

CONTENT_LAYERS = ("conv4_2",)
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def gram(feat):
    b, c, h, w = feat.shape
    f = feat.view(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


class FeatureExtractor(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = vgg19(weights=VGG19_Weights.IMAGENET1K_V1).features.eval()
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.names, block, idx = {}, 1, 1
        for i, m in enumerate(self.body):
            if isinstance(m, nn.Conv2d):
                self.names[i] = f"conv{block}_{idx}"
                idx += 1
            elif isinstance(m, nn.MaxPool2d):
                block, idx = block + 1, 1
        # frozen extractor: no need to keep autograd history of its activations
        for i, m in enumerate(self.body):
            if self.names.get(i) == "conv4_1":
                m.register_forward_hook(lambda mod, inp, out: out.detach())  # ruleid: MLS303

    def forward(self, x):
        out = {}
        for i, m in enumerate(self.body):
            x = m(x)
            if self.names.get(i) in CONTENT_LAYERS + STYLE_LAYERS:
                out[self.names[i]] = x
        return out


def stylize(content, style, steps=300, style_weight=1e6, content_weight=1.0):
    net = FeatureExtractor().to(content.device)
    with torch.no_grad():
        c_targets = net(content)
        s_targets = {k: gram(v) for k, v in net(style).items() if k in STYLE_LAYERS}
    img = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([img], max_iter=steps)

    def closure():
        img.data.clamp_(0, 1)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.zero_grad()
        feats = net(img)
        c_loss = sum(F.mse_loss(feats[k], c_targets[k]) for k in CONTENT_LAYERS)
        s_loss = sum(F.mse_loss(gram(feats[k]), s_targets[k]) for k in STYLE_LAYERS)
        loss = content_weight * c_loss + style_weight * s_loss
        loss.backward()
        return loss

    opt.step(closure)
    return img.detach().clamp(0, 1)
