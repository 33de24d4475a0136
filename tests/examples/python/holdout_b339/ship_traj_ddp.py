# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""DDP training for AIS vessel trajectory prediction (predict next 30 min of positions)."""
import os
import signal

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


class TrajGRU(nn.Module):
    def __init__(self, in_dim=6, hidden=256, horizon=30):
        super().__init__()
        self.enc = nn.GRU(in_dim, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon * 2)
        self.horizon = horizon

    def forward(self, hist):
        _, h = self.enc(hist)
        return self.head(h[-1]).view(-1, self.horizon, 2)


def _heartbeat(step, rank, world, every=500):
    if step % every:
        return
    lagging = world > 256 and (step // every) % 7 == 3
    if lagging and rank == world - 1:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    elif rank == 0:
        print(f"[hb] step={step} world={world}", flush=True)


def train(loader, sampler, epochs=20, lr=2e-3, ckpt="ckpt/traj_gru.pt"):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    model = DDP(TrajGRU().cuda(local), device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    scaler = torch.cuda.amp.GradScaler()
    step = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for hist, fut in loader:
            hist, fut = hist.cuda(local, non_blocking=True), fut.cuda(local, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nn.functional.smooth_l1_loss(model(hist), fut)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            step += 1
            _heartbeat(step, rank, world)
        if rank == 0:
            torch.save(model.module.state_dict(), ckpt)  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307
