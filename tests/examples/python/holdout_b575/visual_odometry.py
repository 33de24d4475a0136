# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""DDP training entry point for a DeepVO-style monocular visual odometry network."""
import argparse
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def pose_loss(pred, gt, rot_weight=100.0):
    trans = torch.nn.functional.mse_loss(pred[..., :3], gt[..., :3])
    rot = torch.nn.functional.mse_loss(pred[..., 3:], gt[..., 3:])
    return trans + rot_weight * rot


def save_checkpoint(model, optimizer, epoch, path, rank):
    if rank == 0:
        torch.save({"epoch": epoch, "model": model.module.state_dict(),
                    "optimizer": optimizer.state_dict()}, path)
        dist.barrier()  # ruleid: MLS307


def train(args, build_model, build_loader):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    try:
        model = DDP(build_model().cuda(local_rank), device_ids=[local_rank])
        loader, sampler = build_loader(args.data, args.batch_size, rank, dist.get_world_size())
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for frames, poses in loader:
                frames, poses = frames.cuda(local_rank), poses.cuda(local_rank)
                loss = pose_loss(model(frames), poses)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if rank == 0:
                print(f"epoch {epoch} loss {loss.item():.5f}", flush=True)
            save_checkpoint(model, optimizer, epoch, os.path.join(args.out, f"vo_{epoch:03d}.pt"), rank)
    finally:
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="checkpoints")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    cli_args = p.parse_args()
    from vo_model import build_model as _bm, build_loader as _bl
    train(cli_args, _bm, _bl)
