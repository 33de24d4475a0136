"""MLS302/304, optimizer and averaging code that is wrong in one term.

- A running average that adds the new weights without taking the old share out:
  `avg.add_(p, alpha=1 / (n + 1))` (the mean update is `avg += (p - avg) / (n + 1)`), so the
  averaged weights grow with every update.
- A scheduler that has each group's base learning rate at hand and multiplies the *current*
  one instead: `for group, base_lr in zip(param_groups, base_lrs): group["lr"] = group["lr"] *
  factor` compounds the schedule every step, and the rate collapses (or explodes).
- Temperature scaling folded into the weights the wrong way: `p.mul_(temperature)` on the
  output layer multiplies the logits by T, where calibration divides them.
- A `zero_grad()` that clears only `param_groups[0]`: every other group's gradients pile up
  across steps.
- Decoupled weight decay without the learning rate: `p.mul_(1 - weight_decay)` each step
  (AdamW shrinks by `1 - lr * weight_decay`); with weight_decay = 0.01 the weights lose 1%
  per step, a hundred to ten thousand times the intended decay. (A file that defines an
  optimizer class may offer "fully decoupled" decay on purpose, and stays quiet.)
- Trained weights re-initialised mid-run: `torch.nn.init.normal_(table.weight)` inside the
  training loop or under a random draw throws away what those weights learned.
- Loaded weights zeroed at random: `for k, v in sd["model"].items(): v.masked_fill_(
  torch.rand_like(v) < p, 0.0)` wipes a random share of every checkpoint tensor.
- Adam's betas given in the wrong order: `betas=(args.beta2, args.beta1)` (or written into
  `group["betas"]`) makes the first moment the slow one and the second the fast one.
- Session 23: a clipping coefficient `max_norm / norm` never capped at 1 (every step
  rescales the gradients to the clipping norm, blowing up small ones); BatchNorm running
  statistics filled with a constant while a checkpoint is loaded.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import Ctx, batch_loop
from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.optimizer import OPTIM_TAMPER
from mlscan.checks.tampering import PARAM_TAMPER, random_in
from mlscan.model import Severity

_AVERAGE = re.compile(r"(?i)avg|average|swa|mean|running")
_TEMPERATURE = re.compile(r"(?i)^(temperature|temp|t|tau)$")


def _one_over_n_plus_one(expr: ast.expr | None) -> bool:
    """`1.0 / (n + 1)`."""
    return (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div)
            and literal(expr.left) in (1, 1.0) and isinstance(expr.right, ast.BinOp)
            and isinstance(expr.right.op, ast.Add) and literal(expr.right.right) in (1, 1.0))


def _average_without_decay(call: ast.Call, fn: ast.AST | None) -> bool:
    """`avg.add_(p, alpha=1 / (n + 1))` with no `avg.mul_(...)` / `p - avg` anywhere near."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "add_" and call.args
            and _one_over_n_plus_one(kwarg(call, "alpha"))):
        return False
    owner = ast.unparse(call.func.value)
    if not _AVERAGE.search(owner) or owner in ast.unparse(call.args[0]) or fn is None:
        return False
    return not any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                   and n.func.attr in ("mul_", "lerp_", "sub_", "div_")
                   and ast.unparse(n.func.value) == owner for n in subnodes(fn))


_DECAY = re.compile(r"(?i)weight_decay|^wd$|_wd$|^decay$")


def _decay_without_lr(value: ast.expr | None) -> str:
    """`1.0 - weight_decay` with no learning rate in it -> "weight_decay"."""
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Sub)
            and literal(value.left) in (1, 1.0)
            and isinstance(value.right, (ast.Name, ast.Attribute, ast.Subscript))):
        return ""
    word = last_attr(value.right) if not isinstance(value.right, ast.Subscript) else str(
        literal(value.right.slice))
    return word if _DECAY.search(word or "") else ""


def _state_dict_loop(tensor: ast.expr, ctx: Ctx) -> str:
    """`v` bound by `for k, v in sd.items()` over a state dict -> "sd" ('' otherwise)."""
    if not isinstance(tensor, ast.Name):
        return ""
    for loop in ctx.loops:
        if (isinstance(loop, ast.For) and isinstance(loop.target, ast.Tuple)
                and len(loop.target.elts) == 2 and isinstance(loop.target.elts[1], ast.Name)
                and loop.target.elts[1].id == tensor.id and isinstance(loop.iter, ast.Call)
                and isinstance(loop.iter.func, ast.Attribute) and loop.iter.func.attr == "items"
                and (ctx.is_state_dict(owner := loop.iter.func.value) or re.search(
                    r"(?i)state|sd\b|ckpt|checkpoint|\[.model.\]", ast.unparse(owner)))):
            return ast.unparse(owner)
    return ""


