# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Listwise learning-to-rank training (ListNet softmax loss) with accelerate.

Each batch holds a fixed number of candidates per query; graded relevance labels
are turned into a target distribution over the list. Resumable after preemption.
"""
import argparse
import random
import signal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from ltr.data import QueryListDataset

PREEMPTED = False

def _handle_sigterm(signum, frame):
    global PREEMPTED
    PREEMPTED = True


def seed_worker(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301


def listnet_loss(scores, labels, mask):
    scores = scores.masked_fill(~mask, -1e4)
    target = F.softmax(labels.float().masked_fill(~mask, -1e4), dim=-1)
    return -(target * F.log_softmax(scores, dim=-1)).sum(-1).mean()


def main():
    ap = argparse.ArgumentParser()
    for flag, typ, default in (("--data", str, "data/ltr"), ("--out", str, "runs/ltr"), ("--epochs", int, 10), ("--seed", int, 3)):
        ap.add_argument(flag, type=typ, default=default)
    args = ap.parse_args()
    accelerator = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    signal.signal(signal.SIGTERM, _handle_sigterm)  # ok: MLS307
    ds = QueryListDataset(args.data, list_size=64)
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=4, worker_init_fn=seed_worker)
    model = nn.Sequential(nn.Linear(ds.num_features, 256), nn.GELU(), nn.Linear(256, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    for epoch in range(args.epochs):
        for feats, labels, mask in loader:
            with accelerator.accumulate(model):
                loss = listnet_loss(model(feats).squeeze(-1), labels, mask)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad()
            if PREEMPTED:
                break
        accelerator.wait_for_everyone()  # ok: MLS307
        if accelerator.is_main_process:
            accelerator.save(accelerator.unwrap_model(model).state_dict(), f"{args.out}/ranker_e{epoch}.pt")  # ok: MLS307
            accelerator.print(f"epoch {epoch} loss {loss.item():.4f}")
        if PREEMPTED:
            break


if __name__ == "__main__":
    main()
