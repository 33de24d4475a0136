"""MLS304: a layer-wise trust ratio (LAMB, LARS) computed upside down.

LAMB and LARS scale each layer's step by `weight_norm / update_norm`, so that the step stays
a fixed fraction of the weights. Written as `update_norm / weight_norm`, layers with large
updates and small weights take the largest steps, and training diverges or stalls. Only
assignments to a trust-ratio name (`trust_ratio`, `local_lr`, `adaptive_lr`) count: the
update-to-weight ratio is also a common quantity to *log*, which is harmless.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import source
from mlscan.checks.optimizer import OPTIM_TAMPER
from mlscan.model import Severity

_TRUST = re.compile(r"(?i)trust|local_lr|adaptive_lr|layer_lr")
_UPDATE_NORM = re.compile(r"(?i)^(u|g|d|r|upd|update|grad|adam|step)_?norm$")
_WEIGHT_NORM = re.compile(r"(?i)^(w|p|weight|param|parameter)_?norm$")


class TrustRatios(Check):
    rules = (OPTIM_TAMPER,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target = node.targets[0]
        if not (isinstance(target, (ast.Name, ast.Attribute, ast.Subscript))
                and _TRUST.search(source(target)) and ctx.mentions("norm")):
            return
        for sub in ast.walk(node.value):
            if (isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Div)
                    and isinstance(sub.left, ast.Name) and _UPDATE_NORM.match(sub.left.id)
                    and _WEIGHT_NORM.match(_denominator(sub.right))):
                ctx.report(OPTIM_TAMPER, sub, f"trust ratio {sub.left.id} / "
                           f"{_denominator(sub.right)} is upside down (LAMB/LARS use the "
                           "weight norm over the update norm): layers with large updates "
                           "take the largest steps", severity=Severity.MEDIUM)
                return


def _denominator(expr: ast.expr) -> str:
    """`w_norm`, also inside `(w_norm + eps)`."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        expr = expr.left
    return expr.id if isinstance(expr, ast.Name) else ""