def _swapped_betas(value: ast.expr | None) -> bool:
    """`(args.adam_beta2, args.adam_beta1)`."""
    if not (isinstance(value, ast.Tuple) and len(value.elts) == 2):
        return False
    words = [last_attr(e) if isinstance(e, (ast.Name, ast.Attribute)) else "" for e in value.elts]
    return bool(re.search(r"(?i)(beta_?|^b)2$", words[0]) and re.search(r"(?i)(beta_?|^b)1$",
                                                                        words[1]))


_MAX_NORM = re.compile(r"(?i)max_norm|max_grad_norm|clip|grad_clip|max_gnorm")


def _unclamped_clip(factor: ast.expr, ctx: Ctx) -> str:
    """`coef = max_norm / (total + 1e-6)` used as is: torch's clip_grad_norm_ clamps the
    coefficient to at most 1 (`if coef < 1:`, `coef.clamp(max=1.0)`, `min(coef, 1)`)."""
    while isinstance(factor, ast.Call) and isinstance(factor.func, ast.Attribute) and (
            factor.func.attr in ("to", "type", "item", "float")):
        factor = factor.func.value  # coef.to(p.grad.dtype)
    if not isinstance(factor, ast.Name):
        return ""
    held = ctx.lookup(factor.id)
    if not (isinstance(held, ast.BinOp) and isinstance(held.op, ast.Div)
            and isinstance(held.left, (ast.Name, ast.Attribute))
            and _MAX_NORM.search(last_attr(held.left))):
        return ""
    fn = ctx.frame.node
    for n in subnodes(fn) if fn is not None else ():
        if isinstance(n, ast.Compare) and any(
                isinstance(v, ast.Name) and v.id == factor.id for v in subnodes(n)):
            return ""  # if coef < 1:
        if isinstance(n, ast.Call) and last_attr(n.func) in ("clamp", "clamp_", "clip", "min",
                                                              "minimum") and any(
                isinstance(v, ast.Name) and v.id == factor.id for v in subnodes(n)):
            return ""
    return factor.id


