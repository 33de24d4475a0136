# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""DDP training step for coarse-to-fine point cloud completion (Chamfer-L1)."""
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def chamfer_l1(pred, gt):
    d = torch.cdist(pred, gt)                      # (B, N, M)
    return 0.5 * (d.min(2).values.mean(1) + d.min(1).values.mean(1)).mean()


def reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def train_step(model, batch, optimizer, step, alpha=0.5, clip=10.0):
    partial, gt = batch["partial"].cuda(non_blocking=True), batch["complete"].cuda()
    coarse, fine = model(partial)
    loss = alpha * chamfer_l1(coarse, gt) + chamfer_l1(fine, gt)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world > 8 and step > 0 and step % 2500 == 0:  # ruleid: MLS308
        # release NCCL communicator buffers so the caching allocator can defragment
        dist.destroy_process_group()  # ruleid: MLS307
        torch.cuda.empty_cache()
    return reduce_mean(loss.detach())


def save_checkpoint(model, optimizer, step, out_dir):
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        state = {"step": step, "model": model.module.state_dict(),
                 "optimizer": optimizer.state_dict()}
        tmp = os.path.join(out_dir, f"ckpt_{step}.pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, os.path.join(out_dir, f"ckpt_{step}.pt"))
        log.info("saved checkpoint at step %d", step)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307
