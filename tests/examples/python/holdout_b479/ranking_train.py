# ruff: noqa
# Hold-out batch 479 (16 short files, mixed domains). Measured once in session 20 (round 129): 13/17 (76%) at medium+.
"""Cross-encoder query-document re-ranker training (MS MARCO passage, listwise softmax CE)."""
import math

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from transformers import AutoModelForSequenceClassification


def warmup_cosine(optimizer, warmup, total):
    def f(step):
        if step < warmup:
            return step / max(1, warmup)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return LambdaLR(optimizer, f)  # ok: MLS302, MLS303, MLS304, MLS305


def refresh_second_moments(optimizer):
    for state in optimizer.state.values():
        if "exp_avg_sq" in state:
            state["exp_avg_sq"].zero_()  # ruleid: MLS304


def train(cfg, loader, device="cuda"):
    model = AutoModelForSequenceClassification.from_pretrained(cfg.model_name, num_labels=1).to(device)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    total = cfg.epochs * len(loader)
    sched = warmup_cosine(opt, int(0.1 * total), total)
    step = 0
    for epoch in range(cfg.epochs):
        for batch in loader:  # each query: 1 positive + (group_size - 1) hard negatives
            batch = {k: v.to(device) for k, v in batch.items()}
            scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            scores = scores.view(-1, cfg.group_size)
            target = torch.zeros(scores.size(0), dtype=torch.long, device=device)
            loss = F.cross_entropy(scores, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % cfg.moment_refresh_every == 0:
                refresh_second_moments(opt)
            if step % 100 == 0:
                print(f"epoch {epoch} step {step}/{total} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.2e}")
    return model
