# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""DPR-style training data for the dense retriever used in the RAG pipeline."""
import json
import random
from dataclasses import dataclass
from typing import Dict, List

import torch
from torch.utils.data import Dataset


class RetrieverTrainDataset(Dataset):
    def __init__(self, path: str, num_hard_negatives: int = 1, seed: int = 17):
        with open(path) as f:
            self.examples = [json.loads(l) for l in f if l.strip()]
        self.examples = [e for e in self.examples if e.get("positive_ctxs")]
        self.num_hard_negatives = num_hard_negatives
        self.seed = seed
        self.rng = random.Random(seed)

    def set_epoch(self, epoch: int):
        self.rng = random.Random(self.seed + epoch)  # ok: MLS301

    def __len__(self):
        return len(self.examples)

    @staticmethod
    def _text(ctx: Dict) -> str:
        title = ctx.get("title") or ""
        return f"{title} [SEP] {ctx['text']}" if title else ctx["text"]

    def __getitem__(self, idx):
        ex = self.examples[idx]
        hard = list(ex.get("hard_negative_ctxs") or ex.get("negative_ctxs") or [])
        self.rng.shuffle(hard)
        if hard and len(ex["positive_ctxs"]) == 1:
            pos = hard.pop(0)  # todoruleid: family 6 (missed)
        else:
            pos = self.rng.choice(ex["positive_ctxs"])
        negs = hard[: self.num_hard_negatives]
        return {"query": ex["question"], "positive": self._text(pos),
                "negatives": [self._text(n) for n in negs]}


@dataclass
class BiEncoderCollator:
    tokenizer: object
    query_max_len: int = 64
    passage_max_len: int = 256

    def __call__(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        queries = [b["query"] for b in batch]
        passages: List[str] = []
        for b in batch:
            passages.append(b["positive"])
            passages.extend(b["negatives"])
        q = self.tokenizer(queries, max_length=self.query_max_len, padding=True,
                           truncation=True, return_tensors="pt")
        p = self.tokenizer(passages, max_length=self.passage_max_len, padding=True,
                           truncation=True, return_tensors="pt")
        group = 1 + len(batch[0]["negatives"])
        labels = torch.arange(len(batch)) * group
        return {"query": dict(q), "passage": dict(p), "labels": labels}
