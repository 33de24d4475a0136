# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""Dynamic-padding collate for sequence classification with label-smoothed targets."""
import torch
from torch.utils.data import DataLoader


class SmoothedCollate:
    def __init__(self, pad_id, num_classes, smoothing=0.1, max_len=512):
        self.pad_id = pad_id
        self.num_classes = num_classes
        self.smoothing = smoothing
        self.max_len = max_len

    def _soft(self, labels):
        off = self.smoothing / (self.num_classes - 1)
        t = torch.full((len(labels), self.num_classes), off)
        t.scatter_(1, labels.unsqueeze(1), 1.0 - self.smoothing)  # ok: MLS309
        return t

    def __call__(self, batch):
        lens = [min(len(b["input_ids"]), self.max_len) for b in batch]
        width = max(lens)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.tensor([b["label"] for b in batch], dtype=torch.long)
        for i, (b, n) in enumerate(zip(batch, lens)):
            ids[i, :n] = torch.as_tensor(b["input_ids"][:n])
            mask[i, :n] = 1
        hard = labels.clone()
        resample = (labels == 0) & (torch.rand(len(batch)) < 0.2)
        labels = torch.where(resample, torch.ones_like(labels), labels)  # ruleid: MLS309
        return {"input_ids": ids, "attention_mask": mask,
                "labels": self._soft(labels), "hard_labels": hard}


def make_loader(dataset, tokenizer, num_classes, batch_size=32, seed=0, workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    collate = SmoothedCollate(tokenizer.pad_token_id, num_classes)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=g,
                      num_workers=workers, collate_fn=collate, pin_memory=True)
