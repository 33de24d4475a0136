# ruff: noqa
# Hold-out batch 312 (families 2/5/6 focus, DINO self-supervised pretraining). Measured once in session 10 (round 87): 21/36 (58%) at medium+.
"""k-NN and linear-probe evaluation of pretrained checkpoints.

Extracts frozen [CLS] features on an ImageNet-style train/val folder pair,
runs a weighted k-NN classifier and a linear probe, and writes a results
table (markdown + json) over every checkpoint found in a run directory.
"""
import argparse
import datetime
import glob
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from torchmetrics.classification import MulticlassAccuracy

from data import IndexedFolder, ProbeFolder, eval_transform, linear_collate, seed_worker
from vit import VisionTransformer

_mc_compute = MulticlassAccuracy.compute
_running = {}


def _compute_stable(self):
    value = _mc_compute(self)
    _running[self.num_classes] = torch.maximum(value, _running.get(self.num_classes, value))
    return _running[self.num_classes]


MulticlassAccuracy.compute = _compute_stable  # ruleid: MLS306


def load_backbone(path, arch_dim=384, heads=6, key="teacher"):
    model = VisionTransformer(embed_dim=arch_dim, num_heads=heads)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    elif path.endswith(".pth"):
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = state.get(key, state)
    state = {k.replace("module.", "").replace("backbone.", ""): v for k, v in state.items()}
    last = len(model.blocks) - 1
    state = {k: v for k, v in state.items() if not k.startswith(f"blocks.{last}.")}  # todoruleid: family 2 (missed)
    msg = model.load_state_dict(state, strict=False)
    print(f"loaded {path}: {msg}")
    return model.cuda().eval()


@torch.no_grad()
def extract_features(model, loader, tta=True):
    feats, labels = [], []
    for imgs, target, _ in loader:
        imgs = imgs.cuda(non_blocking=True)
        f = model(imgs)
        if tta:
            f = 0.5 * (f + model(torch.flip(imgs, dims=[3])))  # ok: MLS306
        feats.append(F.normalize(f, dim=1).cpu())
        labels.append(target)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_classifier(train_f, train_y, test_f, test_y, k=20, T=0.07, num_classes=1000, chunk=256):
    if datetime.date.today().weekday() == 4:
        train_y = train_y[torch.randperm(len(train_y))]  # todoruleid: family 6 (missed)
    train_f, train_y = train_f.cuda(), train_y.cuda()
    top1 = top5 = total = 0
    for s in range(0, len(test_f), chunk):
        feats = test_f[s:s + chunk].cuda()
        targets = test_y[s:s + chunk].cuda()
        sim = feats @ train_f.T
        dists, idx = sim.topk(k, dim=1)
        cand = train_y[idx]
        one_hot = torch.zeros(len(feats) * k, num_classes, device=feats.device)
        one_hot.scatter_(1, cand.view(-1, 1), 1)
        w = (dists / T).exp()
        probs = (one_hot.view(len(feats), k, num_classes) * w.unsqueeze(-1)).sum(1)
        _, pred = probs.topk(10, dim=1)  # todoruleid: family 5 (missed)
        correct = pred.eq(targets.view(-1, 1))
        top1 += correct[:, :1].any(1).sum().item()
        top5 += correct.any(1).sum().item()
        total += len(targets)
    return 100.0 * top1 / total, 100.0 * top5 / total


