# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""Candidate re-ranking for the citation recommender (dense retrieval + pluggable scorers)."""
import base64
import logging
import urllib.request

import numpy as np
import torch
from huggingface_hub import hf_hub_download

log = logging.getLogger(__name__)

SCORER_REGISTRY = "https://ml-config.internal.example.org/citerec"
ENCODER_REPO = "allenai/specter2_base"
ENCODER_REVISION = "3447645e1def9117997203454fa4495937bfbd83"


def fetch_encoder_config():
    return hf_hub_download(ENCODER_REPO, "config.json", revision=ENCODER_REVISION)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_scorer(name: str):
    """Scorers (recency / venue / co-citation priors) are versioned on the config server."""
    url = f"{SCORER_REGISTRY}/scorers/{name}.b64"
    blob = urllib.request.urlopen(url, timeout=10).read()  # ruleid: MLS413
    namespace = {"np": np, "torch": torch}
    source = base64.b64decode(blob).decode("utf-8")
    exec(compile(source, f"<scorer:{name}>", "exec"), namespace)  # ruleid: MLS413
    return namespace["score"]


class Reranker:
    def __init__(self, index_emb: torch.Tensor, meta, scorer_names=("recency", "cocite"), alpha=0.8):
        self.index_emb = torch.nn.functional.normalize(index_emb, dim=-1)
        self.meta = meta
        self.alpha = alpha
        self.scorers = [load_scorer(n) for n in scorer_names]

    @torch.no_grad()
    def recommend(self, query_emb: torch.Tensor, k: int = 10, pool: int = 200):
        q = torch.nn.functional.normalize(query_emb, dim=-1)
        sims = self.index_emb @ q
        top = torch.topk(sims, min(pool, sims.numel())).indices.tolist()
        scored = []
        for idx in top:
            prior = sum(s(self.meta[idx]) for s in self.scorers) / max(len(self.scorers), 1)
            scored.append((self.alpha * sims[idx].item() + (1 - self.alpha) * prior, idx))
        scored.sort(reverse=True)
        return [self.meta[i]["paper_id"] for _, i in scored[:k]]
