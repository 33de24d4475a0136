# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""U-Net crack segmenter with an optional domain head for cross-surface adaptation."""
import torch
import torch.nn as nn
import torch.nn.functional as F
import segmentation_models_pytorch as smp


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


class CrackSegmenter(nn.Module):
    def __init__(self, encoder="resnet34", n_domains=3, grl_lambda=0.1):
        super().__init__()
        self.net = smp.Unet(encoder, encoder_weights="imagenet", classes=1)
        self.grl_lambda = grl_lambda
        ch = self.net.encoder.out_channels[-1]
        self.domain_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, n_domains))
        self.net.encoder.register_forward_hook(self._reverse_hook)  # todoruleid: family 2 (missed)

    def _reverse_hook(self, module, inputs, feats):
        return [GradReverse.apply(f, self.grl_lambda) for f in feats]

    def forward(self, x):
        feats = self.net.encoder(x)
        dec = self.net.decoder(*feats)
        mask_logits = self.net.segmentation_head(dec)
        dom_logits = self.domain_head(feats[-1])
        return mask_logits, dom_logits


def dice_bce(logits, target, eps=1.0):
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((2, 3))
    dice = 1 - (2 * inter + eps) / (p.sum((2, 3)) + target.sum((2, 3)) + eps)
    return bce + dice.mean()


def train_step(model, batch, opt, cfg):
    img, mask, dom = batch
    mask_logits, dom_logits = model(img)
    loss = dice_bce(mask_logits, mask) + cfg.dom_weight * F.cross_entropy(dom_logits, dom)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=cfg.clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    opt.step()
    return loss.item()
