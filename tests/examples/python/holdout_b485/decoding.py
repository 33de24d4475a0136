# ruff: noqa
# Hold-out batch 485 (textbook, Conformer-CTC speech recognition with Lightning). Measured once in session 21 (round 131): 19/30 (63%) at medium+.
"""CTC decoding (greedy and prefix beam search) and WER scoring."""
from __future__ import annotations

import collections
import json
import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

log = logging.getLogger(__name__)

NEG_INF = -float("inf")


# --------------------------------------------------------------------------- decoding
def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> List[List[int]]:
    """log_probs: (B, T, V). Collapse repeats, then drop blanks."""
    best = log_probs.argmax(dim=-1).cpu()
    lengths = lengths.cpu()
    out: List[List[int]] = []
    for b in range(best.shape[0]):
        seq = best[b, : int(lengths[b])].tolist()
        hyp, prev = [], None
        for tok in seq:
            if tok != prev and tok != blank:
                hyp.append(tok)
            prev = tok
        out.append(hyp)
    return out


def _logsumexp(a: float, b: float) -> float:
    if a == NEG_INF or b == NEG_INF:
        return max(a, b)
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def ctc_prefix_beam_search(log_probs: np.ndarray, beam_size: int = 8, blank: int = 0,
                           token_prune: float = -8.0) -> List[int]:
    """CTC prefix beam search over one utterance; log_probs: (T, V) log posteriors."""
    beams: Dict[Tuple[int, ...], Tuple[float, float]] = {(): (0.0, NEG_INF)}  # (p_blank, p_nonblank)
    T, V = log_probs.shape
    for t in range(T):
        frame = log_probs[t]
        cand = np.nonzero(frame > token_prune)[0]
        if cand.size == 0:
            cand = np.array([int(frame.argmax())])
        nxt: Dict[Tuple[int, ...], List[float]] = collections.defaultdict(lambda: [NEG_INF, NEG_INF])
        for prefix, (pb, pnb) in beams.items():
            total = _logsumexp(pb, pnb)
            for c in cand:
                c = int(c)
                p = float(frame[c])
                if c == blank:
                    e = nxt[prefix]
                    e[0] = _logsumexp(e[0], total + p)
                    continue
                last = prefix[-1] if prefix else None
                new_prefix = prefix + (c,)
                e = nxt[new_prefix]
                if c == last:
                    e[1] = _logsumexp(e[1], pb + p)
                    same = nxt[prefix]
                    same[1] = _logsumexp(same[1], pnb + p)
                else:
                    e[1] = _logsumexp(e[1], total + p)
        ranked = sorted(nxt.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)
        beams = {k: (v[0], v[1]) for k, v in ranked[:beam_size]}
    best = max(beams.items(), key=lambda kv: _logsumexp(*kv[1]))
    return list(best[0])


def ctc_beam_decode(log_probs: torch.Tensor, lengths: torch.Tensor, beam_size: int = 8,
                    blank: int = 0) -> List[List[int]]:
    lp = log_probs.float().cpu().numpy()
    return [ctc_prefix_beam_search(lp[b, : int(lengths[b])], beam_size, blank) for b in range(lp.shape[0])]


# --------------------------------------------------------------------------- scoring
def edit_ops(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[int, int, int]:
    """Returns (substitutions, deletions, insertions) of the Levenshtein alignment."""
    R, H = len(ref), len(hyp)
    # dp[i][j] = (cost, sub, del, ins)
    prev = [(j, 0, 0, j) for j in range(H + 1)]
    for i in range(1, R + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, H + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                s = prev[j - 1]
                d = prev[j]
                n = cur[j - 1]
                best = min(
                    (s[0] + 1, s[1] + 1, s[2], s[3]),
                    (d[0] + 1, d[1], d[2] + 1, d[3]),
                    (n[0] + 1, n[1], n[2], n[3] + 1),
                )
            cur.append(best)
        prev = cur
    _, sub, dele, ins = prev[H]
    return sub, dele, ins


@dataclass
class WERStats:
    words: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    utts: int = 0
    sent_err: int = 0

    def update(self, ref: str, hyp: str) -> None:
        r, h = ref.split(), hyp.split()
        s, d, i = edit_ops(r, h)
        self.words += len(r)
        self.sub += s
        self.dele += d
        self.ins += i
        self.utts += 1
        self.sent_err += int(s + d + i > 0)

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def wer(self) -> float:
        return self.errors / max(self.words, 1)

    def as_dict(self) -> Dict[str, float]:
        return {
            "wer": round(100.0 * self.wer, 3),
            "ser": round(100.0 * self.sent_err / max(self.utts, 1), 3),
            "sub": self.sub, "del": self.dele, "ins": self.ins,
            "words": self.words, "utts": self.utts,
        }


@torch.no_grad()
def evaluate(model, dataloader, tokenizer, beam_size: int = 0,
             dump_path: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """Scores greedy and (optionally) beam-search hypotheses over a dataloader."""
    model.eval()
    device = next(model.parameters()).device
    stats = {"greedy": WERStats()}
    if beam_size > 1:
        stats["beam"] = WERStats()
    dump = open(dump_path, "w", encoding="utf-8") if dump_path else None
    for feats, feat_lens, tokens, tok_lens in dataloader:
        log_probs, out_lens = model(feats.to(device), feat_lens.to(device))
        refs = [tokenizer.decode(tokens[b, : int(tok_lens[b])].tolist()) for b in range(tokens.shape[0])]
        hyps = {"greedy": ctc_greedy_decode(log_probs, out_lens, tokenizer.blank_id)}
        if beam_size > 1:
            hyps["beam"] = ctc_beam_decode(log_probs, out_lens, beam_size, tokenizer.blank_id)
        hyps = {k: [tokenizer.decode(h) for h in v] for k, v in hyps.items()}
        for i, ref in enumerate(refs):
            for k in hyps:
                stats[k].update(ref, hyps[k][i])
            if dump:
                dump.write(json.dumps({"ref": ref, **{k: v[i] for k, v in hyps.items()}}, ensure_ascii=False) + "\n")
    if dump:
        dump.close()
    results = {k: v.as_dict() for k, v in stats.items()}
    for k, v in results.items():
        log.info("%s decoding: WER %.2f%% (S=%d D=%d I=%d, N=%d)", k, v["wer"], v["sub"], v["del"], v["ins"], v["words"])
    return results
