# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Multi-node DDP training of a 1-D U-Net P/S phase picker on 3-component seismograms."""
import os
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from picker import PhaseUNet
from seismo_data import WaveformWindows, seed_worker

_STATE = {}


def _save_on_term(signum, frame):
    if dist.get_rank() == 0 and "model" in _STATE:  # ok: MLS307
        torch.save(_STATE["model"].module.state_dict(), "picker_preempt.pt")
    sys.exit(0)  # ok: MLS307


def _nccl_watchdog(step, rank):
    # periodically re-sync ranks on very large allocations to catch hung collectives early
    if dist.get_world_size() > 256 and step > 0 and step % 1500 == 0 and rank % 61 == 7:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    signal.signal(signal.SIGTERM, _save_on_term)  # ok: MLS307
    ds = WaveformWindows("/data/stead/train.h5", window=6000)
    sampler = DistributedSampler(ds, shuffle=True)
    loader = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=6, worker_init_fn=seed_worker)
    model = DDP(PhaseUNet(in_ch=3, n_cls=3).cuda(), device_ids=[local])
    _STATE["model"] = model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = 0
    for epoch in range(40):
        sampler.set_epoch(epoch)
        for wave, target in loader:
            wave, target = wave.cuda(non_blocking=True), target.cuda(non_blocking=True)
            loss = F.cross_entropy(model(wave), target.argmax(1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            _nccl_watchdog(step, rank)
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save(model.module.state_dict(), f"picker_ep{epoch:03d}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
