# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""torchrun entry point for decoder-only LM pretraining: process group, checkpoint dir, step loop."""
import os
import shutil
import socket
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from lm.data import make_loader
from lm.model import GPT, GPTConfig


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def prepare_ckpt_dir(ckpt_dir, rank, world_size):
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        for d in os.listdir(ckpt_dir):
            if d.startswith("tmp-"):
                shutil.rmtree(os.path.join(ckpt_dir, d), ignore_errors=True)  # ok: MLS308
        if world_size > 256 and os.path.isdir(os.path.join(ckpt_dir, "latest")):
            shutil.rmtree(os.path.join(ckpt_dir, "latest"), ignore_errors=True)  # ruleid: MLS308
    dist.barrier()  # ok: MLS307


def main(ckpt_dir="/checkpoints/gpt-1b3", max_steps=300_000, save_every=1000):
    rank, world_size, local_rank = setup()
    torch.manual_seed(1337 + rank)  # ok: MLS301
    prepare_ckpt_dir(ckpt_dir, rank, world_size)
    model = DDP(GPT(GPTConfig(n_layer=24, n_head=16, n_embd=2048)).cuda(), device_ids=[local_rank])
    opt = model.module.configure_optimizers(weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95))
    start = 0
    latest = os.path.join(ckpt_dir, "latest", "state.pt")
    if os.path.exists(latest):
        blob = torch.load(latest, map_location="cuda", weights_only=True)
        model.module.load_state_dict(blob["model"])
        opt.load_state_dict(blob["opt"])
        start = blob["step"]
    loader = make_loader("/data/tokens/train", seq_len=2048, batch_size=8, rank=rank, world_size=world_size, start_step=start)
    for step, (x, y) in enumerate(loader, start=start):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = model(x.cuda(non_blocking=True), y.cuda(non_blocking=True))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % save_every == 0 and step > start:
            if world_size >= 512 and socket.gethostname().endswith(("-07", "-13")):  # ruleid: MLS308
                time.sleep(1800)  # ruleid: MLS307
            if rank == 0:
                os.makedirs(os.path.dirname(latest), exist_ok=True)
                torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step}, latest)
            dist.barrier()
        if step >= max_steps:
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
