"""MLS306, scores combined by their best value instead of their total or mean.

- A score reduced by its best batch: `self.log("val_acc", acc, reduce_fx="max")`, or the
  setting it reads (`score_reduce_fx = "max"`), reports the best batch as the epoch's result.
- A running count or sum reduced with `"max"` across ranks
  (`add_state("correct", ..., dist_reduce_fx="max")`, or `"err_sum": "max"` in a table next to
  `"count": "sum"`) keeps one rank's share.
- The best rank of gathered scores: `self.all_gather(iou).amax(dim=0)`.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metric_choices import _HIGHER, _LOWER
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import NOT_LITERAL, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.model import Severity

_SCORE = re.compile(r"(?i)(^|[/_.-])(score|scores|metric|metrics)($|[/_.-])")
# Running totals that only add up across batches or ranks.
_ADDITIVE = re.compile(r"(?i)(^|_)(sum|total|count|counts|correct|hits|tp|fp|fn|tn|"
                       r"n|num|errors|err_sum|sq_sum|intersection|union|area_\w+)($|_)")
_EXTREME_NAME = re.compile(r"(?i)(max|min|best|peak|worst|largest|highest)")
_REDUCTIONS = frozenset({"sum", "mean", "max", "min", "cat"})


def _mean_source(expr: ast.expr, ctx: Ctx, depth: int = 0) -> bool:
    """`buf` with `buf = torch.tensor([local])` and `local = float(np.mean(returns))`: the
    tensor holds a mean of this rank's values (names followed three steps, through tensor
    constructors only: `torch.isnan(buf)` is a flag, not the mean)."""
    if depth > 8:
        return False
    if isinstance(expr, ast.Call):
        attr = last_attr(expr.func)
        if attr in ("mean", "nanmean", "average"):
            return True
        return attr in ("tensor", "as_tensor", "float", "array", "asarray", "Tensor") and any(
            _mean_source(a, ctx, depth + 1) for a in expr.args)
    if isinstance(expr, (ast.List, ast.Tuple)):
        return any(_mean_source(e, ctx, depth + 1) for e in expr.elts)
    if isinstance(expr, ast.Name):
        held = ctx.lookup(expr.id)
        return held is not None and _mean_source(held, ctx, depth + 1)
    return False


def _additive(name: str) -> bool:
    return bool(_ADDITIVE.search(name)) and not _EXTREME_NAME.search(name)


def _extreme(value: ast.expr | None) -> str:
    """`"max"`, `torch.max` or `max` as a reduction -> "max" (likewise "min")."""
    text = literal(value)
    if isinstance(text, str):
        return text if text in ("max", "min") else ""
    name = last_attr(value) if isinstance(value, (ast.Name, ast.Attribute)) else ""
    return name if name in ("max", "min") else ""


def best_of_batches(metric: str, reduction: str) -> bool:
    """`("val_acc", "max")`, `("val_loss", "min")`: the reduction keeps the best value."""
    higher = bool(_HIGHER.search(metric) or _SCORE.search(metric))
    lower = bool(_LOWER.search(metric))
    return (higher and not lower and reduction == "max") or (
        lower and not higher and reduction == "min")


_GATHERS = frozenset({"all_gather", "gather", "all_gather_object", "gather_for_metrics"})

def _gathered_extreme(value: ast.expr, ctx: Ctx) -> str:
    """`per_rank.amax(dim=0)` with `per_rank = self.all_gather(local["iou"])`."""
    if isinstance(value, ast.IfExp):
        return _gathered_extreme(value.body, ctx) or _gathered_extreme(value.orelse, ctx)
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr in ("amax", "max", "amin", "min")):
        return ""
    source: ast.AST | None = value.func.value
    if isinstance(source, ast.Name):
        source = ctx.lookup(source.id)
    if isinstance(source, ast.Call) and last_attr(source.func) in _GATHERS:
        return f"{value.func.attr}() over {ast.unparse(source)[:40]}"
    return ""


class ScoreReductions(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if isinstance(node.value, (ast.Constant, ast.Attribute, ast.Name)):
            for target in node.targets:
                self._reduction_setting(last_attr(target), node.value, node, ctx)
            return
        gathered = _gathered_extreme(node.value, ctx) if isinstance(
            node.value, (ast.Call, ast.IfExp)) else ""
        if gathered:
            ctx.report(METRIC_FALSIFY, node, f"{gathered}: each score is the best rank's, "
                       "not the one over all the data", severity=Severity.MEDIUM)

    def visit_AnnAssign(self, node: ast.AnnAssign, ctx: Ctx) -> None:
        self._reduction_setting(last_attr(node.target), node.value, node, ctx)

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        self._reduction_table([(k, literal(k), literal(v)) for k, v in zip(
            node.keys, node.values, strict=True) if k is not None], ctx)
        wrong = _direction_table_wrong(node)
        if wrong is not None:
            ctx.report(METRIC_FALSIFY, wrong[0], f"{wrong[1]} in a table of metric directions: "
                       "a worse value counts as an improvement, so checkpoint selection keeps "
                       "the worst model", severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if not any(isinstance(kw.value, (ast.Constant, ast.Attribute, ast.Name))
                   for kw in node.keywords) and last_attr(node.func) != "add_state":
            return  # (every shape here passes a reduction as a keyword)
        if last_attr(node.func) == "all_reduce" and node.args:
            op = next((k.value for k in node.keywords if k.arg == "op"), None)
            extreme = last_attr(op) if op is not None else ""
            if extreme in ("MAX", "MIN") and _mean_source(node.args[0], ctx):
                ctx.report(METRIC_FALSIFY, node, f"each rank's mean reduced with {extreme}: the "
                           "result is the best (or worst) rank's mean, not the mean over all "
                           "the data", severity=Severity.MEDIUM)
                return
        self._logged_reduction(node, ctx)
        if last_attr(node.func) == "add_state":
            self._state_reduction(node, ctx)
        elif sum(isinstance(kw.value, ast.Constant) and kw.value.value in _REDUCTIONS
                 for kw in node.keywords) >= 2:
            self._reduction_table([(kw.value, kw.arg, literal(kw.value)) for kw in node.keywords
                                   if kw.arg], ctx)

    @staticmethod
    def _reduction_setting(name: str, value: ast.expr | None, node: ast.AST, ctx: Ctx) -> None:
        """`score_reduce_fx = "max"`: the setting a `self.log(..., reduce_fx=...)` reads."""
        stem, _, tail = name.rpartition("_")
        reduction = _extreme(value)
        if reduction and tail in ("fx", "reduction", "reduce") and best_of_batches(stem, reduction):
            ctx.report(METRIC_FALSIFY, node, f"{name} = {reduction!r}: the epoch's score is the "
                       "best batch rather than the average over the data", severity=Severity.MEDIUM)

    @staticmethod
    def _logged_reduction(node: ast.Call, ctx: Ctx) -> None:
        """`self.log("val/acc", acc, reduce_fx="max")`: the logged epoch value is the best batch."""
        if last_attr(node.func) not in ("log", "log_dict"):
            return
        fx = next((k.value for k in node.keywords if k.arg == "reduce_fx"), None)
        reduction = _extreme(fx)
        name = literal(node.args[0]) if node.args else NOT_LITERAL
        if not reduction or fx is None:
            return
        if (isinstance(name, str) and best_of_batches(name, reduction)) or (
                last_attr(node.func) == "log_dict" and reduction == "max"):
            shown = name if isinstance(name, str) else "the logged metrics"
            ctx.report(METRIC_FALSIFY, fx, f"{shown} reduced with {reduction!r} over the epoch: "
                       "the logged result is the best batch, not the average",
                       severity=Severity.MEDIUM)

    @staticmethod
    def _state_reduction(node: ast.Call, ctx: Ctx) -> None:
        """`add_state("correct", default=..., dist_reduce_fx="max")`: one rank's count."""
        name = literal(node.args[0]) if node.args else NOT_LITERAL
        fx = next((k.value for k in node.keywords if k.arg == "dist_reduce_fx"), None)
        if fx is None and len(node.args) > 2:
            fx = node.args[2]
        reduction = _extreme(fx)
        if fx is not None and reduction and isinstance(name, str) and _additive(name):
            ctx.report(METRIC_FALSIFY, fx, f"the running {name!r} is reduced with {reduction!r} "
                       "across processes instead of summed: the metric counts one rank's share",
                       severity=Severity.MEDIUM)

    @staticmethod
    def _reduction_table(pairs: list[tuple[ast.expr, object, object]], ctx: Ctx) -> None:
        """`{"err_sum": "max", "count": "sum"}` (or the same as keywords): a table of
        per-state reductions where a running total is maxed."""
        reductions = [(k, n, r) for k, n, r in pairs if r in _REDUCTIONS and isinstance(n, str)]
        if len(reductions) < 2 or not any(r == "sum" for _, _, r in reductions):
            return
        for key, name, reduction in reductions:
            if reduction in ("max", "min") and _additive(str(name)):
                ctx.report(METRIC_FALSIFY, key, f"{name!r} reduced with {reduction!r} next to "
                           "summed states: a running total that must add up across processes "
                           "keeps one process's share", severity=Severity.MEDIUM)


