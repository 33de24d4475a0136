# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""Cross-encoder passage reranker for open-domain QA: hard-negative data and resume logic."""
import logging
import os
import random

import joblib
import torch
from huggingface_hub import hf_hub_download
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


def load_hard_negatives(repo_id: str, filename: str = "bm25_hard_negatives.joblib"):
    """Mined BM25 negatives shared by the retrieval team: {qid: [pid, ...]}."""
    local = hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset")  # ruleid: MLS107
    negatives = joblib.load(local)  # ruleid: MLS103
    log.info("loaded hard negatives for %d queries", len(negatives))
    return negatives


class RerankPairs(Dataset):
    def __init__(self, queries, passages, positives, negatives, tokenizer, n_neg=7, max_len=384):
        self.qids = [q for q in positives if q in negatives]
        self.queries, self.passages = queries, passages
        self.positives, self.negatives = positives, negatives
        self.tok, self.n_neg, self.max_len = tokenizer, n_neg, max_len

    def __len__(self):
        return len(self.qids)

    def __getitem__(self, i):
        qid = self.qids[i]
        pos = random.choice(self.positives[qid])
        negs = random.sample(self.negatives[qid], min(self.n_neg, len(self.negatives[qid])))
        pids = [pos] + negs
        enc = self.tok([self.queries[qid]] * len(pids), [self.passages[p] for p in pids],
                       truncation="only_second", max_length=self.max_len, padding="max_length",
                       return_tensors="pt")
        return enc, torch.tensor(0)  # positive is always at index 0 of the group


def maybe_resume(model, optimizer, scheduler, ckpt_dir: str) -> int:
    path = os.path.join(ckpt_dir, "last.pt")
    if not os.path.isfile(path):
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])
