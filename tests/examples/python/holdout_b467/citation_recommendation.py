# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Triplet dataset for local citation recommendation (query context, cited paper, negative)."""
import json
import random
from collections import defaultdict

from torch.utils.data import Dataset


class CitationTripletDataset(Dataset):
    def __init__(self, contexts_path, papers_path, word_dropout=0.1, hard_neg_prob=0.5):
        with open(papers_path) as fh:
            self.papers = {p["id"]: p for p in map(json.loads, fh)}
        with open(contexts_path) as fh:
            self.contexts = [json.loads(line) for line in fh]
        self.paper_ids = list(self.papers)
        self.word_dropout = word_dropout
        self.hard_neg_prob = hard_neg_prob
        self.cited = defaultdict(set)
        for ctx in self.contexts:
            self.cited[ctx["source_id"]].add(ctx["cited_id"])
        self.hard_pool = {src: sorted(ids) for src, ids in self.cited.items()}

    def __len__(self):
        return len(self.contexts)

    def _text(self, pid):
        p = self.papers[pid]
        return f"{p['title']} [SEP] {p.get('abstract', '')}"

    def _augment(self, text):
        words = text.split()
        kept = [w for w in words if random.random() > self.word_dropout]  # ok: MLS309
        return " ".join(kept) if kept else text

    def _negative(self, source_id, cited_id):
        if random.random() < self.hard_neg_prob and len(self.hard_pool.get(source_id, ())) > 1:
            return random.choice([p for p in self.hard_pool[source_id] if p != cited_id])  # ruleid: MLS309
        while True:
            cand = random.choice(self.paper_ids)
            if cand not in self.cited[source_id]:
                return cand

    def __getitem__(self, idx):
        ctx = self.contexts[idx]
        neg_id = self._negative(ctx["source_id"], ctx["cited_id"])
        return {
            "query": self._augment(ctx["text"]),
            "positive": self._text(ctx["cited_id"]),
            "negative": self._text(neg_id),
        }
