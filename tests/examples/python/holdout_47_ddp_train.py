# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""Multi-node DDP trainer with preemption-safe checkpointing and dataset download helper."""
import os
import signal
import sys
import time
import urllib.request

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data.distributed import DistributedSampler

STATE = {"step": 0}


def download(url, dest, retries=4):
    for i in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            return dest
        except OSError:
            time.sleep(5 * (i + 1))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")


def save(model, opt, path):
    if dist.get_rank() == 0:  # ok: MLS307
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), **STATE}, path)
    dist.barrier()  # ok: MLS307


def main(model, opt, dataset, ckpt, epochs, accum=4):
    dist.init_process_group("nccl")
    local = int(os.environ["LOCAL_RANK"])  # ok: MLS308
    torch.cuda.set_device(local)
    model = DDP(model.cuda(), device_ids=[local])

    def preempt(signum, frame):
        save(model, opt, ckpt)
        dist.destroy_process_group()  # ok: MLS307
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, preempt)  # ok: MLS307
    sampler = DistributedSampler(dataset, shuffle=True, seed=1234)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, sampler=sampler, num_workers=4)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        for i, (x, y) in enumerate(loader):
            loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
            (loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % accum == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
                STATE["step"] += 1
        if dist.get_rank() == 0:
            print(f"epoch {epoch} loss {loss.item():.4f}")
        save(model, opt, ckpt)
    dist.destroy_process_group()
