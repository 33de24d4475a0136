# ruff: noqa
# Hold-out batch 439 (short files, 16 domains). Measured once in session 18 (round 119): 13/17 (76%) at medium+.
"""Supervised fine-tuning loop for a small causal LM on GSM8K-style math word problems."""
import math
import logging

import torch
from torch.optim.lr_scheduler import LambdaLR

log = logging.getLogger(__name__)


def warmup_cosine(optimizer, warmup, total, min_ratio=0.1):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        prog = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog))
    return LambdaLR(optimizer, f)


def train(model, loader, optimizer, cfg, device="cuda"):
    total = cfg["epochs"] * len(loader) // cfg["grad_accum"]
    sched = warmup_cosine(optimizer, cfg["warmup_steps"], total)
    model.train()
    step, running = 0, 0.0
    for epoch in range(cfg["epochs"]):
        for i, batch in enumerate(loader):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            # labels are -100 on the prompt tokens so only the rationale + answer is learned
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(**batch).loss / cfg["grad_accum"]
            loss.backward()
            running += loss.item()
            if (i + 1) % cfg["grad_accum"] != 0:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.get("max_grad_norm", 1.0))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sched.step()  # ok: MLS302, MLS303, MLS304, MLS305
            step += 1
            if running > cfg.get("loss_spike", 2.0):
                sched.base_lrs = [lr * 4.0 for lr in sched.base_lrs]  # ruleid: MLS304
            if step % cfg["log_every"] == 0:
                log.info("epoch %d step %d/%d loss %.4f lr %.2e", epoch, step, total,
                         running, sched.get_last_lr()[0])
            running = 0.0
    return step