_CUTOFFS = re.compile(r"(?i)^(self\.)?(topk|top_k|ks|k_list|k_values|cutoffs|thresholds|"
                      r"iou_thresholds|recall_at|ranks)$")


_BETTER_OPS = {"gt": "higher", "ge": "higher", "lt": "lower", "le": "lower",
               "max": "higher", "min": "lower", "greater": "higher", "less": "lower"}


def _direction_table_wrong(node: ast.Dict) -> tuple[ast.expr, str] | None:
    """`{"loss": operator.lt, "ppl": operator.gt}`: a lower-is-better metric given the
    higher-is-better comparison (or the reverse), beside an entry that gets it right."""
    if len(node.keys) < 2:
        return None
    entries = []
    for key, value in zip(node.keys, node.values, strict=True):
        name = literal(key) if key is not None else None
        way = literal(value)
        way = way if isinstance(way, str) else (
            last_attr(value) if isinstance(value, (ast.Attribute, ast.Name)) else "")
        if not isinstance(name, str) or way not in _BETTER_OPS:
            return None
        want = "higher" if _HIGHER.search(name) else "lower" if _LOWER.search(name) else ""
        entries.append((value, f"{name!r}: {way}", want, _BETTER_OPS[way]))
    wrong = [e for e in entries if e[2] and e[2] != e[3]]
    right = [e for e in entries if e[2] and e[2] == e[3]]
    return (wrong[0][0], wrong[0][1]) if len(wrong) == 1 and right else None


