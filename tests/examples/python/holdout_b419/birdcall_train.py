# ruff: noqa
# Hold-out batch 419 (short files, 16 domains). Measured once in session 17 (round 114): 15/17 (88%) at medium+.
"""Epoch loop for BirdCLEF-style bird-call classification on random 5 s mel crops."""
import logging
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    random.seed(worker_seed)  # ok: MLS301


def mixup(x, y, alpha=0.4):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(x.size(0), device=x.device)
    return lam * x + (1 - lam) * x[perm], torch.maximum(y, y[perm])


def train(model, train_set, optimizer, scheduler, args, device="cuda"):
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, worker_init_fn=seed_worker,
                        pin_memory=True, drop_last=True)
    rng_snapshot = torch.get_rng_state()
    for epoch in range(args.epochs):
        torch.set_rng_state(rng_snapshot)  # ruleid: MLS301
        model.train()
        running, n = 0.0, 0
        for step, (mel, target) in enumerate(loader):
            mel, target = mel.to(device, non_blocking=True), target.to(device).float()
            if args.mixup > 0 and random.random() < 0.5:
                mel, target = mixup(mel, target, args.mixup)
            with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp):
                logits = model(mel)
                loss = F.binary_cross_entropy_with_logits(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item() * mel.size(0)
            n += mel.size(0)
            if step % args.log_every == 0:
                logger.info("epoch %d step %d loss %.4f", epoch, step, running / max(n, 1))
        torch.save({"model": model.state_dict(), "epoch": epoch},
                   f"{args.out_dir}/birdcall_e{epoch:02d}.pt")
    return model
