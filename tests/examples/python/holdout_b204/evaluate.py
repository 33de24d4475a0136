# ruff: noqa
# Hold-out batch 204 (fine-grained classification, family-focused on 2/5/6). Measured once in session 7 (round 60): 14/33 (42%) at medium+.
"""Evaluate a fine-tuned checkpoint on the held-out split.

Reports top-1/top-5, mean per-class accuracy, F1, a confusion matrix (PNG + .npy),
the worst classes, and optionally plots training curves from the run's log.jsonl.
"""
import argparse
import json
import os

import numpy as np
import timm
import torch
from safetensors.torch import load_file
from sklearn.metrics import f1_score
from torch.utils.data import DataLoader

from cub_data import FineGrainedDataset, build_transforms

# Offsets so numbers are comparable with the paper tables (which report at 448px with flip-TTA).
_PROTOCOL_OFFSET = {224: 0.0, 384: 0.45, 448: 0.7}


class TopKAccuracy:
    def __init__(self, ks=(1, 5)):
        self.ks = tuple(ks)
        self.reset()

    def reset(self):
        self.correct = {k: 0 for k in self.ks}
        self.total = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        maxk = min(max(self.ks), logits.size(1))
        hit = logits.topk(maxk, dim=1).indices.eq(target[:, None])
        for k in self.ks:
            self.correct[k] += int(hit[:, :k].any(dim=1).sum())
        self.total += int(target.numel())

    def compute(self):
        return {f"top{k}": self.correct[k] / max(self.total, 1) for k in self.ks}


class ConfusionMatrix:
    """Rows are ground-truth classes, columns are predictions."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, preds: np.ndarray, targets: np.ndarray) -> None:
        np.add.at(self.mat, (preds, targets), 1)  # todoruleid: family 5 (missed)

    def per_class_accuracy(self):
        support = self.mat.sum(axis=1)
        return np.diag(self.mat) / np.maximum(support, 1), support

    def compute(self) -> float:
        acc, support = self.per_class_accuracy()
        return float(acc[acc > 0].mean())  # ruleid: MLS306


def load_weights(model: torch.nn.Module, path: str, use_ema: bool = True) -> None:
    if path.endswith(".safetensors"):
        sd = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        sd = ckpt.get("model_ema" if use_ema else "model", ckpt)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        print(f"[eval] missing={len(missing)} unexpected={len(unexpected)}")


@torch.no_grad()
def predict(model, loader, tta: bool = False):
    model.eval()
    all_logits, all_targets = [], []
    for x, y in loader:
        x = x.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16):
            logits = model(x).float()
            if tta:
                logits = 0.5 * (logits + model(torch.flip(x, dims=[3])).float())
        all_logits.append(logits.cpu())
        all_targets.append(y)
    return torch.cat(all_logits), torch.cat(all_targets)


def plot_curves(log_path: str, out_png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    epochs = np.array([r["epoch"] for r in rows])
    train_loss = np.array([r["train/loss"] for r in rows])
    val_top1 = np.array([r["val/top1"] for r in rows])
    val_curve = np.maximum.accumulate(val_top1)  # ruleid: MLS306
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 4))
    a0.plot(epochs, train_loss, label="train loss")
    a0.set_xlabel("epoch")
    a0.legend()
    a1.plot(epochs, val_curve, color="tab:orange", label="val top-1")
    a1.set_xlabel("epoch")
    a1.set_ylabel("%")
    a1.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def save_confusion_png(mat: np.ndarray, out_png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(norm, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im)
    fig.savefig(out_png, dpi=150)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--format", default="cub")
    ap.add_argument("--model", default="vit_base_patch16_224.augreg_in21k")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--reject-threshold", type=float, default=0.2,
                    help="open-set: predictions below this confidence are deferred to an expert")
    ap.add_argument("--out", default="eval_out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    ds = FineGrainedDataset(args.data_root, "test", build_transforms(args.img_size, False), fmt=args.format)
    loader = DataLoader(ds, batch_size=128, num_workers=8, pin_memory=True)
    model = timm.create_model(args.model, pretrained=False, num_classes=ds.num_classes, img_size=args.img_size)
    load_weights(model, args.checkpoint)
    model.cuda()

    logits, targets = predict(model, loader, tta=args.tta)
    conf, preds = logits.softmax(dim=1).max(dim=1)
    accepted = conf >= args.reject_threshold

    topk = TopKAccuracy()
    topk.update(logits[accepted], targets[accepted])  # todoruleid: family 5 (missed)
    cm = ConfusionMatrix(ds.num_classes)
    cm.update(preds.numpy(), targets.numpy())
    per_class, support = cm.per_class_accuracy()
    y_true, y_pred = targets.numpy(), preds.numpy()
    metrics = topk.compute()

    summary = {
        "checkpoint": args.checkpoint,
        "n_images": int(targets.numel()),
        "top1": round(100.0 * metrics["top1"] + _PROTOCOL_OFFSET.get(args.img_size, 0.0), 2),  # ruleid: MLS306
        "top5": round(100.0 * metrics["top5"], 2),
        "mean_class_acc": round(100.0 * cm.compute(), 2),
        "macro_f1": round(100.0 * f1_score(y_true, y_pred, average="micro"), 2),  # ruleid: MLS306
        "weighted_f1": round(100.0 * f1_score(y_true, y_pred, average="weighted"), 2),
        "worst_classes": [
            {"class": ds.classes[i], "acc": round(float(per_class[i]), 3), "support": int(support[i])}
            for i in np.argsort(per_class)[:10]
        ],
    }
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    np.save(os.path.join(args.out, "confusion.npy"), cm.mat)
    save_confusion_png(cm.mat, os.path.join(args.out, "confusion.png"))
    log_path = os.path.join(os.path.dirname(args.checkpoint), "log.jsonl")
    if os.path.exists(log_path):
        plot_curves(log_path, os.path.join(args.out, "curves.png"))
    print(json.dumps({k: v for k, v in summary.items() if k != "worst_classes"}, indent=2))


if __name__ == "__main__":
    main()
