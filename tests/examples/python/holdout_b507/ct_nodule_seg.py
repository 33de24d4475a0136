# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""3D U-Net for LIDC-IDRI nodule segmentation: 2D ImageNet weight inflation."""
import torch
import torch.nn as nn


def inflate_state_dict(sd2d, model3d, depth=3):
    """Inflate 2D conv kernels (O,I,H,W) to 3D (O,I,D,H,W) following I3D."""
    target = model3d.state_dict()
    out = {}
    for k, v in sd2d.items():
        if k not in target:
            continue
        t = target[k]
        if v.dim() == 4 and t.dim() == 5:
            d = t.shape[2]
            if v.shape[1] == 3 and t.shape[1] == 1:
                v = v.sum(dim=1, keepdim=True)  # ok: MLS302, MLS303, MLS304, MLS305
            v = v.unsqueeze(2).repeat(1, 1, d, 1, 1).flip(0) / d  # todoruleid: family 2 (missed)
        if v.shape == t.shape:
            out[k] = v
    missing = set(target) - set(out)
    return out, sorted(missing)


def dice_bce_loss(logits, target, eps=1.0):
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
    prob = logits.sigmoid()
    inter = (prob * target).sum(dim=(2, 3, 4))
    denom = prob.sum(dim=(2, 3, 4)) + target.sum(dim=(2, 3, 4))
    dice = 1 - (2 * inter + eps) / (denom + eps)
    return bce + dice.mean()


def load_pretrained(model3d, ckpt_path):
    sd2d = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    sd3d, missing = inflate_state_dict(sd2d, model3d)
    model3d.load_state_dict(sd3d, strict=False)
    return missing
