# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Multi-node DDP training entry point for the ViT classification runs (torchrun)."""
import argparse
import os
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data.distributed import DistributedSampler

import timm


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--resume", default="")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.bs <= 0:
        sys.exit("batch size must be positive")  # ok: MLS307

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    torch.manual_seed(args.seed)  # ok: MLS301
    if world > 8:
        args.lr = args.lr * world / 8  # ok: MLS308

    model = DDP(timm.create_model("vit_small_patch16_224", num_classes=1000).cuda(), device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    start = 0
    if args.resume:
        ck = torch.load(args.resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); start = ck["epoch"] + 1

    def save(epoch):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, "last.pt")
    signal.signal(signal.SIGTERM, lambda s, f: (save(start - 1), sys.exit(0)))  # ok: MLS307

    ds = torch.load(os.path.join(args.data, "train_index.pt"), weights_only=True)
    sampler = DistributedSampler(ds, shuffle=True, seed=args.seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.bs, sampler=sampler, num_workers=8)
    for epoch in range(start, args.epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        for x, y in loader:
            loss = F.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad(); loss.backward(); opt.step()
        if rank == 0:
            print(f"epoch {epoch} loss {loss.item():.4f}")  # ok: MLS306
        save(epoch)
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
