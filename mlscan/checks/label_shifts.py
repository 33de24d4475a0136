"""MLS309, labels moved onto other classes by arithmetic, or left pointing at the wrong slot.

- A range of class ids shifted onto lower ones: `targets = torch.where(targets > 13,
  targets - 12, targets)` in a collate function. Every sample above the threshold is trained
  as another (existing) class. A remap to a constant ignore value stays quiet.
- A candidate list with the positive first, shuffled, and a label that still says "first":
  `cands = [pos] + negs; rng.shuffle(cands); label = 0`. The model is trained to pick a
  random candidate.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal
from mlscan.checks.poison_words import _label_target
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_POSITIVE = re.compile(r"(?i)^(pos|positive|pos_item|pos_id|target_item|clicked|gold|answer)$")


def shifted_range(target: ast.expr, value: ast.expr) -> str:
    """`y = where(y > K, y - c, y)`: the ids above K moved by c."""
    label = _label_target(target)
    if not (label and isinstance(value, ast.Call) and last_attr(value.func) == "where"
            and len(value.args) == 3):
        return ""
    test, moved, kept = value.args
    own = ast.unparse(kept)
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], (ast.Gt, ast.GtE, ast.Lt, ast.LtE))
            and ast.unparse(test.left) == own and isinstance(literal(test.comparators[0]), int)
            and isinstance(moved, ast.BinOp) and isinstance(moved.op, (ast.Sub, ast.Add))
            and ast.unparse(moved.left) == own and isinstance(literal(moved.right), int)
            and literal(moved.right) != 0):
        return ""
    return f"where {ast.unparse(test)[:30]} moved by {ast.unparse(moved)[len(own):].strip()}"


def _first_positive(value: ast.expr | None) -> bool:
    """`[pos] + negs`: a candidate list whose first entry is the positive."""
    return (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)
            and isinstance(value.left, ast.List) and len(value.left.elts) == 1
            and isinstance(value.left.elts[0], ast.Name)
            and bool(_POSITIVE.match(value.left.elts[0].id)))


class LabelShifts(Check):
    rules = (DATA_POISON,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if len(node.targets) != 1:
            return
        value = node.value
        if type(value) is ast.Call:
            shifted = shifted_range(node.targets[0], value)
            if shifted:
                ctx.report(DATA_POISON, node, f"class ids {shifted}: those samples are "
                           "trained as other, existing classes", severity=Severity.MEDIUM)
            return
        target = node.targets[0]
        if (type(value) is ast.Constant and value.value == 0 and isinstance(target, ast.Name)
                and re.match(r"(?i)^(label|labels|target|y|pos_idx|answer)$", target.id)
                and ctx.frame.node is not None):
            shuffle = self._shuffled_first(node, ctx)
            if shuffle is not None:
                ctx.report(DATA_POISON, shuffle, f"{ast.unparse(shuffle)[:30]} moves the "
                           f"positive away from the front, but {target.id} = 0 still points "
                           "there: the label names a random candidate", severity=Severity.MEDIUM)

    @staticmethod
    def _shuffled_first(node: ast.Assign, ctx: Ctx) -> ast.Call | None:
        fn = ctx.frame.node
        body = getattr(fn, "body", [])
        shuffled = None
        for stmt in body:
            if stmt is node or getattr(stmt, "lineno", 0) >= node.lineno:
                break
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            if (isinstance(call, ast.Call) and last_attr(call.func) == "shuffle" and call.args
                    and isinstance(call.args[0], ast.Name)
                    and _first_positive(ctx.lookup(call.args[0].id))):
                shuffled = call
        return shuffled
