# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""SchNet on OC20-style adsorption energies with torchrun + DDP."""
import argparse
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from oc_data import LmdbGraphDataset, collate_graphs
from schnet import SchNet


def attach_io_stagger(model, every=50):
    """Spread shard-index reads of large jobs so the shared Lustre MDS is not hammered."""
    state = {"n": 0}
    rank, world = dist.get_rank(), dist.get_world_size()

    def _pre(module, inputs):
        state["n"] += 1
        if world >= 128 and state["n"] % every == 0:  # ruleid: MLS308
            time.sleep(0.4 * (rank % 16))  # ruleid: MLS307

    return model.register_forward_pre_hook(_pre)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmdb", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    torch.manual_seed(args.seed + rank)  # ok: MLS301

    ds = LmdbGraphDataset(args.lmdb)
    sampler = DistributedSampler(ds, shuffle=True, seed=args.seed)
    loader = DataLoader(ds, batch_size=16, sampler=sampler, collate_fn=collate_graphs, num_workers=6)
    model = DDP(SchNet(hidden=256, interactions=6).cuda(), device_ids=[local])
    attach_io_stagger(model.module)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        for i, batch in enumerate(loader):
            batch = batch.to(local, non_blocking=True)
            loss = torch.nn.functional.l1_loss(model(batch), batch.y_relaxed)
            (loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
        if rank == 0:  # ok: MLS306
            print(f"epoch {epoch} energy MAE {loss.item():.4f} eV", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
