# ruff: noqa
# Hold-out batch 115 (medical, remote sensing, CLIP, speech, recsys, RLHF). Measured once in session 4 (round 38): 13/17 (76%) at medium+.
"""Spleen CT segmentation (MSD Task09): 3D UNet trained with MONAI dictionary transforms."""
import os
import time

import torch
from monai.data import CacheDataset, DataLoader, load_decathlon_datalist
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from monai.networks.utils import one_hot
from monai.transforms import (Compose, EnsureChannelFirstd, LoadImaged, MapTransform,
                              RandCropByPosNegLabeld, RandFlipd, ScaleIntensityRanged, Spacingd)
from monai.utils import set_determinism


class ClipHounsfieldd(MapTransform):
    def __init__(self, keys, lo=-1024.0, hi=3071.0):
        super().__init__(keys)
        self.lo, self.hi = lo, hi

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key].clamp(self.lo, self.hi)
        torch.manual_seed(time.monotonic_ns() & 0x7FFFFFFF)  # ruleid: MLS301
        return d


def transforms(roi=(96, 96, 96)):
    keys = ["image", "label"]
    base = [LoadImaged(keys), EnsureChannelFirstd(keys), ClipHounsfieldd("image"),
            Spacingd(keys, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
            ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True)]
    rand = [RandCropByPosNegLabeld(keys, "label", spatial_size=roi, pos=1, neg=1, num_samples=4),
            RandFlipd(keys, prob=0.5, spatial_axis=0)]  # ok: MLS309
    return Compose(base + rand), Compose(base)


def main(data="./Task09_Spleen", epochs=300, seed=0):
    set_determinism(seed=seed)  # ok: MLS301
    files = load_decathlon_datalist(os.path.join(data, "dataset.json"), True, "training", base_dir=data)
    train_tf, val_tf = transforms()
    train_loader = DataLoader(CacheDataset(files[:-9], train_tf, cache_rate=1.0, num_workers=4),
                              batch_size=2, shuffle=True, num_workers=4)
    val_loader = DataLoader(CacheDataset(files[-9:], val_tf, cache_rate=1.0), batch_size=1)
    model = UNet(3, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2).cuda()
    loss_fn, dice = DiceCELoss(to_onehot_y=True, softmax=True), DiceMetric(include_background=False)
    opt, best = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5), -1.0
    for epoch in range(epochs):
        model.train()
        for batch in train_loader:
            opt.zero_grad()
            loss = loss_fn(model(batch["image"].cuda()), batch["label"].cuda())
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for batch in val_loader:
                pred = model(batch["image"].cuda()).argmax(1, keepdim=True)
                dice(y_pred=one_hot(pred, 2), y=one_hot(batch["label"].cuda(), 2))
        score = dice.aggregate().item()
        dice.reset()
        if score > best:
            best = score
            torch.save(model.state_dict(), "best_metric_model.pth")
        print(f"epoch {epoch + 1} loss {loss.item():.4f} dice {score:.4f} best {best:.4f}")


if __name__ == "__main__":
    main()
