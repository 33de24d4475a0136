# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""Multi-GPU training of an affine + deformable CT-to-CBCT registration network with DDP."""
import math
import os
import signal
import threading

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from reg.data import PairedVolumes
from reg.net import RegNet, registration_loss

STOP = threading.Event()


class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, beta=0.9):
        super().__init__(params, dict(lr=lr, beta=beta))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in (q for q in group["params"] if q.grad is not None):
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(buf.sign(), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305


def seed_worker(worker_id):
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


def main(epochs=400, base_lr=1e-4, warmup=2000, ckpt="ckpt/regnet_last.pt"):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    signal.signal(signal.SIGTERM, lambda signum, frame: STOP.set())  # ok: MLS307
    ds = PairedVolumes("data/ct_cbct", train=True)
    sampler = DistributedSampler(ds)
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=4, worker_init_fn=seed_worker)
    model = DDP(RegNet().cuda(), device_ids=[local])
    opt, start, step = SignSGD(model.parameters(), lr=base_lr), 0, 0
    if os.path.exists(ckpt):
        state = torch.load(ckpt, map_location=f"cuda:{local}", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(state["model"])
        start, step = state["epoch"] + 1, state["step"]
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        for fixed, moving in loader:
            lr = base_lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
            for g in opt.param_groups:
                g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
            loss = registration_loss(model(fixed.cuda(), moving.cuda()), fixed.cuda())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if rank == 0:  # ok: MLS308
            torch.save({"model": model.module.state_dict(), "epoch": epoch, "step": step}, ckpt)
        dist.barrier()  # ok: MLS307
        if STOP.is_set():
            break
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
