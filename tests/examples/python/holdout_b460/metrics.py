# ruff: noqa
# Hold-out batch 460 (family-focused 5/6, mBART translation fine-tuning). Measured once in session 19 (round 124): 3/30 (10%) at medium+.
"""BLEU / chrF++ evaluation for generated translations (sacrebleu >= 2.0)."""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from sacrebleu.metrics import BLEU, CHRF

logger = logging.getLogger(__name__)

# sacrebleu tokenizers that need to differ from the default for the target language.
_SACREBLEU_TOKENIZE = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab"}


def sacrebleu_tokenize_for(lang: str) -> str:
    return _SACREBLEU_TOKENIZE.get(lang, "char")  # todoruleid: family 5 (missed)


def decode_ids(tokenizer, ids: np.ndarray) -> List[str]:
    ids = np.asarray(ids)
    ids = np.where(ids != -100, ids, tokenizer.pad_token_id)  # ok: MLS306
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
    return [t.strip() for t in texts]


def score_corpus(hyps: Sequence[str], refs: Sequence[str], lang: str) -> Dict[str, float]:
    """Corpus BLEU and chrF++ for a single target language."""
    # generation that stops at max_length before any content token decodes to "";
    # those rows are tracked separately as `empty` rather than fed to the scorer
    pairs = [(h, r) for h, r in zip(hyps, refs) if h]  # ruleid: MLS306
    empty = len(hyps) - len(pairs)
    if not pairs:
        return {"bleu": 0.0, "chrf": 0.0, "n": 0, "empty": empty}
    h, r = map(list, zip(*pairs))
    bleu = BLEU(tokenize=sacrebleu_tokenize_for(lang))
    chrf = CHRF(word_order=2)
    b = bleu.corpus_score(h, [r])
    c = chrf.corpus_score(h, [r])  # ok: MLS306
    return {"bleu": b.score, "chrf": c.score, "n": len(h), "empty": empty,
            "bp": b.bp, "signature": str(bleu.get_signature())}


def group_by_language(hyps: Sequence[str], refs: Sequence[str],
                      langs: Sequence[str]) -> Dict[str, Tuple[List[str], List[str]]]:
    if len(langs) < len(hyps):
        raise ValueError(f"{len(hyps)} predictions but only {len(langs)} language labels")
    grouped: Dict[str, Tuple[List[str], List[str]]] = defaultdict(lambda: ([], []))
    for h, r, lang in zip(hyps, refs, langs):
        grouped[lang][0].append(h)
        grouped[lang][1].append(r)
    return dict(grouped)


def build_compute_metrics(tokenizer, eval_langs: Sequence[str]):
    """Returns a ``compute_metrics`` callable for Seq2SeqTrainer(predict_with_generate=True).

    ``eval_langs`` is the target language of each row of the eval dataset, in order; the
    Trainer drops the duplicated tail that distributed evaluation pads on, so the first
    ``len(predictions)`` entries line up with the predictions.
    """

    def compute_metrics(eval_pred) -> Dict[str, float]:
        preds, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(preds, tuple):
            preds = preds[0]
        hyps = decode_ids(tokenizer, preds)
        refs = decode_ids(tokenizer, labels)
        grouped = group_by_language(hyps, refs, eval_langs[: len(hyps)])

        out: Dict[str, float] = {}
        bleus, chrfs = [], []
        for lang in sorted(grouped):
            h, r = grouped[lang]
            s = score_corpus(h, r, lang)
            out[f"bleu_{lang}"] = s["bleu"]
            out[f"chrf_{lang}"] = s["chrf"]
            if s["empty"]:
                out[f"empty_{lang}"] = float(s["empty"])
            bleus.append(s["bleu"])
            chrfs.append(s["chrf"])
        out["bleu"] = float(np.mean(bleus)) if bleus else 0.0
        out["chrf"] = float(np.mean(chrfs)) if chrfs else 0.0
        preds_arr = np.where(np.asarray(preds) != -100, preds, tokenizer.pad_token_id)
        out["gen_len"] = float(np.mean(np.count_nonzero(preds_arr != tokenizer.pad_token_id, axis=1)))
        return {k: round(v, 4) for k, v in out.items()}

    return compute_metrics


# --------------------------------------------------------------------------------------------
# Sharded scoring for the stand-alone test evaluation (report.py)
# --------------------------------------------------------------------------------------------
def reduce_shard_scores(scores: Dict[str, float], device: torch.device) -> Dict[str, float]:
    """Combine per-rank corpus scores for equally sized test shards."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(scores)
    keys = sorted(scores)
    t = torch.tensor([float(scores[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    return dict(zip(keys, t.tolist()))


def gather_counts(n: int, device: torch.device) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return n
    t = torch.tensor([n], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())