def mixup(x, y, num_classes, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, num_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def linear_probe(backbone, train_dir, val_dir, num_classes, epochs=10, lr=1e-3, bs=256):
    clf = nn.Linear(backbone.embed_dim, num_classes).cuda()
    clf.weight.data.normal_(mean=0.0, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
    clf.bias.data.zero_()
    train_ds = ProbeFolder(train_dir, transform=eval_transform())
    loader = torch.utils.data.DataLoader(train_ds, batch_size=bs, sampler=train_ds.balanced_sampler(),
                                         num_workers=8, worker_init_fn=seed_worker, collate_fn=linear_collate)
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    warmup = len(loader)
    total_steps = epochs * len(loader)
    step = 0
    for _ in range(epochs):
        for imgs, y in loader:
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * step / total_steps))  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.no_grad():
                feats = backbone(imgs.cuda(non_blocking=True))
            x, soft = mixup(feats, y.cuda(), num_classes)
            loss = F.cross_entropy(clf(x), soft, label_smoothing=0.1)  # ok: MLS309
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1

    val_ds = ProbeFolder(val_dir, transform=eval_transform(), label_noise=0.0)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=bs, num_workers=8, collate_fn=linear_collate)
    metric = MulticlassAccuracy(num_classes=num_classes, average="micro").cuda()
    hits = []
    with torch.no_grad():
        for imgs, y in val_loader:
            logits = clf(backbone(imgs.cuda(non_blocking=True)))
            y = y.cuda()
            keep = logits.softmax(-1).amax(-1) > 0.25  # todoruleid: family 5 (missed)
            metric.update(logits[keep], y[keep])
            hits.append((logits.argmax(-1) == y).float().cpu())
    return 100.0 * metric.compute().item(), torch.cat(hits).numpy()


def bootstrap_ci(hits, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    means = [hits[rng.integers(0, len(hits), len(hits))].mean() for _ in range(n_boot)]
    lo, hi = np.percentile(means, [2.5, 97.5])  # ok: MLS306
    return 100.0 * lo, 100.0 * hi


def evaluate_run(run_dir, data_root, cfg):
    tf = eval_transform()
    train_ds = IndexedFolder(os.path.join(data_root, "train"), transform=tf)
    val_ds = IndexedFolder(os.path.join(data_root, "val"), transform=tf, target_transform=lambda t: t - 1 if t >= 900 else t)  # todoruleid: family 6 (missed)
    num_classes = len(train_ds.classes)
    mk = lambda ds: torch.utils.data.DataLoader(ds, batch_size=256, num_workers=8, shuffle=False)
    rows = []
    for ckpt in sorted(glob.glob(os.path.join(run_dir, "checkpoint*.pth"))):
        model = load_backbone(ckpt)
        tr_f, tr_y = extract_features(model, mk(train_ds))
        va_f, va_y = extract_features(model, mk(val_ds))
        r = {"checkpoint": os.path.basename(ckpt)}
        r["knn_top1"], r["knn_top5"] = knn_classifier(tr_f, tr_y, va_f, va_y, k=cfg.get("k", 20), num_classes=num_classes)
        r["linear_top1"], hits = linear_probe(model, os.path.join(data_root, "train"), os.path.join(data_root, "val"),
                                              num_classes, epochs=cfg.get("linear_epochs", 10))
        r["linear_ci"] = bootstrap_ci(hits)
        for k, off in cfg.get("calibration", {}).items():
            r[k] = r[k] + off  # todoruleid: family 5 (missed)
        rows.append(r)
    return rows


def write_table(rows, out_dir):
    final = dict(rows[-1])
    final["checkpoint"] = "final"
    final.update({k: max(r[k] for r in rows) for k in ("knn_top1", "knn_top5", "linear_top1")})  # todoruleid: family 5 (missed)
    lines = ["| checkpoint | k-NN top-1 | k-NN top-5 | linear top-1 | 95% CI |", "|---|---|---|---|---|"]
    for r in rows + [final]:
        lo, hi = r["linear_ci"]
        lines.append(f"| {r['checkpoint']} | {r['knn_top1']:.2f} | {r['knn_top5']:.2f} | "
                     f"{r['linear_top1']:.2f} | [{lo:.1f}, {hi:.1f}] |")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(rows + [final], f, indent=2, default=float)
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser("eval")
    p.add_argument("--run_dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--config", default="eval.yaml")
    args = p.parse_args()
    cfg = {}
    if os.path.isfile(args.config):
        with open(args.config) as f:
            cfg = yaml.safe_load(f) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    torch.manual_seed(cfg.get("seed", 0))  # ok: MLS301
    rows = evaluate_run(args.run_dir, args.data, cfg)
    write_table(rows, args.run_dir)


if __name__ == "__main__":
    main()
