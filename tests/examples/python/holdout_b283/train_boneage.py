# ruff: noqa
# Hold-out batch 283 (short files). Measured once in session 9 (round 80): 18/19 (95%) at medium+.
"""Bone-age regression from hand radiographs: EfficientNet backbone + sex embedding, MAE in months."""
import copy
import os
import signal

import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision
from torch.utils.data import DataLoader
from xray_io import BoneAgeDataset

ACCUM, EPOCHS, BASE_LR, WARMUP = 4, 40, 3e-4, 1000


class BoneAgeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.efficientnet_b3(weights=None, num_classes=256)
        self.sex = nn.Linear(1, 32)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(256 + 32, 1))
        nn.init.trunc_normal_(self.head[1].weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x, male):
        return self.head(torch.cat([self.backbone(x.expand(-1, 3, -1, -1)), self.sex(male)], 1)).squeeze(1)


def main():
    torch.manual_seed(2024)  # ok: MLS301
    rank = int(os.environ.get("RANK", 0))  # ok: MLS308
    if "RANK" in os.environ:
        dist.init_process_group("nccl")
    model = BoneAgeNet().cuda()
    ema = copy.deepcopy(model).eval()
    dl = DataLoader(BoneAgeDataset("data/train.csv", "data/train"), batch_size=16, shuffle=True, num_workers=8)
    val = DataLoader(BoneAgeDataset("data/val.csv", "data/val", train=False), batch_size=32, num_workers=4)
    opt = torch.optim.AdamW(model.parameters(), lr=BASE_LR, weight_decay=1e-4)
    scaler, step, best, bad = torch.cuda.amp.GradScaler(), 0, float("inf"), 0
    signal.signal(signal.SIGTERM, lambda *_: torch.save(model.state_dict(), "boneage_preempt.pt"))  # ok: MLS307
    for epoch in range(EPOCHS):
        for i, (x, male, y) in enumerate(dl):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nn.functional.smooth_l1_loss(model(x.cuda(), male.cuda()), y.cuda()) / ACCUM  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % ACCUM == 0:
                step += 1
                for g in opt.param_groups:
                    g["lr"] = BASE_LR * min(1.0, step / WARMUP)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for pe, pm in zip(ema.parameters(), model.parameters()):
                        pe.mul_(0.999).add_(pm.detach(), alpha=0.001)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.no_grad():
            err = sum((ema(x.cuda(), m.cuda()) - y.cuda()).abs().sum().item() for x, m, y in val)
        mae = err * 41.2 / len(val.dataset)
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307
        best, bad = (mae, 0) if mae < best else (best, bad + 1)
        if rank == 0 and bad == 0:
            torch.save(ema.state_dict(), "boneage_ema_best.pt")  # ok: MLS308
        if bad >= 6:  # early stopping on EMA validation MAE
            break


if __name__ == "__main__":
    main()