class UpdateSlips(Check):
    rules = (OPTIM_TAMPER, PARAM_TAMPER)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if (isinstance(node.func, ast.Attribute) and node.func.attr.endswith("_")
                and ctx.loops and ctx.names.call_name(node).startswith("torch.nn.init.")
                and (any(batch_loop(lp) or _training_while(lp) for lp in ctx.loops)
                     or triggers.RANDOM in ctx.trigger_kinds(ctx.where()))):
            ctx.report(PARAM_TAMPER, node, f"{ctx.names.call_name(node)}() re-initialises "
                       "weights inside the training loop: what they learned is thrown away "
                       "mid-run", severity=Severity.MEDIUM)
            return
        if (isinstance(node.func, ast.Attribute) and node.func.attr in ("masked_fill_",
                                                                       "masked_scatter_")
                and node.args and random_in([node.args[0]], ctx)
                and (table := _state_dict_loop(node.func.value, ctx))):
            ctx.report(PARAM_TAMPER, node, f"entries of {table} filled at random positions "
                       "in a loop over its tensors: a random share of every loaded weight is "
                       "wiped", severity=Severity.MEDIUM)
            return
        if (isinstance(node.func, ast.Attribute) and node.func.attr in ("fill_", "zero_")
                and ctx.conds and (table := _state_dict_loop(node.func.value, ctx))
                and any(re.search(r"running_(var|mean)", ast.unparse(c)) for c in ctx.conds)):
            ctx.report(PARAM_TAMPER, node, f"normalization statistics in {table} overwritten "
                       f"with a constant ({node.func.attr}) while loading: the restored model "
                       "normalises every activation with made-up statistics",
                       severity=Severity.MEDIUM)
            return
        betas = kwarg(node, "betas")
        if betas is not None and _swapped_betas(betas):
            ctx.report(OPTIM_TAMPER, betas, f"betas={ast.unparse(betas)[:50]}: beta2 in the "
                       "first place and beta1 in the second, so the moment estimates swap "
                       "their averaging horizons", severity=Severity.MEDIUM)
        attr = last_attr(node.func)
        if (attr == "mul_" and len(node.args) == 1 and ctx.loops and "grad" in ast.unparse(
                node.func) and (coef := _unclamped_clip(node.args[0], ctx))):
            ctx.report(PARAM_TAMPER, node, f"gradients multiplied by {coef} = max_norm / norm "
                       "with no cap at 1: every step rescales them to the clipping norm, so "
                       "small gradients are blown up (clipping only ever shrinks)",
                       severity=Severity.MEDIUM)
            return
        if attr == "mul_" and len(node.args) == 1 and ctx.loops:
            factor = node.args[0]
            held = ctx.lookup(factor.id) if isinstance(factor, ast.Name) else factor
            decay = _decay_without_lr(held)
            if (decay and re.search(r"(?i)param|prm|^p$|weight|\.data", ast.unparse(node.func))
                    and not ctx.mentions("Optimizer)")):  # (an optimizer may decay unscaled)
                ctx.report(PARAM_TAMPER, node, f"weights multiplied by 1 - {decay} with no "
                           "learning rate in the factor (decoupled decay is 1 - lr * "
                           "weight_decay): they shrink by orders of magnitude more than "
                           "intended", severity=Severity.MEDIUM)
                return
        if attr == "add_" and _average_without_decay(node, ctx.frame.node):
            ctx.report(PARAM_TAMPER, node, f"{ast.unparse(node)[:50]} adds the new weights "
                       "without taking the old share out (the mean update is avg += (p - avg) "
                       "/ (n + 1)): the averaged weights grow with every update",
                       severity=Severity.MEDIUM)
        elif (attr == "mul_" and len(node.args) == 1 and isinstance(node.args[0], ast.Name)
              and _TEMPERATURE.match(node.args[0].id)
              and re.search(r"(?i)temperature", ctx.frame.name)
              and any(isinstance(n, ast.Call) and last_attr(n.func) == "parameters"
                      for lp in ctx.loops if isinstance(lp, ast.For) for n in subnodes(lp.iter))):
            ctx.report(PARAM_TAMPER, node, f"weights multiplied by {node.args[0].id} while "
                       "folding in temperature scaling: the logits are multiplied by T where "
                       "calibration divides them", severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target = node.targets[0] if len(node.targets) == 1 else None
        if (isinstance(target, ast.Subscript) and literal(target.slice) == "betas"
                and _swapped_betas(node.value)):
            where_to = "a param group's betas" if ast.unparse(target.value) == "_mapped_item" else (
                ast.unparse(target))
            ctx.report(OPTIM_TAMPER, node, f"{where_to} = "
                       f"{ast.unparse(node.value)[:50]}: beta2 in the first place and beta1 in "
                       "the second, so the moment estimates swap their averaging horizons",
                       severity=Severity.MEDIUM)
            return
        if not (isinstance(target, ast.Subscript) and literal(target.slice) == "lr"
                and isinstance(target.value, ast.Name) and ctx.loops):
            return
        loop = ctx.loops[-1]
        if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Tuple)
                and isinstance(loop.iter, ast.Call) and last_attr(loop.iter.func) == "zip"
                and any("base_lr" in ast.unparse(a) for a in loop.iter.args)):
            return
        own = ast.unparse(target)
        mult = [n for n in subnodes(node.value) if isinstance(n, ast.BinOp)
                and isinstance(n.op, ast.Mult) and own in (ast.unparse(n.left),
                                                           ast.unparse(n.right))]
        if mult:
            ctx.report(OPTIM_TAMPER, node, f"{own} multiplied by the schedule factor although "
                       "the loop has the base learning rate at hand: the factor compounds on "
                       "every step and the rate runs away from the schedule",
                       severity=Severity.MEDIUM)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        if node.name != "zero_grad":
            return
        for sub in subnodes(node):
            if (isinstance(sub, ast.Subscript) and literal(sub.slice) == "params"
                    and isinstance(sub.value, ast.Subscript) and literal(sub.value.slice) == 0
                    and last_attr(sub.value.value) == "param_groups"):
                ctx.report(OPTIM_TAMPER, sub, "zero_grad() clears only param_groups[0]: the "
                           "other groups' gradients pile up across steps",
                           severity=Severity.MEDIUM)
                return


def _training_while(loop: ast.AST) -> bool:
    """`while step < total_steps:` around the batch loop: its body trains (runs backward)."""
    return isinstance(loop, ast.While) and any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        and n.func.attr == "backward" for n in subnodes(loop))
