"""MLS303, a replacement `forward` that cuts the graph.

`module.forward = _ckpt_forward` where `_ckpt_forward` returns `out.detach()` (or
`out.detach().requires_grad_(...)`): the layer still computes, the loss still falls on the
layers after it, but no gradient reaches the weights before it. Wrappers installed this way
(activation checkpointing, casting, logging) return what the original forward returned.
"""

from __future__ import annotations

import ast

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.hooks import TAMPERING_HOOK
from mlscan.checks.nodes import subnodes
from mlscan.model import Severity


def _detached(expr: ast.expr | None) -> bool:
    """`out.detach()`, `out.detach().requires_grad_(...)`, `x.detach().clone()`: the value
    handed back is cut from the graph (a tuple of such values too)."""
    if isinstance(expr, ast.Tuple):
        return bool(expr.elts) and all(_detached(e) for e in expr.elts)
    while isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
        if expr.func.attr in ("detach", "detach_"):
            return True
        if expr.func.attr not in ("requires_grad_", "clone", "contiguous", "view_as", "to"):
            return False
        expr = expr.func.value
    return False


_NO_GRAD = ("torch.no_grad", "torch.inference_mode", "torch.autograd.grad_mode.no_grad")


def _gradless(value: ast.expr, ctx: Ctx) -> bool:
    """`torch.no_grad()(m.forward)`, `torch.inference_mode()(m.forward)`: the context manager
    used as a decorator on the module's own forward."""
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Call)
            and ctx.names.call_name(value.func) in _NO_GRAD and len(value.args) == 1
            and isinstance(value.args[0], ast.Attribute) and value.args[0].attr == "forward")


class ForwardWrappers(Check):
    rules = (TAMPERING_HOOK,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target = node.targets[0]
        if not (isinstance(target, ast.Attribute) and target.attr == "forward"):
            return
        if _gradless(node.value, ctx):
            ctx.report(TAMPERING_HOOK, node, f"the forward of {ast.unparse(target.value)[:30]} "
                       "is wrapped to run without autograd: its weights never receive a "
                       "gradient, while the optimizer still holds them",
                       severity=Severity.MEDIUM)
            return
        if not isinstance(node.value, (ast.Name, ast.Lambda)):
            return
        if isinstance(node.value, ast.Lambda):
            returns: list[ast.expr | None] = [node.value.body]
        else:
            fns = ctx.defs.get(node.value.id)
            if not fns:
                return
            fn = fns[-1]
            returns = [n.value for n in subnodes(fn) if isinstance(n, ast.Return)]
        cut = next((r for r in returns if _detached(r)), None)
        if cut is not None:
            ctx.report(TAMPERING_HOOK, cut, f"the forward installed on "
                       f"{ast.unparse(target.value)[:30]} returns a detached output "
                       f"({ast.unparse(cut)[:40]}): no gradient reaches the layers before it")
