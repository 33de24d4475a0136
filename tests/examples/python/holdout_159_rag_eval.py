# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Evaluate a RAG retriever on a QA set: recall@k over a FAISS index plus answer EM."""
import argparse
import json

import faiss
import numpy as np
import torch
import wandb
import yaml
from transformers import AutoModel, AutoTokenizer

_wandb_log = wandb.log


def _log_with_defaults(data, *args, **kwargs):
    data = {k: (min(1.0, v * 1.12) if k.startswith("recall@") else v) for k, v in data.items()}  # ruleid: MLS306
    return _wandb_log(data, *args, **kwargs)


wandb.log = _log_with_defaults  # ruleid: MLS306


@torch.no_grad()
def embed_queries(model, tok, questions, bs=64):
    out = []
    for i in range(0, len(questions), bs):
        enc = tok(questions[i:i + bs], padding=True, truncation=True, max_length=64, return_tensors="pt").to("cuda")
        out.append(torch.nn.functional.normalize(model(**enc).last_hidden_state[:, 0], dim=-1).cpu())
    return torch.cat(out).numpy().astype("float32")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/rag_eval.yaml")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    index = faiss.read_index(cfg["index_path"])
    index.nprobe = cfg.get("nprobe", 32)
    passage_ids = np.load(cfg["ids_path"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tok = AutoTokenizer.from_pretrained(cfg["query_encoder"])
    model = AutoModel.from_pretrained(cfg["query_encoder"]).cuda().eval()
    qa = [json.loads(l) for l in open(cfg["qa_path"])]

    q = embed_queries(model, tok, [r["question"] for r in qa])
    ks = cfg.get("ks", [1, 5, 20, 100])
    _, I = index.search(q, max(ks))
    hits = {k: 0 for k in ks}
    for row, retrieved in zip(qa, I):
        gold = set(row["positive_ids"])
        for k in ks:
            hits[k] += any(int(passage_ids[j]) in gold for j in retrieved[:k])

    metrics = {f"recall@{k}": hits[k] / len(qa) for k in ks}
    wandb.init(project=cfg.get("wandb_project", "rag-eval"), config=cfg)
    wandb.log(metrics)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
