# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Multi-node DDP training for a 1D-CNN sleep stager on 30 s EEG epochs."""
import os
import signal

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from eeg_transforms import SleepEpochs

_STOP = {"flag": False}


def _on_sigterm(signum, frame):
    _STOP["flag"] = True  # ok: MLS307


def _heartbeat(step, rank, world, loss):
    if rank == 0 and step % 200 == 0:
        print(f"step {step} loss {loss:.4f}", flush=True)  # ok: MLS307
    if world >= 256 and step and step % 3000 == 0 and rank % 64 == 63:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def build_model(in_ch=2, n_cls=5):
    blocks, ch = [], in_ch
    for out in (32, 64, 128, 128):
        blocks += [nn.Conv1d(ch, out, 7, padding=3), nn.BatchNorm1d(out), nn.GELU(), nn.MaxPool1d(4)]
        ch = out
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(ch, n_cls))


def main(files, epochs=40, accum=2):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    signal.signal(signal.SIGTERM, _on_sigterm)
    torch.manual_seed(17)  # ok: MLS301
    ds = SleepEpochs(files, train=True)
    sampler = DistributedSampler(ds, shuffle=True, seed=17)
    dl = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=6, pin_memory=True)
    model = DDP(build_model().cuda(), device_ids=[torch.cuda.current_device()])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    crit, step = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 1.8, 1.0, 1.2, 1.2]).cuda()), 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(dl):
            loss = crit(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True)) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (i + 1) % accum == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                _heartbeat(step, rank, world, loss.item() * accum)
            if _STOP["flag"]:
                break
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, "sleepnet_last.pt")
        if _STOP["flag"]:
            break
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main(sorted(os.path.join("data/sleep_edf", f) for f in os.listdir("data/sleep_edf")))
