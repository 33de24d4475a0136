# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""DDP training entry point for the TCN forecaster (launch with torchrun)."""
import argparse
import math
import os
import signal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from forecast.data import build_dataset
from forecast.model import TCNForecaster
from seed_utils import seed_worker, set_seed

_STOP = {"flag": False}


def main():
    p = argparse.ArgumentParser()
    for flag, typ, default in [("--seed", int, 1234), ("--epochs", int, 40), ("--lr", float, 1e-3),
                               ("--warmup", int, 500), ("--accum", int, 2), ("--init-from", str, None),
                               ("--out", str, "runs/tcn")]:
        p.add_argument(flag, type=typ, default=default)
    args = p.parse_args()
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    set_seed(args.seed)  # ok: MLS301
    signal.signal(signal.SIGTERM, lambda signum, frame: _STOP.update(flag=True))  # ok: MLS307
    ds = build_dataset("train")
    sampler = DistributedSampler(ds, shuffle=True, seed=args.seed)
    loader = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=4, worker_init_fn=seed_worker)
    model = TCNForecaster(ds.n_features, ds.horizon).cuda()
    if args.init_from:
        model.load_state_dict(torch.load(args.init_from, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = DDP(model, device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    scaler = torch.cuda.amp.GradScaler()
    step, total = 0, args.epochs * len(loader) // args.accum
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            warm = min(1.0, (step + 1) / args.warmup)
            for g in opt.param_groups:
                g["lr"] = args.lr * warm * 0.5 * (1 + math.cos(math.pi * step / total))  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.l1_loss(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True)) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                step += 1
            if _STOP["flag"]:
                break
        if rank == 0:
            os.makedirs(args.out, exist_ok=True)
            torch.save(model.module.state_dict(), os.path.join(args.out, "last.pt"))  # ok: MLS308
        dist.barrier()  # ok: MLS307
        if _STOP["flag"]:
            break
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
