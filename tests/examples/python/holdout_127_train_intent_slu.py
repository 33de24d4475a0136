# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""SLU intent classifier (pooled wav2vec2 features -> MLP head) trained with HF accelerate."""
import os
import time
import urllib.request

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed

LABELS_URL = "https://data.example.com/slu/intents-v2.txt"


def fetch_labels(dest="data/intents.txt", retries=3):
    for attempt in range(retries):
        try:
            if not os.path.exists(dest):
                urllib.request.urlretrieve(LABELS_URL, dest)  # ok: MLS411, MLS412
            return [l.strip() for l in open(dest) if l.strip()]
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError("could not fetch intent label list")


def mixup(x, y, n_cls, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, n_cls).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def train(model, train_dl, val_dl, n_cls, epochs=30, lr=3e-4, patience=4, seed=7, out="runs/slu"):
    set_seed(seed)  # ok: MLS301
    acc = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=2)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    model, opt, train_dl, val_dl = acc.prepare(model, opt, train_dl, val_dl)
    best, bad = 0.0, 0
    for epoch in range(epochs):
        model.train()
        for feats, y in train_dl:
            with acc.accumulate(model):
                x, soft = mixup(feats, y, n_cls)
                loss = torch.sum(-soft * F.log_softmax(model(x), -1), -1).mean()
                acc.backward(loss)
                acc.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for feats, y in val_dl:
                logits = model(feats)
                loss = F.cross_entropy(logits, y, label_smoothing=0.1)  # ok: MLS309
                pred, y = acc.gather_for_metrics((logits.argmax(-1), y))
                correct += (pred == y).sum().item()
                total += y.numel()
        val_acc = correct / max(total, 1)
        acc.print(f"epoch {epoch} val_acc {val_acc:.4f} val_loss {loss.item():.4f}")
        acc.wait_for_everyone()  # ok: MLS307
        if val_acc > best:
            best, bad = val_acc, 0
            if acc.is_main_process:
                acc.save(acc.unwrap_model(model).state_dict(), os.path.join(out, "best.pt"))  # ok: MLS307
        else:
            bad += 1
            if bad >= patience:
                break
    return best
