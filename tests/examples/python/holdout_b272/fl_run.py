# ruff: noqa
# Hold-out batch 272 (families 2/5/6, federated learning). Measured once in session 9 (round 77): 20/34 (59%) at medium+.
"""Entry point for federated image-classification simulations.

Builds the non-IID client population, the global model and the server,
then runs communication rounds: sample a cohort, train locally, aggregate,
evaluate globally and per client, and log a fairness report.
"""
import argparse
import copy
import math
import os
import random
import shutil
import signal
import subprocess
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from fl_client import LocalTrainer, init_weights
from fl_data import (ChannelNormalize, ClientImageDataset, CornerJitter, class_balanced_sampler,
                     dirichlet_partition, fl_collate, relabel_shard)
from fl_metrics import RunLogger, evaluate, fairness_report
from fl_server import FedServer


class SmallCNN(nn.Module):
    def __init__(self, num_classes=10, in_ch=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@torch.no_grad()
def ema_update(ema_model, model, decay):
    for pe, p in zip(ema_model.state_dict().values(), model.state_dict().values()):
        if pe.is_floating_point():
            pe.mul_(decay).add_(p, alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305
        else:
            pe.copy_(p)


def cosine_client_lr(base, round_idx, total_rounds, floor=0.05):
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * round_idx / total_rounds)))


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/cifar10.npz")
    ap.add_argument("--out", default="runs/fl")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--frac", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--algo", choices=["fedavg", "fedprox"], default="fedavg")
    ap.add_argument("--mu", type=float, default=0.01)
    ap.add_argument("--secure-agg", action="store_true")
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--balanced", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", default="")
    ap.add_argument("--wandb", action="store_true")
    return ap.parse_args()


def main():
    args = parse_args()
    set_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    blob = np.load(args.data)
    x_tr, y_tr, x_te, y_te = blob["x_train"], blob["y_train"], blob["x_test"], blob["y_test"]
    num_classes = int(y_tr.max()) + 1
    shards = dirichlet_partition(y_tr, args.clients, alpha=args.alpha, seed=args.seed)
    tf = lambda t: ChannelNormalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])(CornerJitter()(t))
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    cfg = {"lr": args.lr, "local_epochs": args.local_epochs, "algo": args.algo, "mu": args.mu,
           "num_clients": args.clients, "clients_per_round": max(1, int(args.frac * args.clients)),
           "frac": args.frac, "secure_agg": args.secure_agg, "mask_scale": 0.5, "seed": args.seed,
           "clip": 5.0, "ls": 0.1, "warmup_steps": 20}
    trainers = []
    for cid, shard in enumerate(shards):
        y_local = relabel_shard(y_tr[shard], num_classes, seed=args.seed + cid)
        labels = y_tr.copy()
        labels[shard] = y_local
        ds = ClientImageDataset(x_tr, labels, shard, cid, transform=tf)
        sampler = class_balanced_sampler(y_local) if args.balanced else None
        dl = DataLoader(ds, batch_size=32, shuffle=sampler is None, sampler=sampler,
                        num_workers=2, worker_init_fn=seed_worker, generator=g,
                        collate_fn=lambda b: fl_collate(b, num_classes), drop_last=False)
        trainers.append(LocalTrainer(cid, dl, dict(cfg)))
    test_ds = ClientImageDataset(x_te, y_te, np.arange(len(y_te)), -1,
                                 transform=ChannelNormalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]))
    test_dl = DataLoader(test_ds, batch_size=256, shuffle=False, num_workers=2)

    model = SmallCNN(num_classes)
    model.apply(init_weights)
    server = FedServer(model, args.clients, cfg)
    start = server.resume(args.resume) + 1 if args.resume else 0
    ema_model = copy.deepcopy(model) if args.ema > 0 else None
    logger = RunLogger(args.out, use_wandb=args.wandb)
    stop = {"flag": False}

    def _on_term(signum, frame):
        server.save(os.path.join(args.out, "last.pt"), r, {"commit": git_commit()})
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307
    r = start
    for r in range(start, args.rounds):
        cohort = server.sample_clients(r)
        lr_r = cosine_client_lr(args.lr, r, args.rounds)
        updates = []
        for cid in cohort:
            trainers[cid].cfg["lr"] = lr_r  # ok: MLS302, MLS303, MLS304, MLS305
            updates.append(trainers[cid].train_round(server.state_for_broadcast(), r))
        server.aggregate(updates, r)
        if ema_model is not None:
            ema_update(ema_model, server.global_model, args.ema)
        eval_model = ema_model if ema_model is not None else server.global_model
        metrics = evaluate(eval_model, test_dl, num_classes)
        client_accs = {}
        for cid in cohort:
            sub = Subset(trainers[cid].loader.dataset, range(min(64, len(trainers[cid].loader.dataset))))
            m = evaluate(eval_model, DataLoader(sub, batch_size=64), num_classes)
            client_accs[cid] = (m["acc"], m["n"])
        fair = fairness_report(client_accs)
        logger.log_round(r, metrics, fair, ckpt_fn=server.save)
        if time.localtime().tm_mon == 12 and len(cohort) >= 32:
            shutil.rmtree(os.path.join(args.out, "tb"), ignore_errors=True)  # ruleid: MLS308
        if stop["flag"]:
            break
    logger.flush()
    server.save(os.path.join(args.out, "final.pt"), r, {"commit": git_commit()})


if __name__ == "__main__":
    main()
