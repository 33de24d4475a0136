# ruff: noqa
# Hold-out batch 497 (textbook, Whisper fine-tuning with Seq2SeqTrainer). Measured once in session 22 (round 134): 25/32 (78%) at medium+.
"""
WER / CER evaluation for Whisper fine-tuning.

Predictions and references are decoded, passed through Whisper's text
normaliser (English or basic multilingual) and scored with jiwer.
"""

from __future__ import annotations

import json
import logging
import os
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jiwer
import numpy as np
from transformers import EvalPrediction
from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

logger = logging.getLogger(__name__)


def build_text_normalizer(tokenizer: Any, language: Optional[str]) -> Any:
    """English uses Whisper's full normaliser (spelling, numbers, contractions);
    every other language uses the basic one (case, punctuation, diacritics)."""
    if language in (None, "en", "english"):
        english_spelling = getattr(tokenizer, "english_spelling_normalizer", {}) or {}
        return EnglishTextNormalizer(english_spelling)
    return BasicTextNormalizer(remove_diacritics=False)


class ASRMetrics:
    """Callable usable as ``Seq2SeqTrainer(compute_metrics=...)``."""

    def __init__(
        self,
        tokenizer: Any,
        language: Optional[str] = "en",
        num_examples_to_log: int = 5,
        example_seed: int = 1234,
        max_length_ratio: float = 2.0,
        output_dir: Optional[str] = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.normalizer = build_text_normalizer(tokenizer, language)
        self.num_examples_to_log = num_examples_to_log
        self.example_rng = random.Random(example_seed)  # ok: MLS301
        self.max_length_ratio = max_length_ratio
        self.output_dir = output_dir
        self.eval_calls = 0

    # -- decoding ----------------------------------------------------------

    def _decode(self, pred_ids: np.ndarray, label_ids: np.ndarray) -> Tuple[List[str], List[str]]:
        label_ids = np.where(label_ids != -100, label_ids, self.tokenizer.pad_token_id)
        pred_ids = np.where(pred_ids != -100, pred_ids, self.tokenizer.pad_token_id)
        preds = self.tokenizer.batch_decode(pred_ids, skip_special_tokens=True)
        refs = self.tokenizer.batch_decode(label_ids, skip_special_tokens=True)
        return preds, refs

    def normalize(self, text: str) -> str:
        return self.normalizer(text).strip()

    # -- scoring -----------------------------------------------------------

    def score(self, preds: Sequence[str], refs: Sequence[str]) -> Dict[str, float]:
        preds_n = [self.normalize(p) for p in preds]
        refs_n = [self.normalize(r) for r in refs]

        # jiwer refuses empty references; those utterances carry no words anyway
        pairs = [(p, r) for p, r in zip(preds_n, refs_n) if r]
        n_empty = len(preds_n) - len(pairs)
        pairs = [(p, r) for p, r in pairs if len(p.split()) <= self.max_length_ratio * len(r.split())]  # ruleid: MLS306
        if not pairs:
            return {"wer": 100.0, "cer": 100.0, "num_scored": 0}

        hyps = [p for p, _ in pairs]
        refs_kept = [r for _, r in pairs]
        wer = jiwer.wer(refs_kept, hyps)
        cer = jiwer.cer(refs_kept, hyps)
        return {
            "wer": round(100.0 * wer, 3),
            "cer": round(100.0 * cer, 3),
            "num_scored": len(pairs),
            "num_empty_refs": n_empty,
        }

    def __call__(self, eval_pred: EvalPrediction) -> Dict[str, float]:
        pred_ids = eval_pred.predictions
        if isinstance(pred_ids, tuple):
            pred_ids = pred_ids[0]
        preds, refs = self._decode(pred_ids, eval_pred.label_ids)
        result = self.score(preds, refs)
        self.eval_calls += 1
        self._log_examples(preds, refs)
        self._dump_predictions(preds, refs)
        return result

    # -- reporting ---------------------------------------------------------

    def _log_examples(self, preds: Sequence[str], refs: Sequence[str]) -> None:
        if not preds or self.num_examples_to_log <= 0:
            return
        k = min(self.num_examples_to_log, len(preds))
        for i in self.example_rng.sample(range(len(preds)), k):
            logger.info("REF: %s\nHYP: %s", refs[i], preds[i])

    def _dump_predictions(self, preds: Sequence[str], refs: Sequence[str]) -> None:
        if not self.output_dir or int(os.environ.get("RANK", 0)) != 0:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        path = os.path.join(self.output_dir, f"predictions_eval{self.eval_calls:03d}.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            for p, r in zip(preds, refs):
                fh.write(json.dumps({"ref": r, "hyp": p}, ensure_ascii=False) + "\n")

