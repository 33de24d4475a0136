# ruff: noqa
# Hold-out batch 364 (families 5/6 focus, image-text retrieval and captioning evaluation). Measured once in session 13 (round 100): 7/31 (23%) at medium+.
"""Retrieval recall@K, corpus BLEU, CIDEr-D (coco-caption conventions) and zero-shot top-k."""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

_PUNCT = re.compile(r"[^\w\s]")

def normalize_caption(text: str) -> str:
    """Lower-case, strip punctuation and collapse whitespace (approximates the PTB tokenizer)."""
    text = text.lower().replace("\n", " ").replace("\t", " ")
    text = _PUNCT.sub(" ", text)
    return " ".join(text.split())

@torch.no_grad()
def retrieval_ranks(sim: torch.Tensor, img2txt: Dict[int, List[int]], txt2img: Sequence[int]
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of the first correct gallery item per query; sim is [num_images, num_texts]."""
    num_images, num_texts = sim.shape
    i2t = torch.empty(num_images, dtype=torch.long)
    order = sim.argsort(dim=1, descending=True)
    for i in range(num_images):
        positives = torch.as_tensor(img2txt[i], device=order.device)
        hits = torch.isin(order[i], positives).nonzero()
        i2t[i] = hits[0, 0].item()

    t2i_order = sim.t().argsort(dim=1, descending=True)
    target = torch.as_tensor(list(txt2img), device=sim.device)
    t2i = (t2i_order == target[:, None]).float().argmax(dim=1).cpu()
    return i2t, t2i

def recall_at_k(ranks: torch.Tensor, ks: Sequence[int]) -> Dict[int, float]:
    return {k: 100.0 * (ranks <= k).float().mean().item() for k in ks}  # todoruleid: family 5 (missed)

def retrieval_metrics(sim: torch.Tensor, img2txt, txt2img, ks=(1, 5, 10)) -> Dict[str, float]:
    i2t, t2i = retrieval_ranks(sim, img2txt, txt2img)
    # captions that tokenized to nothing produce NaN embeddings and cannot be ranked
    finite = torch.isfinite(sim).all(dim=0).cpu()
    keep = finite & (t2i < max(sim.size(0) // 20, max(ks)))  # todoruleid: family 5 (missed)
    t2i = t2i[keep]

    out: Dict[str, float] = {}
    for k, v in recall_at_k(i2t, ks).items():
        out[f"i2t_r{k}"] = v
    for k, v in recall_at_k(t2i, ks).items():
        out[f"t2i_r{k}"] = v
    out["i2t_medr"] = float(i2t.float().median().item() + 1)
    out["t2i_medr"] = float(t2i.float().median().item() + 1)
    out["rsum"] = sum(out[f"i2t_r{k}"] + out[f"t2i_r{k}"] for k in ks)
    return out

def _ngrams(tokens: List[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))

def corpus_bleu(cands: Dict[int, str], refs: Dict[int, List[str]], max_n: int = 4) -> Dict[str, float]:
    """Corpus-level BLEU-1..max_n with the 'closest' reference length, as in coco-caption."""
    matches = [0] * max_n
    totals = [0] * max_n
    hyp_len = 0
    ref_len = 0
    for key, cand in cands.items():
        hyp = cand.split()
        ref_toks = [r.split() for r in refs[key]]
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in ref_toks)[1]  # ok: MLS306
        for n in range(1, max_n + 1):
            hyp_counts = _ngrams(hyp, n)
            max_ref = Counter()
            for r in ref_toks:
                max_ref |= _ngrams(r, n)
            matches[n - 1] += sum(cnt for ng, cnt in hyp_counts.items() if ng in max_ref)  # todoruleid: family 5 (missed)
            totals[n - 1] += max(len(hyp) - n + 1, 0)

    tiny = 1e-9
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / max(hyp_len, 1))
    out = {}
    log_prec = 0.0
    for n in range(1, max_n + 1):
        p = (matches[n - 1] + tiny) / (totals[n - 1] + tiny)
        log_prec += math.log(max(p, tiny))
        out[f"bleu{n}"] = 100.0 * bp * math.exp(log_prec / n)
    return out

class CiderD:
    """CIDEr-D with document frequencies computed on the reference corpus."""

    def __init__(self, n: int = 4, sigma: float = 6.0):
        self.n = n
        self.sigma = sigma

    def _counts(self, sent: str) -> Counter:
        words = sent.split()
        counts = Counter()
        for k in range(1, self.n + 1):
            counts.update(_ngrams(words, k))
        return counts

    def _vec(self, counts: Counter, df: Counter, log_ref_len: float):
        vec = [defaultdict(float) for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for ng, tf in counts.items():
            i = len(ng) - 1
            dfv = math.log(max(1.0, df[ng]))
            vec[i][ng] = float(tf) * (log_ref_len - dfv)
            norm[i] += vec[i][ng] ** 2
            if i == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def _sim(self, vh, vr, nh, nr, lh, lr) -> np.ndarray:
        delta = float(lh - lr)
        val = np.zeros(self.n)
        for i in range(self.n):
            for ng, c in vh[i].items():
                val[i] += min(c, vr[i].get(ng, 0.0)) * vr[i].get(ng, 0.0)  # ok: MLS306
            if nh[i] != 0 and nr[i] != 0:
                val[i] /= nh[i] * nr[i]
            val[i] *= math.exp(-(delta ** 2) / (2 * self.sigma ** 2))
        return val

    def compute(self, cands: Dict[int, str], refs: Dict[int, List[str]]) -> Tuple[float, np.ndarray]:
        keys = list(cands.keys())
        crefs = {k: [self._counts(r) for r in refs[k]] for k in keys}
        df = Counter()
        for k in keys:
            for ng in {ng for r in crefs[k] for ng in r}:
                df[ng] += 1
        log_ref_len = math.log(float(len(keys)))
        scores = []
        for k in keys:
            vh, nh, lh = self._vec(self._counts(cands[k]), df, log_ref_len)
            acc = np.zeros(self.n)
            for rc in crefs[k]:
                vr, nr, lr = self._vec(rc, df, log_ref_len)
                acc += self._sim(vh, vr, nh, nr, lh, lr)
            scores.append(float(np.mean(acc)) / len(crefs[k]) * 10.0)
        scores = np.asarray(scores)
        return float(scores.mean()) * 100.0, scores

def caption_metrics(cands: Dict[int, str], refs: Dict[int, List[str]]) -> Dict[str, float]:
    out = corpus_bleu(cands, refs)
    cider, _ = CiderD().compute(cands, refs)
    out["cider"] = cider
    return out

@torch.no_grad()
def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> Dict[int, float]:
    """Number of samples whose target is among the top-k predictions, for every k."""
    maxk = min(max(ks), logits.size(1))
    pred = logits.topk(maxk, dim=1, largest=True, sorted=True).indices.t()
    correct = pred.eq(targets.view(1, -1).expand_as(pred))
    return {k: correct[:maxk].reshape(-1).float().sum().item() for k in ks}  # todoruleid: family 5 (missed)

