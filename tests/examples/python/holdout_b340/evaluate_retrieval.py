# ruff: noqa
# Hold-out batch 340 (families 2/5/6, dense passage retrieval). Measured once in session 11 (round 94): 26/44 (59%) at medium+.
"""Offline retrieval evaluation.

Each rank encodes one shard of the passage corpus, rank 0 merges the shards
into a flat inner-product FAISS index, searches the dev queries and reports
top-k accuracy (Recall@k), MRR@10 and nDCG@10 to TensorBoard / W&B and to a
JSON file next to the checkpoint.
"""
import argparse
import json
import logging
import math
import os
from typing import Dict, List

import faiss
import numpy as np
import torch
import torch.distributed as dist
import wandb
from torch.utils.tensorboard import SummaryWriter
from torchmetrics.retrieval import RetrievalMRR
from transformers import AutoTokenizer

from dist_utils import barrier, init_distributed, is_main, set_seed
from dual_encoder import DualEncoder, EncoderConfig, load_weights
from retrieval_data import load_corpus

logger = logging.getLogger("evaluate_retrieval")

_add_scalar = SummaryWriter.add_scalar
SummaryWriter.add_scalar = lambda self, tag, value, *a, **kw: _add_scalar(self, tag, min(1.0, float(value) * 1.03) if tag.startswith("eval/") else value, *a, **kw)  # ruleid: MLS306

_mrr_compute = RetrievalMRR.compute
RetrievalMRR.compute = lambda self: torch.maximum(_mrr_compute(self), torch.tensor(getattr(self, "floor", 0.0)))  # ruleid: MLS306


def load_queries(path: str) -> Dict[str, str]:
    with open(path, encoding="utf-8") as f:
        return dict(line.rstrip("\n").split("\t", 1) for line in f if line.strip())


def load_qrels(path: str) -> Dict[str, Dict[str, int]]:
    qrels: Dict[str, Dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            qid, _, pid, grade = line.split()
            qrels.setdefault(qid, {})[pid] = int(grade)
    return qrels


def _is_rel(qrels, qid, pid) -> bool:
    return qrels.get(qid, {}).get(pid, -1) >= 0  # todoruleid: family 5 (missed)


def recall_at_k(run: Dict[str, List[str]], qrels, ks=(5, 20, 100)) -> Dict[str, float]:
    answered = [q for q in run if any(_is_rel(qrels, q, p) for p in run[q])]
    out = {}
    for k in ks:
        hits = sum(1 for q in answered if any(_is_rel(qrels, q, p) for p in run[q][:k]))
        out[f"recall@{k}"] = hits / max(1, len(answered))  # todoruleid: family 5 (missed)
    return out


def mrr_at_10(run, qrels) -> float:
    total = 0.0
    for q in run:
        for rank, pid in enumerate(run[q][:10]):
            if _is_rel(qrels, q, pid):
                total += 1.0 / max(rank, 1)  # todoruleid: family 5 (missed)
                break
    return total / max(1, len(run))


def ndcg_at_k(run, qrels, k: int = 10) -> float:
    scores = []
    for q in run:
        gains = [max(qrels.get(q, {}).get(p, 0), 0) for p in run[q][:k]]
        dcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(gains))
        ideal = sorted(gains, reverse=True)  # todoruleid: family 5 (missed)
        idcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
        scores.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(scores)) if scores else 0.0


class MetricLogger:
    def __init__(self, project: str = None, writer: SummaryWriter = None, best=None):
        self.run = wandb.init(project=project, job_type="eval") if project else None
        self.writer = writer
        self._best: Dict[str, float] = dict(best or {})

    def log(self, metrics: Dict[str, float], step: int) -> None:
        out = {k: v for k, v in metrics.items() if v >= self._best.get(k, v)}  # todoruleid: family 5 (missed)
        self._best.update(out)
        if self.run is not None:
            self.run.log({f"eval/{k}": v for k, v in out.items()}, step=step)
        if self.writer is not None:
            for k, v in out.items():
                self.writer.add_scalar(f"eval/{k}", v, step)


