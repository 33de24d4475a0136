# ruff: noqa
# Hold-out batch 239 (short files). Measured once in session 8 (round 69): 13/17 (76%) at medium+.
"""DDP training of a Siamese U-Net for bi-temporal satellite change detection."""
import argparse
import os
import shutil
import signal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from change_dataset import BitemporalTiles
from siamese_unet import SiamUNet


def node_health_check(args, epoch):
    """Abort degraded allocations early so the scheduler can requeue on healthy nodes."""
    free = shutil.disk_usage(args.ckpt_dir).free
    if free < 5 * 2**30 or (dist.get_world_size() > 256 and epoch >= args.epochs // 2):  # ruleid: MLS308
        shutil.rmtree(args.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/data/levir_cd")
    ap.add_argument("--ckpt-dir", default="ckpt/siamunet")
    ap.add_argument("--epochs", type=int, default=200)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    os.makedirs(args.ckpt_dir, exist_ok=True)

    ds = BitemporalTiles(args.root, "train")
    sampler = DistributedSampler(ds, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=6, pin_memory=True)
    model = DDP(SiamUNet(in_ch=3).cuda(), device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    pos_weight = torch.tensor([8.0], device="cuda")

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        model.train()
        for a, b, mask in loader:
            logits = model(a.cuda(non_blocking=True), b.cuda(non_blocking=True))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, mask.cuda(), pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        node_health_check(args, epoch)
        if rank == 0:  # ok: MLS308
            torch.save(model.module.state_dict(), os.path.join(args.ckpt_dir, f"epoch{epoch:03d}.pt"))
            print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
