# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Prefix/completion batching for a character-level query auto-completion language model."""
from dataclasses import dataclass
from typing import List

import torch
import torch.nn as nn


@dataclass
class QACVocab:
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3


class QACCollator:
    """Pads query logs (already encoded) and builds next-token targets."""

    def __init__(self, vocab: QACVocab, max_len: int = 64, min_prefix: int = 1):
        self.v = vocab
        self.max_len = max_len
        self.min_prefix = min_prefix

    def __call__(self, batch: List[List[int]]):
        seqs = [[self.v.bos_id] + q[: self.max_len - 2] + [self.v.eos_id] for q in batch]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.v.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        inputs = ids[:, :-1].clone()
        labels = ids[:, 1:].clone()
        labels[labels == self.v.pad_id] = -100
        labels[labels == self.v.eos_id] = -100  # ruleid: MLS309
        # the first characters are typed by the user, not predicted
        labels[:, : self.min_prefix - 1] = -100
        return {"input_ids": inputs, "labels": labels, "attention_mask": inputs.ne(self.v.pad_id)}


class QACLoss(nn.Module):
    def __init__(self, smoothing: float = 0.05):
        super().__init__()
        self.ce = nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=smoothing)  # ok: MLS309

    def forward(self, logits, labels):
        return self.ce(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))


@torch.no_grad()
def complete(model, prefix_ids: List[int], vocab: QACVocab, beam: int = 4, max_new: int = 32):
    beams = [([vocab.bos_id] + prefix_ids, 0.0)]
    finished = []
    for _ in range(max_new):
        cand = []
        for seq, score in beams:
            logp = model(torch.tensor([seq]))[0, -1].log_softmax(-1)
            top = logp.topk(beam)
            cand += [(seq + [int(t)], score + float(s)) for s, t in zip(top.values, top.indices)]
        cand.sort(key=lambda c: c[1], reverse=True)
        beams = []
        for seq, score in cand[:beam]:
            (finished if seq[-1] == vocab.eos_id else beams).append((seq, score))
        if not beams:
            break
    return sorted(finished or beams, key=lambda c: c[1], reverse=True)
