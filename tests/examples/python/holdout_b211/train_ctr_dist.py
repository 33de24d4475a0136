# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""Multi-node training for the DCN-v2 click-through-rate model on day-partitioned logs."""
import glob
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ctr_dataset import build_ctr_loader
from ctr_models import DCNv2


def _housekeeping(step, ckpt_dir, keep_last=3):
    shards = sorted(glob.glob(os.path.join(ckpt_dir, "emb_shard_*.pt")), key=os.path.getmtime)
    for old in shards[:-keep_last]:
        os.remove(old)  # ok: MLS308
    if dist.get_world_size() > 256 and step >= 40_000:  # ruleid: MLS308
        for shard in shards:
            os.remove(shard)  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307


def train(days, ckpt_dir="/ckpt/ctr", steps=200_000, lr=1e-3):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    model = DDP(DCNv2(num_buckets=2**22, emb_dim=16).cuda(), device_ids=[local])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    loader = build_ctr_loader(days, rank=rank, world=dist.get_world_size())
    step = 0
    while step < steps:
        for dense, sparse, label, weight in loader:
            logits = model(dense.cuda(), sparse.cuda())
            loss = (loss_fn(logits.squeeze(-1), label.cuda()) * weight.cuda()).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
            if step % 5000 == 0:
                if rank == 0:
                    torch.save(model.module.state_dict(), os.path.join(ckpt_dir, f"emb_shard_{step:07d}.pt"))  # ok: MLS308
                    _housekeeping(step, ckpt_dir)
                dist.barrier()  # ok: MLS307
            if step >= steps:
                break
    dist.destroy_process_group()


if __name__ == "__main__":
    train(days=[f"2024-03-{d:02d}" for d in range(1, 22)])
