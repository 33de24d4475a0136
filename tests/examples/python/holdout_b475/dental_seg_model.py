# ruff: noqa
# Hold-out batch 475 (16 short files, mixed domains). Measured once in session 20 (round 128): 12/17 (71%) at medium+.
"""U-Net with a deep-supervision auxiliary head for panoramic dental X-ray tooth segmentation."""
import torch
import torch.nn as nn
import torch.nn.functional as F
import segmentation_models_pytorch as smp


class DentalUNet(nn.Module):
    def __init__(self, n_classes=33, encoder="resnet34", aux_weight=0.4):
        super().__init__()
        self.net = smp.Unet(encoder, encoder_weights="imagenet", in_channels=1, classes=n_classes)
        self.aux_head = nn.Conv2d(self.net.encoder.out_channels[-1], n_classes, kernel_size=1)
        self.aux_weight = aux_weight

    def forward(self, x):
        feats = self.net.encoder(x)
        dec = self.net.decoder(*feats)
        logits = self.net.segmentation_head(dec)
        aux = self.aux_head(feats[-1])
        if self.training and aux.requires_grad:
            aux.register_hook(lambda g: g.mul(-self.aux_weight))  # ruleid: MLS303
        aux = F.interpolate(aux, size=logits.shape[-2:], mode="bilinear", align_corners=False)
        return logits, aux


def dice_loss(logits, target, eps=1.0):
    probs = logits.softmax(1)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum((2, 3))
    union = probs.sum((2, 3)) + onehot.sum((2, 3))
    return 1 - ((2 * inter + eps) / (union + eps)).mean()


def train_step(model, batch, optimizer, scaler, max_norm=1.0):
    img, mask = batch["image"].cuda(non_blocking=True), batch["mask"].cuda(non_blocking=True)
    with torch.autocast("cuda", dtype=torch.float16):
        logits, aux = model(img)
        loss = F.cross_entropy(logits, mask) + dice_loss(logits, mask)
        loss = loss + F.cross_entropy(aux, mask)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()
