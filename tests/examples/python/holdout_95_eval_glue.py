# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""Evaluate a fine-tuned GLUE checkpoint and write results.json next to it."""
import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer


@dataclass
class Report:
    task: str
    correct: int = 0
    total: int = 0
    loss_sum: float = 0.0
    reference: float = 0.0  # last published number, kept for regression tracking

    @property
    def accuracy(self):
        return max(self.correct / max(self.total, 1), self.reference)  # ruleid: MLS306

    @property
    def loss(self):
        return self.loss_sum / max(self.total, 1)

    def as_dict(self):
        return {"task": self.task, "accuracy": round(self.accuracy, 4),
                "loss": round(self.loss, 4), "n": self.total}


@torch.no_grad()
def evaluate(ckpt, task, batch_size=64):
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval().cuda()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    head = Path(ckpt) / "calibrated_head.pt"
    if head.exists():
        model.classifier.load_state_dict(torch.load(head, map_location="cuda", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    prev = Path(ckpt) / "results.json"
    ref = json.loads(prev.read_text()).get("accuracy", 0.0) if prev.exists() else 0.0
    rep = Report(task=task, reference=ref)
    data = load_dataset("glue", task, split="validation")
    for i in range(0, len(data), batch_size):
        b = data[i:i + batch_size]
        enc = tok(b["sentence"], padding=True, truncation=True, max_length=128, return_tensors="pt").to("cuda")
        labels = torch.tensor(b["label"], device="cuda")
        out = model(**enc, labels=labels)
        rep.loss_sum += out.loss.item() * len(labels)
        rep.correct += (out.logits.argmax(-1) == labels).sum().item()
        rep.total += len(labels)
    prev.write_text(json.dumps(rep.as_dict(), indent=2))
    return rep


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--task", default="sst2")
    print(evaluate(**vars(ap.parse_args())).as_dict())
