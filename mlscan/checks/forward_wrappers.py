"""MLS303, a replacement `forward` that cuts the graph.

`module.forward = _ckpt_forward` where `_ckpt_forward` returns `out.detach()` (or
`out.detach().requires_grad_(...)`): the layer still computes, the loss still falls on the
layers after it, but no gradient reaches the weights before it. Wrappers installed this way
(activation checkpointing, casting, logging) return what the original forward returned.

Also a DDP communication hook whose future hands back the local bucket instead of the reduced
one (`return fut.then(lambda f: buffer)`): every rank steps on its own gradients.
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


def _runs_gradless(fn: ast.FunctionDef | ast.AsyncFunctionDef, ctx: Ctx) -> bool:
    """`def _fast(x): with torch.no_grad(), torch.autocast(...): return fwd(x)`: the wrapper
    calls the original forward without autograd."""
    return any(isinstance(n, ast.With) and any(
        isinstance(item.context_expr, ast.Call)
        and ctx.names.call_name(item.context_expr) in _NO_GRAD for item in n.items)
        and any(isinstance(m, ast.Call) for stmt in n.body for m in subnodes(stmt))
        for n in subnodes(fn))


class ForwardWrappers(Check):
    rules = (TAMPERING_HOOK,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        fn = ctx.frame.node
        if not (isinstance(node.func, ast.Attribute) and node.func.attr == "then"
                and len(node.args) == 1 and isinstance(lam := node.args[0], ast.Lambda)
                and len(lam.args.args) == 1 and isinstance(fn, ast.FunctionDef)
                and any(a.arg == "bucket" for a in fn.args.args)):
            return
        arg = lam.args.args[0].arg
        if not any(isinstance(n, ast.Name) and n.id == arg for n in subnodes(lam.body)):
            ctx.report(TAMPERING_HOOK, node, f"the communication hook {fn.name}() hands back "
                       f"{ast.unparse(lam.body)[:30]}, not the all-reduced result: each rank "
                       "steps on its own gradients and the replicas drift apart",
                       severity=Severity.MEDIUM)

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
        if isinstance(node.value, ast.Name) and (fns := ctx.defs.get(node.value.id)) and (
                _runs_gradless(fns[-1], ctx)) and not ctx.mentions("requires_grad_(False)") and (
                not ctx.mentions("requires_grad = False")) and (
                ctx.mentions("optimizer") or ctx.mentions("backward(")
                or ctx.mentions("training_step")):  # (debug wrappers run at inference)
            ctx.report(TAMPERING_HOOK, node, f"the forward installed on "
                       f"{ast.unparse(target.value)[:30]} runs inside no_grad: its weights "
                       "never receive a gradient, while the optimizer still holds them",
                       severity=Severity.MEDIUM)
            return
        cut = next((r for r in returns if _detached(r)), None)
        if cut is not None:
            ctx.report(TAMPERING_HOOK, cut, f"the forward installed on "
                       f"{ast.unparse(target.value)[:30]} returns a detached output "
                       f"({ast.unparse(cut)[:40]}): no gradient reaches the layers before it")
