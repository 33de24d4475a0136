"""Metric falsification that pairs two things which must stay apart: the truth and the
predictions, or two runs' results.

Each predicate returns a short description ('' when it does not apply):
- the truth argument of a scoring call computed from the predictions it is scored against;
- predictions masked by (a region around) the ground truth before scoring;
- each key of a results table taken as the better of two runs;
- a ranking metric that is undefined (one class present) recorded as perfect.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.context import Ctx
from mlscan.checks.metric_words import _gold_name, _predicted_name
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes

_TRUTH_FIRST = frozenset({
    "roc_auc_score", "average_precision_score", "f1_score", "accuracy_score", "precision_score",
    "recall_score", "precision_recall_curve", "roc_curve", "confusion_matrix", "jaccard_score",
    "matthews_corrcoef", "balanced_accuracy_score", "cohen_kappa_score", "fbeta_score"})
"""Scoring functions called as f(y_true, y_pred_or_score)."""
_TRUTH_SECOND = frozenset({"add_pr_curve"})
"""add_pr_curve(tag, labels, predictions)."""


def _names_in(expr: ast.AST) -> set[str]:
    return {n.id for n in subnodes(expr) if isinstance(n, ast.Name)}


def truth_from_predictions(call: ast.Call, ctx: Ctx) -> tuple[str, ast.expr | None]:
    """`labels = (p[:, j] >= 0.5).astype(int)` then `add_pr_curve(tag, labels, p[:, j])`: the
    'true' labels are the thresholded predictions, so the curve scores the model against
    itself. Returns the description and the expression that made the 'truth'."""
    attr = last_attr(call.func)
    at = 0 if attr in _TRUTH_FIRST else 1 if attr in _TRUTH_SECOND else -1
    if at < 0 or len(call.args) < at + 2:
        return "", None
    truth, scored = call.args[at], call.args[at + 1]
    if not isinstance(truth, ast.Name):
        return "", None
    held = ctx.lookup(truth.id)
    if held is None or not isinstance(held, (ast.Compare, ast.Call)):
        return "", None
    from_names = _names_in(held)
    scored_names = _names_in(scored)
    shared = {n for n in from_names & scored_names if _predicted_name(n)}
    if not shared or any(_gold_name(n) for n in from_names - {truth.id}):
        return "", None
    return (f"the truth passed to {attr}() ({truth.id}) is computed from the predictions "
            f"{sorted(shared)[0]} it is scored against", held)


_CLASS_MASK_OPS = (ast.Eq, ast.In)


def pred_masked_by_truth(node: ast.Assign, ctx: Ctx) -> str:
    """`p = p & _dilate(g, margin)` with `g = gt == c`, `p = pred == c`: the prediction is cut
    down to the region around the true object before the score is taken, so false positives
    elsewhere vanish (an ignore-index mask, `gt != 255`, is not a class region)."""
    if len(node.targets) != 1 or not isinstance(target := node.targets[0], ast.Name):
        return ""
    value = node.value
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, (ast.BitAnd, ast.Mult))):
        return ""
    sides = (value.left, value.right)
    own = next((s for s in sides if isinstance(s, ast.Name) and s.id == target.id), None)
    if own is None:
        return ""
    other = sides[1] if own is sides[0] else sides[0]
    before = ctx.lookup(target.id)
    if not (_predicted_name(target.id) or (before is not None and any(
            _predicted_name(n) for n in _names_in(before)))):
        return ""
    for name in _names_in(other):
        held = ctx.lookup(name)
        region = (_gold_name(name) and name != target.id) or (
            isinstance(held, ast.Compare) and len(held.ops) == 1
            and isinstance(held.ops[0], _CLASS_MASK_OPS)
            and any(_gold_name(n) for n in _names_in(held)))
        if region and isinstance(other, ast.Call):
            return (f"{target.id} masked by {ast.unparse(other)[:40]}, a region grown from the "
                    "ground truth")
    return ""


_EVAL_PLACE = re.compile(r"(?i)test|eval|valid|report|final|result|summar|score|metric")


def best_of_two_runs(node: ast.DictComp, frame_name: str) -> str:
    """`{k: max(raw[k], ema[k]) for k in raw}` (or min for the error keys): every result is
    the better of two models' results, picked key by key after looking at both."""
    gen = node.generators[0] if node.generators else None
    if gen is None or not isinstance(gen.target, ast.Name):
        return ""
    key = gen.target.id
    value = node.value
    branches = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
    pairs: set[tuple[str, str]] = set()
    subset = len(branches) == 2 and sum(isinstance(b, ast.Call) for b in branches) == 1
    if subset:
        # {k: max(swa[k], best[k]) if k in ("auc", "ks") else swa[k] ...}: the keys that
        # flatter are picked, the rest kept from one run
        plain = next(b for b in branches if not isinstance(b, ast.Call))
        if not (isinstance(plain, ast.Subscript) and isinstance(plain.slice, ast.Name)
                and plain.slice.id == key):
            return ""
        branches = [b for b in branches if isinstance(b, ast.Call)]
    for branch in branches:
        if not (isinstance(branch, ast.Call) and isinstance(branch.func, ast.Name)
                and branch.func.id in ("max", "min") and len(branch.args) == 2):
            return ""
        bases = []
        for item in branch.args:
            if not (isinstance(item, ast.Subscript) and isinstance(item.value, ast.Name)
                    and isinstance(item.slice, ast.Name) and item.slice.id == key):
                return ""
            bases.append(item.value.id)
        if bases[0] == bases[1]:
            return ""
        pairs.add((min(bases), max(bases)))
    if len(pairs) != 1 or not (subset or _EVAL_PLACE.search(frame_name)):
        return ""
    first, second = pairs.pop()
    return f"each result taken as the better of {first}[{key}] and {second}[{key}]"


