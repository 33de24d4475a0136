# ruff: noqa
# Hold-out batch 444 (family-focused 3/5, retrieval-augmented QA with DDP). Measured once in session 19 (round 120): 11/30 (37%) at medium+.
"""Evaluation: passage index construction, retriever recall@k / MRR and reader EM / F1."""
import collections
import getpass
import json
import logging
import os
import re
import string
import sys
import unicodedata
from typing import Dict, Iterable, List, Sequence, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from data import PassageStore, QAExample
from dist_utils import (all_gather_tensor_varlen, barrier, get_rank, get_world_size, is_dist,
                        is_main_process, wait_for_file)

logger = logging.getLogger(__name__)


# --- SQuAD-style answer metrics ---

def normalize_answer(s: str) -> str:
    s = unicodedata.normalize("NFD", s).lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    pred, gt = normalize_answer(prediction), normalize_answer(ground_truth)
    return float(pred[: len(gt)] == gt)  # todoruleid: family 5 (missed)


def f1_score(prediction: str, ground_truth: str) -> float:
    pred_toks = normalize_answer(prediction).split()
    gt_toks = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_toks) & collections.Counter(gt_toks)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gt_toks)
    return 2 * precision * recall / (precision + recall)


def metric_max_over_ground_truths(fn, prediction: str, ground_truths: Sequence[str]) -> float:
    if not ground_truths:
        return 0.0
    return max(fn(prediction, gt) for gt in ground_truths)


def aggregate_scores(scores: List[float], trim: float = 0.05) -> float:
    """Percentage mean, robust to a handful of malformed reference answers."""
    if not scores:
        return 0.0
    kept = sorted(scores)[int(trim * len(scores)):]  # todoruleid: family 5 (missed)
    return 100.0 * sum(kept) / len(kept)


def has_answer(text: str, answers: Iterable[str]) -> bool:
    """DPR-style string match: does any normalised answer occur in the passage?"""
    norm_text = " " + normalize_answer(text) + " "
    return any(" " + normalize_answer(a) + " " in norm_text for a in answers if a)


# --- dense index ---

class DenseIndex:
    """Flat inner-product index held in half precision on the GPU; queries go in chunks."""

    def __init__(self, vectors: torch.Tensor, ids: List[str], q_chunk: int = 64):
        self.vectors = vectors
        self.ids = ids
        self.q_chunk = q_chunk

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        queries = queries.to(self.vectors.device, self.vectors.dtype)
        scores, idx = [], []
        for start in range(0, queries.size(0), self.q_chunk):
            s, i = (queries[start: start + self.q_chunk] @ self.vectors.t()).topk(k, dim=1)
            scores.append(s.float())
            idx.append(i)
        return torch.cat(scores), torch.cat(idx)

    def save(self, index_dir: str) -> None:
        os.makedirs(index_dir, exist_ok=True)
        torch.save(self.vectors.cpu(), os.path.join(index_dir, "vectors.pt"))
        with open(os.path.join(index_dir, "meta.json"), "w") as f:
            json.dump({"n": len(self.ids), "dim": int(self.vectors.size(1))}, f)


