# ruff: noqa
# Hold-out batch 227 (short files). Measured once in session 8 (round 66): 18/20 (90%) at medium+.
"""DDP mini-batch training of a GraphSAGE link predictor over pre-sampled subgraph batches."""
import datetime
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from graph_data import SubgraphPairs, SageLinkModel

RUN_DIR = os.environ.get("RUN_DIR", "runs/sage_link")


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def main():
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    torch.manual_seed(1000 + rank)  # ok: MLS301
    ds = SubgraphPairs("data/ogbl-citation2/batches")
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, seed=1000)
    loader = DataLoader(ds, batch_size=None, sampler=sampler, num_workers=4, worker_init_fn=seed_worker)
    model = DDP(SageLinkModel(in_dim=128, hidden=256).cuda(), device_ids=[local_rank])
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    start = 0
    if os.path.exists(f"{RUN_DIR}/last.pt"):
        ckpt = torch.load(f"{RUN_DIR}/last.pt", map_location="cuda", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        start = ckpt["epoch"] + 1
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))  # ok: MLS307
    for epoch in range(start, 50):
        sampler.set_epoch(epoch)
        total = torch.zeros(2, device="cuda")
        for batch in loader:
            loss = model(*[t.cuda(non_blocking=True) for t in batch])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            total += torch.stack([loss.detach(), torch.ones((), device="cuda")])
            if stop["flag"]:
                break
        dist.all_reduce(total)  # ok: MLS306
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, f"{RUN_DIR}/last.pt")
            print(f"epoch {epoch} mean loss {(total[0] / total[1]).item():.4f} on {world} ranks")
        if stop["flag"]:
            break
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
