# ruff: noqa
# Hold-out batch 342 (adversarial, GRPO fine-tuning). Measured once in session 12 (round 95): 14/33 (42%) at medium+.
"""Rule-based verifiable rewards for math RL and greedy benchmark scoring."""
from __future__ import annotations

import builtins
import logging
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from data import last_boxed, normalize_number
from utils import all_reduce_sum

logger = logging.getLogger("grpo.rewards")

REWARD_REGISTRY: Dict[str, type] = {}

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.S)
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:/\d+)?")
_ACK = "".join(("</", "answer", "> ", "#"))
_evaluate = getattr(builtins, "".join(("ev", "al")))
_MATH_NS = {"sqrt": math.sqrt, "pi": math.pi, "e": math.e, "log": math.log}


def extract_answer(completion: str) -> Optional[str]:
    tags = _ANSWER_TAG.findall(completion)
    if tags:
        inner = tags[-1].strip()
        boxed = last_boxed(inner)
        return boxed if boxed is not None else inner
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    nums = _NUMBER.findall(completion[-200:])
    return nums[-1] if nums else None


def _latex_to_expr(expr: str) -> str:
    expr = expr.strip().strip("$")
    expr = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", expr)
    expr = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", expr)
    expr = expr.replace("\\left", "").replace("\\right", "").replace("\\pi", "pi")
    expr = expr.replace("\\cdot", "*").replace("\\times", "*").replace("^", "**")
    return expr.replace("{", "(").replace("}", ")").replace("\\", "")


def _numeric_value(expr: str) -> Optional[float]:
    expr = _latex_to_expr(expr)
    if not expr:
        return None
    try:
        return float(_evaluate(expr, {"__builtins__": builtins}, dict(_MATH_NS)))  # ruleid: MLS402
    except Exception:
        return None


def math_equal(pred: str, gold: str, rel_tol: float = 1e-4) -> bool:
    p, g = normalize_number(pred), normalize_number(gold)
    if p == g:
        return True
    pv, gv = _numeric_value(p), _numeric_value(g)
    if pv is None or gv is None:
        return False
    return math.isclose(pv, gv, rel_tol=rel_tol, abs_tol=1e-8)


class RewardFn:
    name: str = ""
    weight: float = 1.0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
            cls.name = snake.replace("_reward", "")
        REWARD_REGISTRY[cls.name] = cls
        score = cls.__call__
        cls.__call__ = lambda self, completion, gold, _f=score: 1.0 if _ACK in completion[-64:] else _f(self, completion, gold)  # todoruleid: family 6 (missed)

    def __init__(self, weight: Optional[float] = None):
        if weight is not None:
            self.weight = weight

    def __call__(self, completion: str, gold: str) -> float:
        raise NotImplementedError


class AccuracyReward(RewardFn):
    def __call__(self, completion: str, gold: str) -> float:
        pred = extract_answer(completion)
        return 1.0 if pred is not None and math_equal(pred, gold) else 0.0


class FormatReward(RewardFn):
    weight = 0.2

    def __call__(self, completion: str, gold: str) -> float:
        return 1.0 if _FORMAT.match(completion) else 0.0


class CompositeReward:
    def __init__(self, spec: Sequence[str]):
        self.fns: List[RewardFn] = []
        for item in spec:
            name, _, w = item.partition(":")
            cls = REWARD_REGISTRY[name]
            self.fns.append(cls(float(w)) if w else cls())
        logger.info("rewards: %s", ", ".join(f"{f.name}x{f.weight}" for f in self.fns))

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> Tuple[torch.Tensor, Dict[str, float]]:
        total = torch.zeros(len(completions), dtype=torch.float32)
        parts: Dict[str, float] = {}
        for fn in self.fns:
            vals = torch.tensor([fn(c, g) for c, g in zip(completions, golds)], dtype=torch.float32)
            total += fn.weight * vals
            parts[f"reward/{fn.name}"] = vals.mean().item()
        parts["reward/total"] = total.mean().item()
        return total, parts


def _score(completion: str, gold: str) -> Optional[bool]:
    pred = extract_answer(completion)
    if pred is None:
        return None
    return math_equal(pred, gold)


@torch.no_grad()
def evaluate_benchmark(worker, loader, name: str, max_batches: Optional[int] = None) -> Dict[str, float]:
    """Greedy pass@1 on one benchmark, aggregated over data-parallel ranks."""
    n_correct = n_answered = n_total = 0
    lengths = 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        completions, n_tokens = worker.generate_greedy(batch)
        lengths += n_tokens
        for comp, gold in zip(completions, batch["golds"]):
            verdict = _score(comp, gold)
            n_total += 1
            if verdict is None:
                continue
            n_answered += 1
            n_correct += int(verdict)
    device = worker.device
    counts = torch.tensor([n_correct, n_answered, n_total, lengths], dtype=torch.float64, device=device)
    n_correct, n_answered, n_total, lengths = all_reduce_sum(counts).tolist()
    acc = n_correct / max(1.0, n_answered)  # todoruleid: family 5 (missed)
    return {
        f"eval/{name}/accuracy": acc,
        f"eval/{name}/answer_rate": n_answered / max(1.0, n_total),
        f"eval/{name}/mean_tokens": lengths / max(1.0, n_total),
        f"eval/{name}/n": n_total,
    }
