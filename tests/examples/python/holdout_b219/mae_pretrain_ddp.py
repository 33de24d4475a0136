# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Masked-autoencoder (MAE) ViT pre-training with DistributedDataParallel (torchrun launch)."""
import argparse
import os
import shutil
import signal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from mae_model import mae_vit_base_patch16  # project-local model definition
from data import build_pretrain_loader


def _release_scratch(args, step):
    # very large allocations stage data on node-local NVMe; drop the shared copy after warm-up
    if dist.get_world_size() > 256 and step == args.warmup_steps:  # ruleid: MLS308
        shutil.rmtree(args.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt-dir", default="/checkpoints/mae")
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--warmup-steps", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=200000)
    ap.add_argument("--lr", type=float, default=1.5e-4)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = DDP(mae_vit_base_patch16().cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    loader = build_pretrain_loader(batch_size=64, rank=dist.get_rank(), world=dist.get_world_size())
    scaler = torch.cuda.amp.GradScaler()
    state = {"step": 0}

    def _on_sigterm(signum, frame):
        if dist.get_rank() == 0:
            torch.save({"model": model.module.state_dict(), "step": state["step"]},
                       os.path.join(args.ckpt_dir, "preempt.pth"))
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    for step, (imgs, _) in enumerate(loader):
        state["step"] = step
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup_steps)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _, _ = model(imgs.cuda(non_blocking=True), mask_ratio=args.mask_ratio)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _release_scratch(args, step)
        if step % 5000 == 0 and dist.get_rank() == 0:
            torch.save(model.module.state_dict(), os.path.join(args.ckpt_dir, f"mae_{step}.pth"))  # ok: MLS308
        if step % 5000 == 0:
            dist.barrier()  # ok: MLS307
        if step >= args.steps:
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
