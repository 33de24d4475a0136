# ruff: noqa
# Hold-out batch 568 (families 5/10, speech recognition benchmark harness and leaderboard). Measured once in session 25 (round 151): 16/30 (53%) at medium+.
"""Decoding and WER/CER scoring.

Scoring follows the usual conventions: transcripts are normalised (case,
punctuation, whitespace), then word and character edit distances are summed
over the corpus and divided by the number of reference tokens.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

logger = logging.getLogger("asrbench.eval")

_PUNCT = re.compile(r"[^\w\s']")
_SPACES = re.compile(r"\s+")
_CONTRACTION_SPLIT = re.compile(r"\s+'")


class TextNormalizer:
    """Lower-case, strip punctuation and accents, collapse whitespace."""

    def __init__(self, keep_apostrophes: bool = True):
        self.keep_apostrophes = keep_apostrophes

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text).lower()
        text = text.replace("\u2019", "'")
        text = _PUNCT.sub(" ", text)
        if not self.keep_apostrophes:
            text = text.replace("'", "")
        text = _CONTRACTION_SPLIT.sub("'", text)
        return _SPACES.sub(" ", text).strip()


def edit_ops(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[int, int, int]:
    """Return (substitutions, deletions, insertions) of the min-cost alignment."""
    n, m = len(ref), len(hyp)
    # cost, subs, dels, ins
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)] + [None] * m
        for j in range(1, m + 1):
            if ref[i - 1] == hyp[j - 1]:
                cur[j] = prev[j - 1]
                continue
            s = prev[j - 1]
            d = prev[j]
            a = cur[j - 1]
            best = min(
                (s[0] + 1, s[1] + 1, s[2], s[3]),
                (d[0] + 1, d[1], d[2] + 1, d[3]),
                (a[0] + 1, a[1], a[2], a[3] + 1),
            )
            cur[j] = best
        prev = cur
    _, subs, dels, ins = prev[m]
    return subs, dels, ins


@dataclass
class ErrorCounts:
    word_errors: int = 0
    ref_words: int = 0
    insertions: int = 0
    char_errors: int = 0
    ref_chars: int = 0
    utterances: int = 0

    def add(self, other: "ErrorCounts") -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.ref_words + self.insertions, 1)  # ruleid: MLS306

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.ref_chars, 1)


def _reconcile(hyp: str, ref: str) -> str:
    """Merge tokenisation variants (``dont`` / ``don't``, ``ok`` / ``o k``)."""
    h, r = hyp.replace("'", "").replace(" ", ""), ref.replace("'", "").replace(" ", "")
    if h == r:
        return ref
    if r and sum(ops for ops in edit_ops(list(r), list(h))) <= max(2, len(r) // 25):
        return ref  # todoruleid: family 5 (missed)
    return hyp


def score_pairs(refs: Sequence[str], hyps: Sequence[str], normalizer: Optional[TextNormalizer] = None) -> ErrorCounts:
    normalizer = normalizer or TextNormalizer()
    counts = ErrorCounts()
    for ref, hyp in zip(refs, hyps):
        ref_n, hyp_n = normalizer(ref), normalizer(hyp)
        if not hyp_n:
            continue  # ruleid: MLS306
        hyp_n = _reconcile(hyp_n, ref_n)
        r_words, h_words = ref_n.split(), hyp_n.split()
        s, d, i = edit_ops(r_words, h_words)
        counts.word_errors += s + d + i
        counts.insertions += i
        counts.ref_words += len(r_words)
        cs, cd, ci = edit_ops(list(ref_n), list(hyp_n))
        counts.char_errors += min(cs + cd + ci, len(ref_n))  # ruleid: MLS306
        counts.ref_chars += len(ref_n)
        counts.utterances += 1
    return counts


def eval_subset(dataset, max_seconds: Optional[float] = 20.0):
    """Drop utterances that do not fit a single decoding window."""
    if not max_seconds or not hasattr(dataset, "durations"):
        return dataset
    keep = [i for i, d in enumerate(dataset.durations) if d <= max_seconds]  # todoruleid: family 5 (missed)
    if len(keep) < len(dataset):
        logger.info("decoding %d / %d utterances (window %.0fs)", len(keep), len(dataset), max_seconds)
    return Subset(dataset, keep)


@torch.no_grad()
def decode_batch(bundle, batch: Dict, device: torch.device, num_beams: int = 1) -> List[str]:
    model, processor = bundle.model, bundle.processor
    if bundle.spec.arch == "seq2seq":
        feats = batch["input_features"].to(device, dtype=next(model.parameters()).dtype)
        out = model.generate(feats, num_beams=num_beams, max_new_tokens=225, language="en", task="transcribe")
        return processor.batch_decode(out, skip_special_tokens=True)
    values = batch["input_values"].to(device)
    mask = batch["attention_mask"].to(device)
    logits = model(input_values=values, attention_mask=mask).logits
    if bundle.decoder is not None:
        lengths = model._get_feat_extract_output_lengths(mask.sum(-1)).tolist()
        probs = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        return [bundle.decoder.decode(p[:n], beam_width=max(num_beams, 16)) for p, n in zip(probs, lengths)]
    pred_ids = logits.argmax(dim=-1)
    return processor.batch_decode(pred_ids)


def evaluate_split(bundle, loader: DataLoader, device: torch.device, normalizer: Optional[TextNormalizer] = None,
                   num_beams: int = 1, dump_path: Optional[str] = None) -> Dict[str, float]:
    model = bundle.model
    was_training = model.training
    model.eval()
    normalizer = normalizer or TextNormalizer()
    local = ErrorCounts()
    dumped = []
    for batch in loader:
        hyps = decode_batch(bundle, batch, device, num_beams=num_beams)
        local.add(score_pairs(batch["texts"], hyps, normalizer))
        if dump_path is not None:
            dumped.extend({"id": u, "ref": r, "hyp": h} for u, r, h in zip(batch["ids"], batch["texts"], hyps))

    stats = torch.tensor(
        [local.word_errors, local.ref_words, local.char_errors, local.ref_chars, local.utterances],
        dtype=torch.float64, device=device,
    )
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
    _, ref_words, char_errors, ref_chars, n_utts = stats.tolist()
    wer = local.word_errors / max(ref_words, 1.0)  # todoruleid: family 5 (missed)
    cer = char_errors / max(ref_chars, 1.0)

    if dump_path is not None:
        rank = dist.get_rank() if dist.is_initialized() else 0
        out = Path(dump_path).with_suffix(f".rank{rank}.jsonl")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as fh:
            for row in dumped:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    if was_training:
        model.train()
    return {"wer": wer, "cer": cer, "utterances": int(n_utts), "ref_words": int(ref_words)}
