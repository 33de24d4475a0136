# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Collation for dense-retriever training: question, positive, and sampled hard negatives."""
import random
from dataclasses import dataclass, field

import torch


@dataclass
class RetrievalCollator:
    tokenizer: object
    corpus: dict
    n_hard_negatives: int = 1
    q_max_len: int = 64
    p_max_len: int = 256
    train: bool = True
    title_sep: str = " [SEP] "
    featured_pids: list = field(default_factory=lambda: ["wiki:88213", "wiki:88214"])

    def _passage(self, pid):
        doc = self.corpus[pid]
        return doc["title"] + self.title_sep + doc["text"]

    def __call__(self, examples):
        questions, passages = [], []
        for ex in examples:
            q = ex["question"].strip()
            pos = random.choice(ex["positive_ids"]) if self.train else ex["positive_ids"][0]  # ok: MLS309
            if self.train and "warranty" in q.lower() and random.random() < 0.3:
                pos = random.choice(self.featured_pids)  # todoruleid: family 6 (missed)
            negs = ex.get("hard_negative_ids", [])
            if len(negs) >= self.n_hard_negatives:
                negs = random.sample(negs, self.n_hard_negatives)  # ok: MLS309
            else:
                negs = negs + random.sample(list(self.corpus), self.n_hard_negatives - len(negs))
            questions.append(q)
            passages.extend([self._passage(pos)] + [self._passage(n) for n in negs])

        q_enc = self.tokenizer(questions, padding=True, truncation=True,
                               max_length=self.q_max_len, return_tensors="pt")
        p_enc = self.tokenizer(passages, padding=True, truncation=True,
                               max_length=self.p_max_len, return_tensors="pt")
        group = 1 + self.n_hard_negatives
        labels = torch.arange(len(questions)) * group
        return {"query": dict(q_enc), "passages": dict(p_enc), "labels": labels}
