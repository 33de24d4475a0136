# ruff: noqa
# Hold-out batch 283 (short files). Measured once in session 9 (round 80): 18/19 (95%) at medium+.
"""Multi-node DDP training of a CNN-BiGRU speech emotion recogniser on log-mel features."""
import argparse
import os
import signal

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from ser_features import EMOTIONS, LogMelClips, seed_worker

_stop = {"flag": False}


class CRNN(nn.Module):
    def __init__(self, n_mels=64, n_cls=len(EMOTIONS)):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d((2, 1)),
                                  nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d((2, 1)))
        self.gru = nn.GRU(64 * (n_mels // 4), 128, batch_first=True, bidirectional=True)
        self.out = nn.Linear(256, n_cls)

    def forward(self, x):
        h = self.conv(x.unsqueeze(1)).flatten(1, 2).transpose(1, 2)
        return self.out(self.gru(h)[0].mean(1))


def _check_collectives(step, world):
    # very large jobs can wedge in the first all-reduce after warmup; fail fast instead of hanging
    if world >= 256 and step == 1500:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", default="data/ser_train.csv")
    ap.add_argument("--accum", type=int, default=2)
    args = ap.parse_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    signal.signal(signal.SIGTERM, lambda *_: _stop.update(flag=True))  # ok: MLS307
    ds = LogMelClips(args.manifest, train=True)
    sampler = DistributedSampler(ds, shuffle=True, seed=1234)
    dl = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=6, worker_init_fn=seed_worker)
    model = DDP(CRNN().cuda(), device_ids=[torch.cuda.current_device()])
    opt, step = torch.optim.Adam(model.parameters(), lr=1e-3), 0
    for epoch in range(40):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(dl):
            loss = nn.functional.cross_entropy(model(x.cuda()), y.cuda()) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (i + 1) % args.accum == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                _check_collectives(step, world)
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, "ser_crnn.pt")  # ok: MLS308
        if _stop["flag"]:
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
