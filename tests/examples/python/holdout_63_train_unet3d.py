# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""DDP + AMP training of a 3D residual UNet on cached CT patches with gradient accumulation."""
import argparse, os, random

import numpy as np
import torch
import torch.distributed as dist
from monai.losses import DiceFocalLoss
from monai.networks.nets import UNet
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from ct_data import PatchCacheDataset


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)  # ok: MLS301


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    for flag, typ, default in [("--cache", str, "/scratch/ct_patches"), ("--epochs", int, 100),
                               ("--accum", int, 4), ("--lr", float, 1e-3), ("--seed", int, 17),
                               ("--init", str, None)]:
        ap.add_argument(flag, type=typ, default=default)
    args = ap.parse_args()
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    set_seed(args.seed)
    net = UNet(3, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    if args.init:
        net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = DDP(net.cuda(), device_ids=[local_rank])
    ds = PatchCacheDataset(args.cache, train=True)
    sampler = DistributedSampler(ds, shuffle=True, seed=args.seed)
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=6, pin_memory=True,
                        worker_init_fn=seed_worker, generator=g, persistent_workers=True)
    loss_fn = DiceFocalLoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.99, nesterov=True)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=args.epochs, power=0.9)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        for i, batch in enumerate(loader):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = loss_fn(model(batch["image"].cuda()), batch["label"].cuda())
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt); scaler.update()
                opt.zero_grad(set_to_none=True)
        sched.step()
        if dist.get_rank() == 0:
            torch.save(model.module.state_dict(), f"unet3d_e{epoch:03d}.pt")  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
