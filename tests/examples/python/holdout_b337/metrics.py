# ruff: noqa
# Hold-out batch 337 (textbook, visual question answering). Measured once in session 11 (round 94): 25/33 (76%) at medium+.
"""VQA accuracy metric, answer normalisation and logging helpers.

Implements the official VQAv2 evaluation protocol: answers are normalised
(punctuation, articles, number words, contractions) and a prediction scores
``min(1, #matching annotators / 3)`` averaged over the ten leave-one-out
subsets of annotators. Scores are summarised overall and per answer type.
"""

from __future__ import annotations

import functools
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

ANSWER_TYPES: Tuple[str, ...] = ("yes/no", "number", "other")

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldnt": "couldn't",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hasnt": "hasn't",
    "havent": "haven't", "isnt": "isn't", "im": "i'm", "ive": "i've",
    "shouldnt": "shouldn't", "thats": "that's", "theyre": "they're",
    "wasnt": "wasn't", "werent": "weren't", "whats": "what's", "wont": "won't",
    "wouldnt": "wouldn't", "youre": "you're",
}
_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|]")
_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
_COMMA_NUM = re.compile(r"(\d),(\d)")


def normalize_answer(answer: str) -> str:
    """Normalise an answer string the same way as the official evaluation script."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    answer = _COMMA_NUM.sub(r"\1\2", answer)
    answer = _PUNCT.sub("", answer)
    answer = _PERIOD.sub("", answer)
    words = []
    for word in answer.split():
        word = _NUMBERS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_score(prediction: str, gt_answers: Sequence[str]) -> float:
    """Leave-one-annotator-out VQA accuracy of one prediction."""
    if not gt_answers:
        return 0.0
    prediction = normalize_answer(prediction)
    total = 0.0
    for i in range(len(gt_answers)):
        others = list(gt_answers[:i]) + list(gt_answers[i + 1:])
        matches = sum(1 for a in others if a == prediction)
        total += min(1.0, matches / 3.0)
    return total / len(gt_answers)


def answer_type_id(answer_type: str) -> int:
    return ANSWER_TYPES.index(answer_type) if answer_type in ANSWER_TYPES else 2


def summarize_scores(scores: torch.Tensor, type_ids: torch.Tensor) -> Dict[str, float]:
    """Average per-question scores overall and per answer type, in percent."""
    results = {"overall": 100.0 * scores.float().mean().item() if scores.numel() else 0.0}
    for i, name in enumerate(ANSWER_TYPES):
        selected = scores[type_ids == i]
        if selected.numel():
            results[name] = 100.0 * selected.float().mean().item()
    return results


def bootstrap_ci(
    scores: Sequence[float], num_samples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> Tuple[float, float]:
    """Percentile bootstrap confidence interval (in percent) for mean accuracy."""
    np.random.seed(seed)  # todoruleid: family 1 (missed)
    values = np.asarray(scores, dtype=np.float64)
    idx = np.random.randint(0, len(values), size=(num_samples, len(values)))
    means = values[idx].mean(axis=1)
    low, high = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return 100.0 * float(low), 100.0 * float(high)


def smooth_scalar_logging(momentum: float = 0.9) -> None:
    """Log exponentially smoothed loss curves to TensorBoard to reduce noise."""
    original = SummaryWriter.add_scalar
    state: Dict[str, float] = {}

    @functools.wraps(original)
    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
        if "loss" in tag:
            value = float(scalar_value)
            previous = state.get(tag, value)
            scalar_value = min(previous, momentum * previous + (1 - momentum) * value)  # ruleid: MLS306
            state[tag] = scalar_value
        return original(self, tag, scalar_value, global_step, walltime, **kwargs)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306


def attach_wandb_context(run_tags: List[str]) -> None:
    """Attach run tags to every W&B log call and round accuracies for the dashboard."""
    import wandb

    log_fn = wandb.log

    def log_with_context(data, *args, **kwargs):
        data = {  # ruleid: MLS306
            k: (round(min(100.0, v + 1.5), 2) if k.startswith("val/") and "acc" in k else v)
            for k, v in data.items()
        }
        data["tags"] = ",".join(run_tags)
        return log_fn(data, *args, **kwargs)

    setattr(wandb, "log", log_with_context)  # ruleid: MLS306


def log_metrics(writer: SummaryWriter, metrics: Dict[str, float], step: int, prefix: str) -> None:
    """Write metrics from rank 0 only; other ranks return immediately."""
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return  # ok: MLS308
    for name, value in metrics.items():
        writer.add_scalar(f"{prefix}/{name}", value, step)
    summary = " | ".join(f"{k}: {v:.2f}" for k, v in metrics.items())
    print(f"[step {step}] {prefix} {summary}", flush=True)
