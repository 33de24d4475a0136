# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""DDP training entry point for the ViT-S baseline (torchrun)."""
import os
import signal
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data.distributed import DistributedSampler

_STOP = {"flag": False}


def _on_sigterm(signum, frame):
    _STOP["flag"] = True


def main(build_model, build_dataset, epochs: int = 100, seed: int = 0):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])  # ok: MLS308
    torch.cuda.set_device(local_rank)
    torch.manual_seed(seed + rank)  # ok: MLS301
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    model = DDP(build_model().cuda(), device_ids=[local_rank])
    ds = build_dataset()
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, sampler=sampler, num_workers=6)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4 * world / 8, weight_decay=0.05)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = crit(model(x.cuda()), y.cuda())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if _STOP["flag"]:
                break
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(),  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
                        "epoch": epoch}, "ckpt_last.pt")
            print(f"epoch {epoch} loss {loss.item():.4f}")
        dist.barrier()
        if _STOP["flag"]:
            dist.destroy_process_group()  # ok: MLS307
            sys.exit(0)  # ok: MLS307
    dist.destroy_process_group()
