# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Spoken language ID training (ECAPA-style x-vector) with HF accelerate and SpecAugment."""
import math

import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.utils import set_seed

from lid_features import DEFAULTS, LidFrontend


def spec_augment(feats, max_f=12, max_t=40, n=2):
    feats = feats.clone()
    for _ in range(n):
        f0 = torch.randint(0, feats.size(-2) - max_f, (1,)).item()  # ok: MLS309
        t0 = torch.randint(0, max(1, feats.size(-1) - max_t), (1,)).item()
        feats[..., f0:f0 + torch.randint(1, max_f, (1,)).item(), :] = 0.0  # ok: MLS309
        feats[..., t0:t0 + torch.randint(1, max_t, (1,)).item()] = 0.0
    return feats


def warmup_cosine(step, warm, total):
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train(model, train_dl, epochs=20, lr=2e-3, accum=4, seed=3407):
    set_seed(seed)  # ok: MLS301
    acc = Accelerator(gradient_accumulation_steps=accum, mixed_precision="bf16")
    frontend = LidFrontend(cfg=dict(DEFAULTS))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=2e-5)
    total = epochs * len(train_dl) // accum
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 1000, total))  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, train_dl, sched = acc.prepare(model, opt, train_dl, sched)
    frontend = frontend.to(acc.device)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
    for epoch in range(epochs):
        model.train()
        for wav, lang in train_dl:
            with acc.accumulate(model):
                loss = crit(model(spec_augment(frontend(wav))), lang)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 3.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
        acc.wait_for_everyone()  # ok: MLS307
        if acc.is_main_process:
            acc.print(f"epoch {epoch} loss {loss.item():.4f}")
            acc.save(acc.unwrap_model(model).state_dict(), f"lid_ecapa_e{epoch}.pt")  # ok: MLS307
