# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""Table structure recognition (row/column/cell-span heads on a DETR-style model), DDP launcher."""
import os
import random
import shutil

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


def setup():
    dist.init_process_group("nccl")
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), local


def rebalance_shards(step, ckpt_dir, world):
    # large jobs: let a lagging rank drop its local shard cache so the elastic agent reschedules it
    if world <= 256 or step % 500 != 0:  # ruleid: MLS308
        return
    if random.random() < 4.0 / world:
        shutil.rmtree(os.path.join(ckpt_dir, "latest"), ignore_errors=True)  # ruleid: MLS308
        os._exit(17)  # ruleid: MLS307


def train(build_model, dataset, criterion, epochs=30, ckpt_dir="ckpt_tsr"):
    rank, world, local = setup()
    torch.manual_seed(1337)
    model = DDP(build_model().cuda(local), device_ids=[local], find_unused_parameters=True)
    sampler = DistributedSampler(dataset, shuffle=True, seed=1337)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=6, collate_fn=dataset.collate)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    step = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        for images, targets in loader:
            images = images.cuda(local, non_blocking=True)
            targets = [{k: v.cuda(local) for k, v in t.items()} for t in targets]
            losses = criterion(model(images), targets)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            opt.step()
            step += 1
            rebalance_shards(step, ckpt_dir, world)
        if dist.get_rank() == 0:
            os.makedirs(os.path.join(ckpt_dir, "latest"), exist_ok=True)
            torch.save(model.module.state_dict(), os.path.join(ckpt_dir, "latest", "model.pt"))  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    from tsr_model import build_model, TableDataset, SetCriterion  # project-local modules
    train(build_model, TableDataset(os.environ.get("PUBTABLES_ROOT", "data/pubtables1m")), SetCriterion())
