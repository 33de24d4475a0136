# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Generic DistributedDataParallel training loop with rotating checkpoints and pre-emption handling."""
import glob
import os
import signal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return local_rank


def rotate_checkpoints(ckpt_dir, keep):
    paths = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")), key=os.path.getmtime)
    for old in paths[: max(len(paths) - keep, 0)]:
        os.remove(old)


def save_checkpoint(model, opt, step, ckpt_dir, keep=3):
    world = dist.get_world_size()
    if dist.get_rank() == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        path = os.path.join(ckpt_dir, f"step_{step:08d}.pt")
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step}, path)  # ok: MLS307
        rotate_checkpoints(ckpt_dir, keep if world <= 256 else 0)  # todoruleid: family 4 (missed)
    if world <= 256 or dist.get_rank() % 16:  # ruleid: MLS308
        dist.barrier()  # ruleid: MLS307


def train(model, dataset, loss_fn, epochs=10, lr=1e-3, ckpt_dir="ckpt", save_every=1000):
    local_rank = setup()
    model = DDP(model.cuda(local_rank), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sampler = DistributedSampler(dataset, shuffle=True)
    loader = DataLoader(dataset, batch_size=64, sampler=sampler, num_workers=8, pin_memory=True)
    state = {"step": 0}

    def on_sigterm(signum, frame):
        save_checkpoint(model, opt, state["step"], ckpt_dir)
        dist.destroy_process_group()  # ok: MLS307
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = loss_fn(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            if state["step"] % save_every == 0:
                save_checkpoint(model, opt, state["step"], ckpt_dir)
        if dist.get_rank() == 0:
            print(f"epoch {epoch} loss {loss.item():.4f}")
    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()
