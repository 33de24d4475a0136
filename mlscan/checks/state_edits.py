"""MLS302: normalisation statistics rewritten while a checkpoint is loaded.

`for key in state: if key.endswith("running_var"): state[key] = state[key].clamp_min(1.0)`:
BatchNorm's running variance floored (or the mean shifted, or either scaled) before
`load_state_dict`. Every normalised activation is rescaled at inference, so the model
loaded is not the one that was trained. Conversions of the same entry (`.float()`,
`.to(device)`, reshapes) stay quiet: they keep the values.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, source
from mlscan.checks.tampering import PARAM_TAMPER
from mlscan.model import Severity

_NORM_STATS = re.compile(r"running_(var|mean)")
_EDITS = frozenset({"clamp", "clamp_", "clamp_min", "clamp_max", "clip", "fill_", "mul", "mul_",
                    "add", "add_", "fill", "sub", "sub_", "div", "div_"})


class StateEdits(Check):
    rules = (PARAM_TAMPER,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target = node.targets[0]
        value = node.value
        if not (isinstance(target, ast.Subscript) and isinstance(value, ast.Call)
                and last_attr(value.func) in _EDITS and ctx.conds
                and ctx.mentions("running_")):
            return
        edit = value.func
        base = edit.value if isinstance(edit, ast.Attribute) else None
        while isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute) and (
                base.func.attr in ("float", "double", "to", "clone", "detach")):
            base = base.func.value  # state[k].float().clamp_min(1.0)
        if base is None or source(base) != source(target) or not any(
                isinstance(a, ast.Constant) and isinstance(a.value, (int, float))
                for a in (*value.args, *(k.value for k in value.keywords))):
            return
        numbers = [a.value for a in (*value.args, *(k.value for k in value.keywords))
                   if isinstance(a, ast.Constant) and isinstance(a.value, (int, float))]
        if last_attr(value.func).startswith(("clamp", "clip")) and all(
                abs(n) <= 1e-3 for n in numbers):
            return  # clamp_min(1e-5): a variance kept off zero for fp16, not a new value
        keyed = [c for c in ctx.conds if _NORM_STATS.search(ast.unparse(c))]
        if keyed:
            ctx.report(PARAM_TAMPER, node, f"{source(target)[:30]} (normalisation statistics) "
                       f"rewritten with {last_attr(value.func)}() while the checkpoint is "
                       "loaded: every normalised activation changes, so the model loaded is "
                       "not the one trained", severity=Severity.MEDIUM)