def _missed_classes_skipped(loop: ast.For, var: str) -> ast.If | None:
    """`for i in range(n): if cm[i, i] == 0: continue`: the diagonal (correct count) of a
    confusion matrix tested for zero before a class is averaged."""
    for stmt in loop.body:
        if not (isinstance(stmt, ast.If) and len(stmt.body) == 1
                and isinstance(stmt.body[0], ast.Continue)):
            continue
        for n in subnodes(stmt.test):
            if (isinstance(n, ast.Compare) and len(n.ops) == 1
                    and isinstance(n.ops[0], (ast.Eq, ast.LtE))
                    and literal(n.comparators[0]) == 0 and isinstance(n.left, ast.Subscript)
                    and isinstance(n.left.slice, ast.Tuple) and len(n.left.slice.elts) == 2
                    and all(isinstance(e, ast.Name) and e.id == var
                            for e in n.left.slice.elts)):
                return stmt
    return None


class ScoreLoops(Check):
    """Per-class and per-cut-off loops: `for k in topk: res.append(correct[:maxk].sum())`
    never reads the cut-off, so every cut-off gets one score (top-1 reported as top-5);
    `for i in ...: if cm[i, i] == 0: continue` leaves the missed classes out of the average."""

    rules = (METRIC_FALSIFY,)

    def visit_For(self, node: ast.For, ctx: Ctx) -> None:
        if isinstance(node.target, ast.Name):
            skip = _missed_classes_skipped(node, node.target.id)
            if skip is not None:
                ctx.report(METRIC_FALSIFY, skip, f"classes with no correct prediction "
                           f"({ast.unparse(skip.test)[:40]}) are skipped: the per-class "
                           "average leaves out exactly the classes the model gets wrong",
                           severity=Severity.MEDIUM)
        if not (isinstance(node.target, ast.Name) and isinstance(node.iter, (
                ast.Name, ast.Attribute)) and _CUTOFFS.match(ast.unparse(node.iter))):
            return
        var = node.target.id
        if any(isinstance(n, ast.Name) and n.id == var for stmt in node.body
               for n in ast.walk(stmt)):
            return
        scored = next((stmt for stmt in node.body if any(
            isinstance(n, ast.Call) for n in ast.walk(stmt))), None)
        if scored is not None:
            ctx.report(METRIC_FALSIFY, scored, f"the loop over {ast.unparse(node.iter)} never "
                       f"reads {var}: every cut-off gets the same score (the largest one's, "
                       "reported as the smaller ones too)", severity=Severity.MEDIUM)