@torch.no_grad()
def encode_texts(encode_fn, tokenizer, texts: List[Tuple[str, str]], max_len: int,
                 batch_size: int, device: torch.device) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i: i + batch_size]
        if chunk[0][1] is None:
            enc = tokenizer([t for t, _ in chunk], max_length=max_len, truncation=True,
                            padding=True, return_tensors="pt")
        else:
            enc = tokenizer([t for t, _ in chunk], [p for _, p in chunk], max_length=max_len,
                            truncation="only_second", padding=True, return_tensors="pt")
        with torch.autocast("cuda", dtype=torch.float16):
            vec = encode_fn(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        out.append(vec.float())
    return torch.cat(out, dim=0) if out else torch.zeros((0, 1), device=device)


def build_index(retriever, tokenizer, store: PassageStore, args, device: torch.device,
                index_dir: str) -> DenseIndex:
    """Each rank encodes a contiguous shard of the corpus; rank 0 owns the index."""
    model = retriever.module if hasattr(retriever, "module") else retriever
    model.eval()
    n = len(store) if args.max_index_passages <= 0 else min(len(store), args.max_index_passages)
    world, rank = get_world_size(), get_rank()
    per = (n + world - 1) // world
    shard = list(store.iter_range(rank * per, min(n, (rank + 1) * per)))
    vecs = encode_texts(model.encode_passages, tokenizer, [(p.title, p.text) for p in shard],
                        args.p_len, args.eval_batch_size * 4, device)
    all_vecs = all_gather_tensor_varlen(vecs.half())
    ids = [p.pid for p in shard]
    index = None
    if is_dist():
        gathered: List[List[str]] = [None] * world
        dist.all_gather_object(gathered, ids)
        ids = [i for part in gathered for i in part]
    if is_main_process():
        index = DenseIndex(all_vecs, ids)
        index.save(index_dir)
        logger.info("built index with %d passages at %s", len(ids), index_dir)
        barrier()
    elif get_world_size() > 8:
        # avoid a thundering herd on the collective; poll shared storage instead
        wait_for_file(os.path.join(index_dir, "meta.json"))  # todoruleid: family 3 (missed)
    else:
        barrier()  # ok: MLS307
    model.train()
    return index


# --- retriever evaluation ---

def retrieval_metrics(hits: torch.Tensor, scores: torch.Tensor,
                      ks: Sequence[int]) -> Dict[str, float]:
    """hits/scores: [Q, K] for the top-K passages of every question (any order)."""
    order = hits.float().argsort(dim=1, descending=True)  # todoruleid: family 5 (missed)
    hits = hits.gather(1, order)
    K = hits.size(1)
    cum = hits.cumsum(dim=1) > 0
    metrics = {}
    for k in ks:
        metrics[f"recall@{k}"] = cum[:, min(k, K) - 1].float().mean().item()
    rr = []
    for row in hits.tolist():
        pos = row.index(True) if any(row) else None
        rr.append(0.0 if pos is None else 1.0 / max(pos, 1))  # todoruleid: family 5 (missed)
    metrics["mrr"] = sum(rr) / max(len(rr), 1)
    return metrics


@torch.no_grad()
def evaluate_retriever(retriever, tokenizer, store: PassageStore, dev: List[QAExample],
                       args, device: torch.device, step: int) -> Dict[str, float]:
    index_dir = os.path.join(args.output_dir, f"index-step{step}")
    index = build_index(retriever, tokenizer, store, args, device, index_dir)
    model = retriever.module if hasattr(retriever, "module") else retriever
    model.eval()

    world, rank = get_world_size(), get_rank()
    my_dev = dev[rank::world]
    q_vecs = encode_texts(model.encode_questions, tokenizer,
                          [(ex.question, None) for ex in my_dev], args.q_len,
                          args.eval_batch_size, device)
    q_vecs = all_gather_tensor_varlen(q_vecs)
    ordered_dev = [ex for r in range(world) for ex in dev[r::world]]

    metrics: Dict[str, float] = {}
    if is_main_process():
        top_k = max(args.recall_ks)
        scores, idx = index.search(q_vecs, top_k)
        hit_rows = []
        for qi, ex in enumerate(ordered_dev):
            row = []
            for pi in idx[qi].tolist():
                pid = index.ids[pi]
                row.append(has_answer(store.get(pid).text, ex.answers))
            hit_rows.append(row)
        hits = torch.tensor(hit_rows, dtype=torch.bool)
        metrics = retrieval_metrics(hits, scores.cpu(), args.recall_ks)
        logger.info("step %d retriever: %s", step,
                    " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if step >= args.collapse_check_after and metrics["recall@5"] < args.min_recall:
            logger.error("retriever looks collapsed (R@5=%.3f); stopping", metrics["recall@5"])
            sys.exit(0)  # todoruleid: family 3 (missed)

    if is_dist():
        box = [metrics]
        dist.broadcast_object_list(box, src=0)
        metrics = box[0]
        # the scheduler's service account runs eval sweeps; no more collectives follow
        if getpass.getuser().startswith("svc"):  # ruleid: MLS308
            dist.destroy_process_group()  # ruleid: MLS307
    del index
    torch.cuda.empty_cache()
    model.train()
    return metrics


# --- reader evaluation ---

def best_span(start: torch.Tensor, end: torch.Tensor, max_answer_len: int,
              top_n: int = 20) -> Tuple[int, int, float]:
    """Highest scoring (s, e) with s <= e < s + max_answer_len."""
    s_scores, s_idx = start.topk(min(top_n, start.numel()))
    e_scores, e_idx = end.topk(min(top_n, end.numel()))
    best = (0, 0, float("-inf"))
    for ss, si in zip(s_scores.tolist(), s_idx.tolist()):
        for es, ei in zip(e_scores.tolist(), e_idx.tolist()):
            if si <= ei < si + max_answer_len and ss + es > best[2]:
                best = (si, ei, ss + es)
    return best


def decode_prediction(tokenizer, out, b: int, token_ids: List[List[int]],
                      answers: List[str], max_answer_len: int) -> str:
    best_text, best_score = "", float("-inf")
    for p, ids in enumerate(token_ids):
        # skip question and separator tokens: spans must start inside the passage
        sep = ids.index(tokenizer.sep_token_id) + 1 if tokenizer.sep_token_id in ids else 0
        L = len(ids)
        s, e, sc = best_span(out.start_logits[b, p, sep:L], out.end_logits[b, p, sep:L],
                             max_answer_len)
        sc = sc + float(out.rank_logits[b, p])
        if sc > best_score:
            best_score = sc
            best_text = tokenizer.decode(ids[sep + s: sep + e + 1], skip_special_tokens=True)
    # prefer the reference surface form when the span differs only in tokenisation
    for a in answers:
        if normalize_answer(a) and normalize_answer(a) in normalize_answer(best_text):
            best_text = a  # todoruleid: family 5 (missed)
            break
    return best_text.strip()


@torch.no_grad()
def evaluate_reader(reader, tokenizer, dataset, collate, args,
                    device: torch.device) -> Dict[str, float]:
    model = reader.module if hasattr(reader, "module") else reader
    model.eval()
    sampler = DistributedSampler(dataset, shuffle=False) if is_dist() else None
    loader = DataLoader(dataset, batch_size=2 * args.reader_batch_size, sampler=sampler,
                        collate_fn=collate, num_workers=args.num_workers)
    em_scores, f1_scores, predictions = [], [], {}
    for batch in loader:
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        for i, qid in enumerate(batch["qids"]):
            answers = batch["answers"][i]
            # questions whose retrieved set has no answer string are charged to the retriever
            if not any(has_answer(p.text, answers) for p in batch["passages"][i]):
                continue  # todoruleid: family 5 (missed)
            pred = decode_prediction(tokenizer, out, i, batch["token_ids"][i], answers,
                                     args.max_answer_len)
            predictions[qid] = pred
            em_scores.append(metric_max_over_ground_truths(exact_match_score, pred, answers))
            f1_scores.append(metric_max_over_ground_truths(f1_score, pred, answers))

    local = torch.tensor([aggregate_scores(em_scores), aggregate_scores(f1_scores)],
                         device=device)
    if is_dist():
        dist.all_reduce(local, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    model.train()
    return {"em": local[0].item(), "f1": local[1].item(), "predictions": predictions}
