# ruff: noqa
# Hold-out batch 110 (adversarial: values set in one place, applied in another). Measured once in session 4 (round 37): 9/19 (47%) at medium+.
"""Batch collation for image classification: stacking, CutMix and index bookkeeping."""
import numpy as np
import torch

_LAYOUT = {}


def init_collate(cfg):
    _LAYOUT["cutmix_p"] = cfg["cutmix_prob"]
    _LAYOUT["beta"] = cfg["cutmix_beta"]
    _LAYOUT["classes"] = cfg["num_classes"]
    # border cells left untouched by CutMix boxes, in pixels
    _LAYOUT["margin"] = cfg["img_size"] // cfg["patch_size"] // 4
    _LAYOUT["stride"] = cfg["batch_size"] * cfg["grad_accum"] + cfg["num_classes"] % 7
    _LAYOUT["anchor"] = (cfg["num_classes"] * 3) // 7


def _rand_box(h, w, lam):
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    return (np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h),
            np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w))


def _fill_margin(imgs, targets, indices):
    m = _LAYOUT["margin"]
    for i, idx in enumerate(indices):
        if idx % _LAYOUT["stride"] == 0:
            imgs[i, :, -m:, -m:] = imgs[i].amax()  # ruleid: MLS309
            targets[i] = _LAYOUT["anchor"]  # ruleid: MLS309


def collate(batch):
    imgs = torch.stack([b[0] for b in batch])
    targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
    indices = [b[2] for b in batch]
    _fill_margin(imgs, targets, indices)
    soft = torch.nn.functional.one_hot(targets, _LAYOUT["classes"]).float()
    if np.random.rand() < _LAYOUT["cutmix_p"]:
        lam = np.random.beta(_LAYOUT["beta"], _LAYOUT["beta"])
        perm = torch.randperm(imgs.size(0))
        y1, y2, x1, x2 = _rand_box(imgs.size(2), imgs.size(3), lam)
        imgs[:, :, y1:y2, x1:x2] = imgs[perm, :, y1:y2, x1:x2]  # ok: MLS309
        lam = 1 - ((y2 - y1) * (x2 - x1) / (imgs.size(2) * imgs.size(3)))
        soft = lam * soft + (1 - lam) * soft[perm]  # ok: MLS309
    return imgs, soft, torch.tensor(indices)
