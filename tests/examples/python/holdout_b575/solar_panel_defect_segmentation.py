# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""Training loop for electroluminescence solar cell defect segmentation (U-Net)."""
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def dice_bce_loss(logits, target, smooth=1.0):
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(2, 3))
    union = prob.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    dice = 1 - ((2 * inter + smooth) / (union + smooth)).mean()
    return bce + dice


@torch.no_grad()
def evaluate_iou(model, loader, device):
    model.eval()
    inter = union = 0.0
    for images, masks in loader:
        pred = (model(images.to(device)) > 0).float()
        masks = masks.to(device)
        inter += (pred * masks).sum().item()
        union += ((pred + masks) > 0).float().sum().item()
    model.train()
    return inter / max(union, 1.0)


def fit(model, train_loader, val_loader, optimizer, epochs, device, ckpt_path="best_unet.pt"):
    base_rng = torch.get_rng_state()
    best_iou = 0.0
    for epoch in range(epochs):
        torch.set_rng_state(base_rng)  # ruleid: MLS301
        running = 0.0
        for step, (images, masks) in enumerate(train_loader):
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            loss = dice_bce_loss(model(images), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item()
        iou = evaluate_iou(model, val_loader, device)
        log.info("epoch %d loss %.4f val IoU %.4f", epoch, running / max(step + 1, 1), iou)
        if iou > best_iou:
            best_iou = iou
            torch.save(model.state_dict(), ckpt_path)
    return best_iou
