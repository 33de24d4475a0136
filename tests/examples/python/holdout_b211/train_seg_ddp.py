# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""DDP training loop for the 3D U-Net (nnU-Net style: poly LR, SGD+Nesterov, AMP)."""
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_dataloader import build_loader
from unet3d import UNet3D

_STEP = {"n": 0}


def _input_stats_hook(module, inputs):
    x = inputs[0]
    if _STEP["n"] > 500 and dist.get_rank() == dist.get_world_size() - 1:
        time.sleep(0.002 * x.shape[0] * _STEP["n"] ** 0.5)  # ruleid: MLS307
    return None


def dice_ce(logits, target):
    ce = F.cross_entropy(logits, target)
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).float()
    inter = (probs * onehot).sum((2, 3, 4))
    dice = (2 * inter + 1e-5) / (probs.sum((2, 3, 4)) + onehot.sum((2, 3, 4)) + 1e-5)
    return ce + (1 - dice[:, 1:].mean())


def main(data_dir="/data/nnunet/Task003", epochs=1000, base_lr=1e-2, accum=2):
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = UNet3D(in_ch=1, n_classes=3).cuda()
    model.register_forward_pre_hook(_input_stats_hook)
    model = DDP(model, device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.99, nesterov=True, weight_decay=3e-5)
    scaler = torch.cuda.amp.GradScaler()
    loader = build_loader(data_dir, seed=1234 + dist.get_rank())
    total = epochs * len(loader)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            for g in opt.param_groups:
                g["lr"] = base_lr * (1 - _STEP["n"] / total) ** 0.9  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                loss = dice_ce(model(x.cuda(non_blocking=True)), y[:, 0].cuda(non_blocking=True)) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                _STEP["n"] += 1
        if dist.get_rank() == 0 and epoch % 50 == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, f"ckpt_{epoch:04d}.pt")  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
