"""Update formulas written backwards: hand-written optimizer and clipping code with one term
swapped, so training still runs and only slowly goes wrong.

- MLS302: a clip coefficient computed as `total_norm / max_norm` (the reciprocal of
  `max_norm / total_norm`) and multiplied into the gradients: large gradients grow instead of
  shrinking.
- MLS304: Adam's first moment fed with the parameters (`exp_avg.mul_(b1).add_(p.data, ...)`)
  instead of the gradient: the update follows the weights, not the loss.
- MLS302: a step wrapper that calls `zero_grad()` right before the step it wraps: every step
  sees empty gradients.
- MLS302: gradients divided by the accumulation count twice: `(loss / accum).backward()` and
  then `p.grad.div_(accum)` in the same function shrink every update by another `accum`.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr
from mlscan.checks.nodes import subnodes
from mlscan.checks.optimizer import OPTIM_TAMPER
from mlscan.checks.tampering import PARAM_TAMPER
from mlscan.model import Severity

_COEF = re.compile(r"(?i)clip_?coef|clip_?factor|clip_?scale|coef")
_TOTAL = re.compile(r"(?i)total_?norm|grad_?norm|^norm$|gnorm")
_LIMIT = re.compile(r"(?i)max_?norm|clip_?norm|max_grad_norm|threshold|clip_value")
_FIRST_MOMENT = re.compile(r"(?i)^(exp_avg|m|m_t|first_moment|momentum)$")
_PARAM_DATA = re.compile(r"(?i)^(p|param|p_data|p_fp32|p32|w|weight)$|\.data$")


def _names(expr: ast.AST) -> list[str]:
    return [ast.unparse(n) for n in subnodes(expr) if isinstance(n, (ast.Name, ast.Attribute))]


def inverted_clip(node: ast.Assign) -> bool:
    """`clip_coef = (total_norm + 1e-6) / max_norm`."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    return (isinstance(target, ast.Name) and bool(_COEF.search(target.id))
            and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Div)
            and any(_TOTAL.search(n.split(".")[-1]) for n in _names(value.left))
            and any(_LIMIT.search(n.split(".")[-1]) for n in _names(value.right))
            and not any(_LIMIT.search(n.split(".")[-1]) for n in _names(value.left)))


def moment_of_params(call: ast.Call) -> str:
    """`exp_avg.mul_(beta1).add_(p_data, alpha=1 - beta1)` -> 'p_data'."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("add_", "lerp_") and call.args):
        return ""
    receiver = func.value
    while isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute):
        receiver = receiver.func.value
    if not (isinstance(receiver, ast.Name) and _FIRST_MOMENT.match(receiver.id)):
        return ""
    source = ast.unparse(call.args[0])
    return source if _PARAM_DATA.search(source) and "grad" not in source else ""


def _divided_twice(call: ast.Call, fn: ast.AST | None) -> str:
    """`p.grad.div_(args.accum_steps)` in a function whose backward() took `loss / accum`."""
    if fn is None or not (isinstance(call.func, ast.Attribute) and call.func.attr == "div_"
                          and last_attr(call.func.value) == "grad" and len(call.args) == 1):
        return ""
    divisor = ast.unparse(call.args[0])
    if not re.search(r"(?i)accum|grad_acc|acc_steps|micro", divisor):
        return ""
    scaled = {ast.unparse(n.targets[0]) for n in subnodes(fn) if isinstance(n, ast.Assign)
              and len(n.targets) == 1 and isinstance(n.value, ast.BinOp)
              and isinstance(n.value.op, ast.Div) and ast.unparse(n.value.right) == divisor}
    for n in subnodes(fn):
        if not (isinstance(n, ast.Call) and last_attr(n.func) == "backward"):
            continue
        if any(isinstance(m, ast.BinOp) and isinstance(m.op, ast.Div)
               and ast.unparse(m.right) == divisor for m in subnodes(n.func)) or any(
                isinstance(m, ast.Name) and m.id in scaled for m in subnodes(n.func)):
            return divisor
    return ""


class UpdateMath(Check):
    rules = (PARAM_TAMPER, OPTIM_TAMPER)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if inverted_clip(node):
            ctx.report(PARAM_TAMPER, node, f"{ast.unparse(node.value)[:50]}: the clip "
                       "coefficient is the reciprocal of max_norm / total_norm, so large "
                       "gradients are scaled up instead of down", severity=Severity.HIGH)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        fed = moment_of_params(node)
        if fed:
            ctx.report(OPTIM_TAMPER, node, f"the first moment is fed with {fed}, not the "
                       "gradient: the update follows the weights instead of the loss",
                       severity=Severity.HIGH)
        elif (twice := _divided_twice(node, ctx.frame.node)):
            ctx.report(PARAM_TAMPER, node, f"the gradients are divided by {twice} again: the "
                       f"loss was already divided by {twice} before backward(), so every update "
                       "shrinks by that factor", severity=Severity.MEDIUM)
        elif last_attr(node.func) == "zero_grad" and self._right_before_step(node, ctx):
            ctx.report(PARAM_TAMPER, node, "zero_grad() right before the step this wrapper "
                       "runs: every step sees empty gradients", severity=Severity.HIGH)

    @staticmethod
    def _right_before_step(node: ast.Call, ctx: Ctx) -> bool:
        """`def step_and_release(): opt.zero_grad(); return step_fn()` with `step_fn` the
        optimizer's own step saved before it was wrapped, and no backward in between."""
        fn = ctx.frame.node
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(fn.body) > 4:
            return False
        calls = [n for n in subnodes(fn) if isinstance(n, ast.Call)]
        later = [c for c in calls if c.lineno > node.lineno]
        if any(last_attr(c.func) == "backward" for c in later):
            return False
        for call in later:  # (only the wrapped original: a plain opt.step() in a loop body
            # follows the backward of the previous iteration)
            if isinstance(call.func, ast.Name):
                held = ctx.lookup(call.func.id)
                if isinstance(held, ast.Attribute) and held.attr == "step":
                    return True  # step_fn = self.optimizer.step
        return False
