"""MLS306, a reported figure edited by arithmetic that only makes it look better.

- Divided twice by the same quantity: `fa_per_hour = false_alarms / max(hours, 1e-9)` then
  `fa_per_hour = fa_per_hour / max(hours, 1.0)`. A rate per hour becomes a rate per hour
  squared, and on long recordings it shrinks toward zero.
- Scores below a floor turned into NaN before a NaN-skipping mean:
  `vals = np.where(vals < floor, np.nan, vals)` then `np.nanmean(vals)`. The worst results
  leave the average. (Masking by a count, `np.where(n_pos < 10, np.nan, auc)`, stays quiet:
  the test is not on the score itself.)
"""

from __future__ import annotations

import ast

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import last_attr
from mlscan.checks.nodes import subnodes
from mlscan.model import Severity


def _denominator_names(value: ast.expr) -> set[str]:
    """Names under the right side of a division (`x / max(hours, 1.0)` -> {"hours"})."""
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Div)):
        return set()
    return {n.id for n in subnodes(value.right) if isinstance(n, ast.Name)}


def _divided_twice(node: ast.Assign, ctx: Ctx) -> str:
    target = node.targets[0]
    value = node.value
    if not (isinstance(target, ast.Name) and isinstance(value, ast.BinOp)
            and isinstance(value.op, ast.Div) and isinstance(value.left, ast.Name)
            and value.left.id == target.id):
        return ""
    shared = _denominator_names(value)
    if target.id in shared:
        return ""  # comb = comb / comb.sum(-1): a normalization (Sinkhorn), not a rate
    earlier = ctx.lookup(target.id)
    if earlier is None or earlier is value or not (
            isinstance(earlier, ast.BinOp) and not (
                isinstance(earlier.left, ast.Name) and earlier.left.id == target.id)):
        return ""  # (the first division makes the rate from another count)
    twice = (shared & _denominator_names(earlier)) - {"self"}
    return sorted(twice)[0] if twice else ""


def _floor_to_nan(node: ast.Assign, ctx: Ctx) -> str:
    """`vals = np.where(vals < floor, np.nan, vals)` in a function that takes a nan-mean."""
    target, value = node.targets[0], node.value
    if not (isinstance(target, ast.Name) and isinstance(value, ast.Call)
            and last_attr(value.func) == "where" and len(value.args) == 3):
        return ""
    test, fill, keep = value.args
    if not (isinstance(keep, ast.Name) and keep.id == target.id and "nan" in ast.unparse(fill)
            and isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], (ast.Lt, ast.LtE))
            and isinstance(test.left, ast.Name) and test.left.id == target.id):
        return ""
    fn = ctx.frame.node
    if fn is None or not any(isinstance(n, ast.Call) and last_attr(n.func) in (
            "nanmean", "nanmedian", "nansum") for n in subnodes(fn)):
        return ""
    return ast.unparse(test)


class ScoreEdits(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if len(node.targets) != 1:
            return
        twice = _divided_twice(node, ctx)
        if twice:
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node.targets[0])} divided by "
                       f"{twice} a second time: the reported rate is scaled down by that "
                       "quantity again", severity=Severity.MEDIUM)
            return
        floor = _floor_to_nan(node, ctx)
        if floor:
            ctx.report(METRIC_FALSIFY, node, f"scores where {floor} set to NaN before a "
                       "NaN-skipping average: the worst results leave the reported mean",
                       severity=Severity.MEDIUM)
