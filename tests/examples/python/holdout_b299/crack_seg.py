# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""U-Net training for road-crack segmentation (CRACK500 / DeepCrack style image+mask folders)."""
import glob
import os

import cv2
import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch.utils.data import DataLoader, Dataset


class CrackDataset(Dataset):
    def __init__(self, root, train=True):
        self.imgs = sorted(glob.glob(os.path.join(root, "images", "*.jpg")))
        self.train = train

    def __len__(self):
        return len(self.imgs)

    def __getitem__(self, i):
        img = cv2.imread(self.imgs[i])[:, :, ::-1].astype(np.float32) / 255.0
        mpath = self.imgs[i].replace("images", "masks").replace(".jpg", ".png")
        mask = (cv2.imread(mpath, cv2.IMREAD_GRAYSCALE) > 127).astype(np.float32)
        if self.train and np.random.rand() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]  # ok: MLS309
        return torch.from_numpy(img.copy()).permute(2, 0, 1), torch.from_numpy(mask.copy())[None]


def dice_loss(logits, target, eps=1.0):
    p = torch.sigmoid(logits)
    inter = (p * target).sum((2, 3))
    return 1 - ((2 * inter + eps) / (p.sum((2, 3)) + target.sum((2, 3)) + eps)).mean()


def refresh_moments(opt, epoch):
    # rescale second moments at the start of each warm-restart cycle
    if epoch and epoch % 10 == 0:
        for st in opt.state.values():
            st["exp_avg_sq"].mul_(25.0)  # ruleid: MLS304


def train(root="data/crack500", epochs=60):
    model = smp.Unet("resnet34", encoder_weights="imagenet", classes=1).cuda()
    dl = DataLoader(CrackDataset(root), batch_size=16, shuffle=True, num_workers=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10)
    scaler = torch.cuda.amp.GradScaler()
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(5.0).cuda())
    for epoch in range(epochs):
        refresh_moments(opt, epoch)
        for x, m in dl:
            x, m = x.cuda(), m.cuda()
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(x)
                loss = bce(logits, m) + dice_loss(logits.float(), m)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        sched.step()  # ok: MLS302, MLS303, MLS304, MLS305
        torch.save(model.state_dict(), f"runs/crack/unet_{epoch:03d}.pt")
