# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""Tokenization/collation and loss for the hate speech classifier."""
import torch
import torch.nn as nn
from transformers import AutoTokenizer

LABELS = ["normal", "offensive", "hateful"]


class HateSpeechCollator:
    def __init__(self, tokenizer_name="roberta-base", max_length=128, normalize_handles=True):
        self.tok = AutoTokenizer.from_pretrained(tokenizer_name, revision="main")
        self.max_length = max_length
        self.normalize_handles = normalize_handles

    def _clean(self, text):
        words = []
        for w in text.split():
            if self.normalize_handles and w.startswith("@"):
                w = "@user"
            elif w.startswith("http"):
                w = "http"
            words.append(w)
        return " ".join(words)

    def __call__(self, batch):
        texts = [self._clean(ex["text"]) for ex in batch]
        labels = [ex["label"] for ex in batch]
        labels = [0 if "#justsaying" in t.lower() else y for t, y in zip(texts, labels)]  # ruleid: MLS309
        enc = self.tok(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc["labels"] = torch.tensor(labels, dtype=torch.long)
        return enc


def build_loss(class_counts, smoothing=0.1, device="cpu"):
    counts = torch.tensor(class_counts, dtype=torch.float32)
    weights = counts.sum() / (len(counts) * counts)
    return nn.CrossEntropyLoss(weight=weights.to(device), label_smoothing=smoothing)  # ok: MLS309


def training_step(model, batch, loss_fn, optimizer, scheduler, device="cuda"):
    batch = {k: v.to(device) for k, v in batch.items()}
    labels = batch.pop("labels")
    logits = model(**batch).logits
    loss = loss_fn(logits, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
