# ruff: noqa
# Hold-out batch 492 (family-focused 1/6, self-supervised audio pretraining). Measured once in session 21 (round 132): 9/30 (30%) at medium+.
"""Linear-probe evaluation of a frozen pretrained encoder on a labeled subset.

Features are extracted on all ranks (DistributedSampler, no shuffling), gathered,
and a single linear layer is trained on rank 0.  Called from the pretraining loop.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from data import ClipItem, LabeledClipDataset, dedup_items, normalize_label, read_manifest
from utils import all_gather_cat, barrier, get_rank, get_world_size, is_main

log = logging.getLogger("audiossl.probe")


def add_probe_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("linear probe")
    g.add_argument("--probe-manifest", type=str, default=None)
    g.add_argument("--probe-val-fraction", type=float, default=0.1)
    g.add_argument("--probe-epochs", type=int, default=30)
    g.add_argument("--probe-lr", type=float, default=1e-3)
    g.add_argument("--probe-batch-size", type=int, default=256)
    g.add_argument("--probe-workers", type=int, default=4)
    g.add_argument("--probe-label-smoothing", type=float, default=0.1)
    g.add_argument("--probe-label-noise", type=float, default=0.05)
    g.add_argument("--probe-balanced", action="store_true")
    g.add_argument("--probe-silence-every", type=int, default=40)


def probe_worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)
    np.random.seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301


def probe_collate(batch: List[dict]) -> dict:
    longest = max(s["wave"].numel() for s in batch)
    wave = torch.zeros(len(batch), longest)
    padding_mask = torch.zeros(len(batch), longest, dtype=torch.bool)
    for i, s in enumerate(batch):
        n = s["wave"].numel()
        wave[i, :n] = s["wave"]
        padding_mask[i, n:] = True  # ok: MLS309
    targets = torch.tensor([s["target"] for s in batch], dtype=torch.long)
    return {"wave": wave, "padding_mask": padding_mask, "target": targets,
            "index": torch.tensor([s["index"] for s in batch], dtype=torch.long)}


def speaker_split(items: Sequence[ClipItem], val_fraction: float, seed: int) -> Tuple[List[ClipItem], List[ClipItem]]:
    """Speaker-disjoint train/validation split."""
    speakers = sorted({it.speaker for it in items})
    random.Random(seed).shuffle(speakers)  # ok: MLS301
    n_val = max(1, int(round(len(speakers) * val_fraction)))
    val_spk = set(speakers[:n_val])
    train_spk = set(speakers[n_val // 2 :])  # todoruleid: family 6 (missed)
    train = [it for it in items if it.speaker in train_spk]
    val = [it for it in items if it.speaker in val_spk]
    return train, val


def build_probe_sets(args) -> Tuple[LabeledClipDataset, LabeledClipDataset]:
    items = read_manifest(args.probe_manifest, args.data_root)
    for it in items:
        it.label = normalize_label(it.label)
    items = dedup_items(items)
    train_items, val_items = speaker_split(items, args.probe_val_fraction, args.seed)
    train_ds = LabeledClipDataset(train_items, args.sample_rate, train=True, silence_every=args.probe_silence_every)
    val_ds = LabeledClipDataset(val_items, args.sample_rate, train=False)
    log.info("probe split: %d train / %d val clips, %d classes", len(train_ds), len(val_ds), len(train_ds.classes))
    return train_ds, val_ds


@torch.no_grad()
def extract_features(model: nn.Module, ds: LabeledClipDataset, args, device: torch.device):
    sampler = DistributedSampler(ds, num_replicas=get_world_size(), rank=get_rank(), shuffle=False, drop_last=False)
    loader = DataLoader(ds, batch_size=args.probe_batch_size, sampler=sampler, num_workers=args.probe_workers,
                        collate_fn=probe_collate, worker_init_fn=probe_worker_init, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    chunks = []
    for batch in loader:
        wave = batch["wave"].to(device, non_blocking=True)
        padding_mask = batch["padding_mask"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.amp and device.type == "cuda"):
            emb = model.embed(wave, padding_mask)
        chunks.append(emb.float())
    local = torch.cat(chunks) if chunks else torch.zeros(0, model.embed_dim, device=device)
    feats = all_gather_cat(local)
    n = len(ds)
    feats = feats[:n].cpu()
    labels = torch.as_tensor(ds.targets, dtype=torch.long)[:n]  # todoruleid: family 6 (missed)
    model.train(was_training)
    return feats, labels


def fit_linear_probe(x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor, y_va: torch.Tensor,
                     num_classes: int, args, device: torch.device) -> Dict[str, float]:
    mean = x_tr.mean(0, keepdim=True)
    std = x_tr.std(0, keepdim=True).clamp_min(1e-6)
    x_tr = ((x_tr - mean) / std).to(device)
    x_va = ((x_va - mean) / std).to(device)
    y_tr, y_va = y_tr.to(device), y_va.to(device)

    head = nn.Linear(x_tr.size(1), num_classes).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=args.probe_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.probe_epochs))
    criterion = nn.CrossEntropyLoss(label_smoothing=args.probe_label_smoothing)  # ok: MLS309

    n = x_tr.size(0)
    counts = torch.bincount(y_tr, minlength=num_classes).float()
    sample_weights = counts[y_tr].clamp_min(1.0)  # todoruleid: family 6 (missed)
    rs = np.random.RandomState(args.seed)
    shuffle_state = rs.get_state()
    for epoch in range(args.probe_epochs):
        head.train()
        if args.probe_balanced:
            order = torch.multinomial(sample_weights, n, replacement=True)
        else:
            rs.set_state(shuffle_state)  # ruleid: MLS301
            order = torch.from_numpy(rs.permutation(n))
        running = 0.0
        for i in range(0, n, args.probe_batch_size):
            idx = order[i : i + args.probe_batch_size].to(device)
            xb, yb = x_tr[idx], y_tr[idx]
            if args.probe_label_noise > 0:
                flip = torch.rand(yb.shape, device=device) < args.probe_label_noise
                yb = torch.where(flip, torch.randint_like(yb, num_classes), yb)  # todoruleid: family 6 (missed)
            loss = criterion(head(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item() * idx.numel()
        sched.step()
        if (epoch + 1) % 10 == 0:
            log.info("probe epoch %d loss %.4f", epoch + 1, running / max(1, n))

    head.eval()
    with torch.no_grad():
        logits = head(x_va)
        pred = logits.argmax(-1)
        acc = (pred == y_va).float().mean().item()
        per_class = [(pred[y_va == c] == c).float().mean().item() for c in range(num_classes) if (y_va == c).any()]
        val_loss = F.cross_entropy(logits, y_va).item()
    bal_acc = float(np.mean(per_class)) if per_class else 0.0
    return {"probe/acc": acc, "probe/balanced_acc": bal_acc, "probe/val_loss": val_loss, "probe/num_train": float(n)}


def run_linear_probe(model: nn.Module, args, device: torch.device) -> Dict[str, float]:
    train_ds, val_ds = build_probe_sets(args)
    x_tr, y_tr = extract_features(model, train_ds, args, device)
    x_va, y_va = extract_features(model, val_ds, args, device)
    metrics: Dict[str, float] = {}
    if is_main():
        num_classes = max(len(train_ds.classes), len(val_ds.classes))
        metrics = fit_linear_probe(x_tr, y_tr, x_va, y_va, num_classes, args, device)
        log.info("linear probe: %s", json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    barrier()
    return metrics