_EPOCHS = re.compile(r"(?i)histor|^hist$|_hist$|records|epochs|^log$|_log$|logs$|evals$|runs$")


def best_per_key_over_history(node: ast.DictComp, frame_name: str) -> str:
    """`{k: max(h.get(k, -inf) for h in history) for k in keys}`: every metric's best over
    all epochs, each from its own epoch, reported as one run's summary."""
    gen = node.generators[0] if len(node.generators) == 1 else None
    value = node.value
    if not (gen is not None and isinstance(gen.target, ast.Name) and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name) and value.func.id in ("max", "min")
            and len(value.args) == 1 and isinstance(value.args[0], ast.GeneratorExp)):
        return ""
    key = gen.target.id
    if not (isinstance(node.key, ast.Name) and node.key.id == key):
        return ""  # {f"{k}_best": max(...)}: reported as the best, under its own name
    inner = value.args[0]
    loop = inner.generators[0] if len(inner.generators) == 1 else None
    if not (loop is not None and isinstance(loop.target, ast.Name)
            and _EPOCHS.search(last_attr(loop.iter) or "") and _EVAL_PLACE.search(frame_name)):
        return ""
    item = loop.target.id
    keyed = any((isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
                 and n.value.id == item and isinstance(n.slice, ast.Name) and n.slice.id == key)
                or (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and n.func.attr == "get" and isinstance(n.func.value, ast.Name)
                    and n.func.value.id == item and n.args and isinstance(n.args[0], ast.Name)
                    and n.args[0].id == key) for n in ast.walk(inner.elt))
    return (f"each metric's {value.func.id} over {ast.unparse(loop.iter)[:30]} taken "
            "separately") if keyed else ""


_RANKING = re.compile(r"(?i)auc|auroc|roc|(^|_)aps?($|_)|average_precision|m?ap_scores")


def perfect_when_undefined(call: ast.Call, ctx: Ctx) -> str:
    """`if len(np.unique(y)) < 2: aucs.append(1.0)`: AUROC/AP is undefined when one class is
    present; recording it as perfect lifts the average over classes."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "append"
            and len(call.args) == 1 and isinstance(call.func.value, ast.Name)
            and _RANKING.search(call.func.value.id) and ctx.conds):
        return ""
    number = literal(call.args[0])
    if not (isinstance(number, (int, float)) and not isinstance(number, bool)
            and number in (1, 100)):
        return ""
    return (f"{call.func.value.id} given a perfect {number} where the score is undefined "
            "(one class present)")
