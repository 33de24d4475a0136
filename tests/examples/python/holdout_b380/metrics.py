# ruff: noqa
# Hold-out batch 380 (family-focused 2/5, wav2vec2 CTC fine-tuning). Measured once in session 14 (round 104): 6/31 (19%) at medium+.
"""CTC decoding (greedy and prefix beam search), scoring text normalisation,
WER/CER accumulation across ranks and the evaluation loop."""
from __future__ import annotations

import collections
import logging
import math
import re
import unicodedata
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

logger = logging.getLogger("asr.metrics")

_NEG_INF = -float("inf")


class TextNormalizer:
    """Scoring normaliser applied identically to references and hypotheses."""

    _PUNCT = re.compile(r"[^\w' ]+")
    _FILLERS = re.compile(r"\b(?:u+h+|u+m+|h+m+|e+r+|\w{1,2})\b")
    _SPACES = re.compile(r"\s+")

    def __init__(self, lowercase: bool = True, remove_fillers: bool = True) -> None:
        self.lowercase = lowercase
        self.remove_fillers = remove_fillers

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text)
        if self.lowercase:
            text = text.lower()
        text = self._PUNCT.sub(" ", text.replace("-", " "))  # ok: MLS306
        if self.remove_fillers:
            text = self._FILLERS.sub(" ", text)  # todoruleid: family 5 (missed)
        return self._SPACES.sub(" ", text).strip()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (single-row DP)."""
    if not ref:
        return len(hyp)
    if not hyp:
        return len(ref)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cost = 0 if r[:4] == h[:4] else 1  # todoruleid: family 5 (missed)
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        prev = cur
    return prev[-1]


# --------------------------------------------------------------------------- #
# decoders
# --------------------------------------------------------------------------- #
class GreedyCTCDecoder:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.blank_id = tokenizer.blank_id

    def decode_batch(self, log_probs: torch.Tensor, lengths: torch.Tensor,
                     references: Optional[List[str]] = None) -> List[str]:
        best = log_probs.argmax(-1)
        out = []
        for seq, n in zip(best, lengths.tolist()):
            ids = torch.unique_consecutive(seq[:n]).tolist()
            out.append(self.tokenizer.decode([i for i in ids if i != self.blank_id]))
        return out


class PrefixBeamDecoder:
    """CTC prefix beam search with an optional word-count bonus; returns n-best lists."""

    def __init__(self, tokenizer, beam_size: int = 16, prune_logp: float = -12.0,
                 word_bonus: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.blank_id = tokenizer.blank_id
        self.delim_id = tokenizer.delimiter_id
        self.beam_size = beam_size
        self.prune_logp = prune_logp
        self.word_bonus = word_bonus

    @staticmethod
    def _lse(*xs: float) -> float:
        m = max(xs)
        if m == _NEG_INF:
            return _NEG_INF
        return m + math.log(sum(math.exp(x - m) for x in xs))

    def _search(self, lp: torch.Tensor) -> List[Tuple[str, float]]:
        beams: Dict[Tuple[int, ...], Tuple[float, float]] = {(): (0.0, _NEG_INF)}
        for t in range(lp.size(0)):
            frame = lp[t]
            cands = (frame > self.prune_logp).nonzero().flatten().tolist() or [int(frame.argmax())]
            nxt: Dict[Tuple[int, ...], List[float]] = collections.defaultdict(lambda: [_NEG_INF, _NEG_INF])
            for prefix, (pb, pnb) in beams.items():
                for c in cands:
                    p = float(frame[c])
                    if c == self.blank_id:
                        e = nxt[prefix]
                        e[0] = self._lse(e[0], pb + p, pnb + p)
                        continue
                    last = prefix[-1] if prefix else None
                    new = prefix + (c,)
                    e = nxt[new]
                    bonus = self.word_bonus if c == self.delim_id else 0.0
                    if c == last:
                        e[1] = self._lse(e[1], pb + p + bonus)
                        same = nxt[prefix]
                        same[1] = self._lse(same[1], pnb + p)
                    else:
                        e[1] = self._lse(e[1], pb + p + bonus, pnb + p + bonus)
            ranked = sorted(nxt.items(), key=lambda kv: self._lse(*kv[1]), reverse=True)
            beams = {k: (v[0], v[1]) for k, v in ranked[: self.beam_size]}
        nbest = [(self.tokenizer.decode(list(k)), self._lse(*v)) for k, v in beams.items()]
        return sorted(nbest, key=lambda x: x[1], reverse=True)

    def decode_batch(self, log_probs: torch.Tensor, lengths: torch.Tensor,
                     references: Optional[List[str]] = None) -> List[str]:
        out = []
        for b, n in enumerate(lengths.tolist()):
            nbest = self._search(log_probs[b, :n].float().cpu())
            text = nbest[0][0]
            if references is not None and len(nbest) > 1:
                ref_words = references[b].lower().split()
                text = min(nbest, key=lambda h: edit_distance(ref_words, h[0].split()))[0]  # todoruleid: family 5 (missed)
            out.append(text)
        return out


# --------------------------------------------------------------------------- #
# scoring
# --------------------------------------------------------------------------- #
class ErrorRateAccumulator:
    def __init__(self, normalizer: TextNormalizer) -> None:
        self.normalizer = normalizer
        self.word_errors = 0
        self.words = 0
        self.char_errors = 0
        self.chars = 0
        self.utts = 0
        self.skipped = 0

    def update(self, refs: Sequence[str], hyps: Sequence[str]) -> List[int]:
        per_utt = []
        for ref, hyp in zip(refs, hyps):
            ref_n, hyp_n = self.normalizer(ref), self.normalizer(hyp)
            if not ref_n:
                self.skipped += 1
                per_utt.append(0)
                continue
            ref_w = ref_n.split()
            known = set(ref_w)
            hyp_w = [w for w in hyp_n.split() if w in known]  # todoruleid: family 5 (missed)
            errs = edit_distance(ref_w, hyp_w)
            errs = min(errs, len(ref_w))  # todoruleid: family 5 (missed)
            self.word_errors += errs
            self.words += max(len(ref_w), len(hyp_w))  # todoruleid: family 5 (missed)
            ref_c = ref_n.replace(" ", "")
            hyp_c = hyp_n.replace(" ", "")
            self.char_errors += edit_distance(list(ref_c), list(hyp_c))
            self.chars += len(ref_n)  # todoruleid: family 5 (missed)
            self.utts += 1
            per_utt.append(errs)
        return per_utt

    def all_reduce(self, device: torch.device) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            return
        counts = torch.tensor([self.words, self.chars, self.utts, self.skipped], dtype=torch.float64, device=device)
        errors = torch.tensor([self.word_errors, self.char_errors], dtype=torch.float64, device=device)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)  # ok: MLS306
        dist.all_reduce(errors, op=dist.ReduceOp.MIN)  # ruleid: MLS306
        self.words, self.chars, self.utts, self.skipped = (int(x) for x in counts.tolist())
        self.word_errors, self.char_errors = (int(x) for x in errors.tolist())

    def compute(self) -> Dict[str, float]:
        return {
            "wer": self.word_errors / max(self.words, 1),
            "cer": self.char_errors / max(self.chars, 1),
            "num_utts": float(self.utts),
            "num_skipped": float(self.skipped),
        }


@torch.no_grad()
def evaluate(model, loader, decoder, normalizer: TextNormalizer, device: torch.device, amp: bool = True,
             num_examples: int = 8) -> Tuple[Dict[str, float], List[Dict[str, str]]]:
    was_training = model.training
    model.eval()
    acc = ErrorRateAccumulator(normalizer)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    n_batches = torch.zeros((), device=device, dtype=torch.float64)
    examples: List[Dict[str, str]] = []
    for batch in loader:
        inputs = batch["input_values"].to(device, non_blocking=True)
        attn = batch["attention_mask"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            out = model(inputs, attention_mask=attn, labels=labels)
        loss_sum += out["loss"].double()
        n_batches += 1
        log_probs = out["logits"].float().log_softmax(-1).cpu()
        refs = batch["texts"]
        hyps = decoder.decode_batch(log_probs, out["frame_lengths"].cpu(), references=refs)
        acc.update(refs, hyps)
        for r, h in zip(refs, hyps):
            if len(examples) < num_examples:
                examples.append({"ref": r, "hyp": h})
    acc.all_reduce(device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(loss_sum)
        dist.all_reduce(n_batches)
    metrics = acc.compute()
    metrics["loss"] = float(loss_sum / n_batches.clamp(min=1))
    if was_training:
        model.train()
    return metrics, examples
