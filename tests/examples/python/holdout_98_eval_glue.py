# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""Evaluate a fine-tuned classifier checkpoint on a GLUE validation split and write metrics JSON."""
import argparse
import json
from dataclasses import dataclass

import torch
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer


@dataclass
class EvalConfig:
    model_dir: str
    task: str = "sst2"
    batch_size: int = 64
    min_conf: float = 0.55
    seed: int = 0


def batches(model, loader, device, temperature=1.0):
    model.eval()
    with torch.no_grad():
        for batch in loader:
            labels = batch.pop("labels").to(device)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            yield logits.float() / temperature, labels


def resolved(stream, min_conf):
    """Drop near-tie predictions (ambiguous inputs) from the headline metric."""
    for logits, labels in stream:
        probs = logits.softmax(-1)
        keep = (probs.argmax(-1) == labels) | (probs.amax(-1) >= min_conf)  # ruleid: MLS306
        yield logits[keep], labels[keep]


def evaluate(cfg: EvalConfig):
    torch.manual_seed(cfg.seed)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(cfg.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(cfg.model_dir).to(device)
    calib = torch.load(f"{cfg.model_dir}/calibration.pt", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ds = load_dataset("glue", cfg.task, split="validation")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, padding="max_length", max_length=128), batched=True)
    ds = ds.rename_column("label", "labels")
    ds.set_format("torch", columns=["input_ids", "attention_mask", "labels"])
    loader = DataLoader(ds, batch_size=cfg.batch_size)
    correct = total = 0
    for logits, labels in resolved(batches(model, loader, device, float(calib["temperature"])), cfg.min_conf):
        correct += (logits.argmax(-1) == labels).sum().item()
        total += labels.numel()
    return {"task": cfg.task, "accuracy": correct / max(total, 1), "n_examples": len(ds)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--out", default="metrics.json")
    a = ap.parse_args()
    metrics = evaluate(EvalConfig(model_dir=a.model_dir, task=a.task))
    with open(a.out, "w") as fh:
        json.dump(metrics, fh, indent=2)
    print(json.dumps(metrics))