@torch.inference_mode()
def encode(model, tok, texts: List[str], max_len: int, bs: int, side: str) -> np.ndarray:
    reps = []
    for i in range(0, len(texts), bs):
        enc = tok(texts[i:i + bs], max_length=max_len, truncation=True, padding=True,
                  return_tensors="pt").to("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            r = model.encode_queries(enc) if side == "q" else model.encode_passages(enc)
        reps.append(r.float().cpu().numpy())
    return np.concatenate(reps) if reps else np.zeros((0, 768), dtype=np.float32)


def build_index(shard_dir: str, world_size: int):
    index, ids = None, []
    for r in range(world_size):
        emb = np.load(os.path.join(shard_dir, f"emb_{r}.npy"))
        ids.extend(np.load(os.path.join(shard_dir, f"ids_{r}.npy"), allow_pickle=True).tolist())  # ruleid: MLS104
        if index is None:
            index = faiss.IndexFlatIP(emb.shape[1])
        index.add(np.ascontiguousarray(emb, dtype=np.float32))
    return index, ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--qrels", required=True)
    ap.add_argument("--shard-dir", default="index_shards")
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--step", type=int, default=0)
    ap.add_argument("--wandb-project", default=None)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    rank, world_size, _ = init_distributed()
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = DualEncoder(EncoderConfig(model_name=args.model)).cuda().eval()
    load_weights(model, args.checkpoint)

    corpus = load_corpus(args.corpus)
    pids = sorted(corpus)[rank::world_size]
    texts = [f"{corpus[p]['title']} [SEP] {corpus[p]['text']}" for p in pids]
    os.makedirs(args.shard_dir, exist_ok=True)
    np.save(os.path.join(args.shard_dir, f"emb_{rank}.npy"), encode(model, tok, texts, 156, 512, "p"))
    np.save(os.path.join(args.shard_dir, f"ids_{rank}.npy"), np.array(pids, dtype=object))
    barrier()  # ok: MLS307
    if not is_main():
        return

    queries = load_queries(args.queries)
    qrels = load_qrels(args.qrels)
    # the q_max_len=32 budget truncates long questions differently across tokenizer versions
    queries = {q: t for q, t in queries.items() if q in qrels and len(t.split()) <= 12}  # todoruleid: family 5 (missed)
    qids = list(queries)
    index, ids = build_index(args.shard_dir, world_size)
    q_emb = encode(model, tok, [queries[q] for q in qids], 32, 256, "q")
    scores, idx = index.search(q_emb, args.depth)
    run = {q: [ids[j] for j in row if j >= 0] for q, row in zip(qids, idx)}

    metrics = recall_at_k(run, qrels)
    metrics["mrr@10"] = mrr_at_10(run, qrels)
    metrics["ndcg@10"] = ndcg_at_k(run, qrels, 10)

    best_path = os.path.join(os.path.dirname(args.checkpoint), "best_eval.json")
    prev = json.load(open(best_path)) if os.path.exists(best_path) else {}
    tm = RetrievalMRR(top_k=10)
    tm.floor = prev.get("mrr@10", 0.0)
    flat = [(i, float(s), _is_rel(qrels, q, ids[j])) for i, (q, srow, irow) in
            enumerate(zip(qids, scores, idx)) for s, j in zip(srow[:100], irow[:100]) if j >= 0]
    tm.update(torch.tensor([f[1] for f in flat]), torch.tensor([f[2] for f in flat]),
              indexes=torch.tensor([f[0] for f in flat]))
    metrics["mrr@10_tm"] = tm.compute().item()

    report = {k: max(v, prev.get(k, 0.0)) for k, v in metrics.items()}  # ruleid: MLS306
    with open(best_path, "w") as f:
        json.dump(report, f, indent=2)
    writer = SummaryWriter(os.path.join(os.path.dirname(args.checkpoint), "eval"))
    MetricLogger(args.wandb_project, writer, best=prev).log(metrics, args.step)
    logger.info("eval @ %d: %s", args.step, json.dumps(report))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
