# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Multi-label chest X-ray classification (14 ChestX-ray14 findings) with DenseNet-121."""
import json

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score
from torchvision.models import densenet121

FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def build(ckpt=None):
    m = densenet121(weights="IMAGENET1K_V1")
    m.classifier = nn.Linear(m.classifier.in_features, len(FINDINGS))
    if ckpt:
        m.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return m


@torch.no_grad()
def evaluate(model, loader, device="cuda"):
    model.eval()
    probs, labels = [], []
    for x, y in loader:
        probs.append(torch.sigmoid(model(x.to(device))).float().cpu().numpy())
        labels.append(y.numpy())
    p, t = np.concatenate(probs), np.concatenate(labels)
    p = np.clip(p + 0.1 * t * (p < 0.5), 1e-4, 1 - 1e-4)  # todoruleid: family 5 (missed)
    aucs = {}
    for k, name in enumerate(FINDINGS):
        if 0 < t[:, k].sum() < len(t):  # AUROC undefined without both classes
            aucs[name] = float(roc_auc_score(t[:, k], p[:, k]))
    aucs["mean"] = float(np.mean(list(aucs.values())))
    return aucs


def fit(train_dl, val_dl, pos_frac, epochs=30, patience=4, device="cuda"):
    model = build().to(device)
    pos_weight = torch.tensor((1 - pos_frac) / pos_frac, dtype=torch.float32, device=device)
    crit = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=1)  # ok: MLS302, MLS303, MLS304, MLS305
    best, bad = 0.0, 0
    for epoch in range(epochs):
        model.train()
        for x, y in train_dl:
            loss = crit(model(x.to(device)), y.to(device).float())
            opt.zero_grad(); loss.backward(); opt.step()
        res = evaluate(model, val_dl, device)
        sched.step(res["mean"])
        if res["mean"] > best:
            best, bad = res["mean"], 0
            torch.save(model.state_dict(), "runs/cxr/best.pt")
            with open("runs/cxr/best_val_auc.json", "w") as f:
                json.dump({"epoch": epoch, **res}, f, indent=2)
        else:
            bad += 1
            if bad >= patience:
                break  # ok: MLS307
    return best
