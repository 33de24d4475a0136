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
- MLS302: a clip coefficient clamped from below (`clamp(clip_coef, min=1.0)`): it never
  clips, and it scales small gradients up.
- MLS302: GPT-2's scaled init inverted: `std=init_std * math.sqrt(2 * n_layer)` grows the
  residual projections with depth instead of shrinking them.
- MLS302: an EMA `restore()` that copies the shadow (EMA) weights back instead of the backup
  it took: the trained weights are lost after the first evaluation.
- MLS302: weights copied from a rolled or permuted copy of themselves
  (`t.copy_(t.roll(1, dims=0))` over `model.state_dict()`): rows move to other tokens/units.
- MLS304: cosine progress measured against the warm-up length
  (`(step - warmup) / warmup_steps`): the rate swings up and down every `warmup` steps.
- MLS302: the all-reduce op switched between AVG and SUM by a condition on the job
  (`ReduceOp.AVG if world <= 16 else ReduceOp.SUM`).
- MLS302: the backward of an all_gather autograd Function returning a fixed rank's slice
  (`return all_grads[0]`) instead of its own rank's.
- MLS304: an Adam step added with a positive step size
  (`torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)`): gradient ascent.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import called_names, subnodes
from mlscan.checks.optimizer import OPTIM_TAMPER
from mlscan.checks.tampering import PARAM_TAMPER
from mlscan.model import Rule, Severity

_COEF = re.compile(r"(?i)clip_?coef|clip_?factor|clip_?scale|coef")
_TOTAL = re.compile(r"(?i)total_?norm|grad_?norm|^norm$|gnorm|^total$")
_LIMIT = re.compile(r"(?i)max_?norm|clip_?norm|max_grad_norm|threshold|clip_val(ue)?$")
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


def negative_blend(call: ast.Call) -> str:
    """`v.mul_(d).add_(x, alpha=d - 1.0)`: an EMA blend whose new-value weight is negative
    (`1 - d` written as `d - 1`), so the average moves away from the model."""
    func = call.func
    alpha = next((k.value for k in call.keywords if k.arg == "alpha"), None)
    if not (isinstance(func, ast.Attribute) and func.attr == "add_" and alpha is not None
            and isinstance(func.value, ast.Call) and isinstance(func.value.func, ast.Attribute)
            and func.value.func.attr == "mul_" and len(func.value.args) == 1):
        return ""
    decay = ast.unparse(func.value.args[0])
    if (isinstance(alpha, ast.BinOp) and isinstance(alpha.op, ast.Sub)
            and ast.unparse(alpha.left) == decay and literal(alpha.right) in (1, 1.0)):
        return ast.unparse(alpha)
    return ""


_SMALL_RATE = re.compile(r"(?i)^(tau|soft_tau|target_tau|polyak(_\w+)?|update_rate)$")
_DECAY = re.compile(r"(?i)^(decay|ema_decay|momentum|beta|ema_momentum|m)$")


def lerp_backwards(call: ast.Call) -> str:
    """`torch._foreach_lerp_(target, source, 1.0 - tau)` (a Polyak update takes `tau`),
    `ema.lerp_(p, decay)` (an EMA takes `1 - decay`): the average jumps to the model."""
    if last_attr(call.func) not in ("lerp_", "_foreach_lerp_") or not call.args:
        return ""
    weight = call.args[-1] if len(call.args) >= (3 if last_attr(call.func) == "_foreach_lerp_"
                                                  else 2) else None
    if weight is None:
        weight = next((k.value for k in call.keywords if k.arg == "weight"), None)
    if (isinstance(weight, ast.BinOp) and isinstance(weight.op, ast.Sub)
            and literal(weight.left) in (1, 1.0) and isinstance(weight.right, ast.Name)
            and _SMALL_RATE.match(weight.right.id)):
        return f"weight {ast.unparse(weight)} (Polyak averaging moves by {weight.right.id})"
    if isinstance(weight, ast.Name) and _DECAY.match(weight.id):
        return f"weight {weight.id} (an EMA moves by 1 - {weight.id})"
    return ""


def inverted_ratio_scale(call: ast.Call) -> str:
    """`torch._foreach_mul_(grads, clamp(total / max_norm, min=1.0))`: gradients multiplied by
    their norm over the limit, so large gradients grow instead of shrinking."""
    if last_attr(call.func) not in ("_foreach_mul_", "mul_") or not call.args:
        return ""
    factor = call.args[-1]
    receiver = call.args[0] if last_attr(call.func) == "_foreach_mul_" else getattr(
        call.func, "value", None)
    if receiver is None or "grad" not in ast.unparse(receiver).lower():
        return ""
    for n in subnodes(factor):
        if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
                and any(_TOTAL.search(x.split(".")[-1]) for x in _names(n.left))
                and any(_LIMIT.search(x.split(".")[-1]) for x in _names(n.right))
                and not any(_LIMIT.search(x.split(".")[-1]) for x in _names(n.left))):
            return ast.unparse(n)[:40]
    return ""


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


_DEPTH = re.compile(r"(?i)n_?layers?|num_(hidden_)?layers|depth|n_blocks|num_blocks")
_PARAMS = re.compile(r"(?i)^(p|param|params|p_data|weights?|params_with_grad|\w*params)$")


def _clamped_up(node: ast.Assign) -> bool:
    """`clip_coef = torch.clamp(clip_coef, min=1.0)` (the cap is `max=1.0`)."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Name) and _COEF.search(target.id)
            and isinstance(value, ast.Call) and last_attr(value.func) in ("clamp", "clip",
                                                                           "clamp_min")):
        return False
    bound = next((k.value for k in value.keywords if k.arg in ("min", "a_min")), None)
    if bound is None and last_attr(value.func) == "clamp_min" and value.args:
        bound = value.args[-1]
    has_cap = any(k.arg in ("max", "a_max") for k in value.keywords)
    return bound is not None and literal(bound) in (1, 1.0) and not has_cap


def _inverted_scaled_init(call: ast.Call) -> str:
    """`normal_(p, std=init_std * math.sqrt(2 * n_layer))`."""
    if last_attr(call.func) not in ("normal_", "trunc_normal_", "normal"):
        return ""
    std = next((k.value for k in call.keywords if k.arg == "std"), None)
    if not (isinstance(std, ast.BinOp) and isinstance(std.op, ast.Mult)):
        return ""
    for side in (std.left, std.right):
        if (isinstance(side, ast.Call) and last_attr(side.func) == "sqrt" and any(
                isinstance(n, (ast.Name, ast.Attribute)) and _DEPTH.search(last_attr(n))
                for n in subnodes(side))):
            return ast.unparse(std)
    return ""


def _progress_over_warmup(node: ast.Assign, fn: ast.AST | None) -> bool:
    """`progress = (step - warmup_steps) / max(1, warmup_steps)` in a cosine schedule."""
    value = node.value
    if fn is None or not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Div)
                          and isinstance(value.left, ast.BinOp)
                          and isinstance(value.left.op, ast.Sub)):
        return False
    offset = ast.unparse(value.left.right)
    skip = {id(n.func) for n in subnodes(value.right) if isinstance(n, ast.Call)} | {
        id(n.value) for n in subnodes(value.right) if isinstance(n, ast.Attribute)}
    below = {ast.unparse(n) for n in subnodes(value.right) if isinstance(n, (
        ast.Name, ast.Attribute)) and id(n) not in skip}  # (whole chains: self.warmup_steps)
    return (bool(re.search(r"(?i)warm", offset)) and below == {offset}
            and any(isinstance(n, ast.Call) and last_attr(n.func) == "cos"
                    for n in subnodes(fn)))


def _ascent_step(call: ast.Call, ctx: Ctx) -> str:
    """`torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)` or
    `p.addcdiv_(exp_avg, denom, value=step_size)` with a step size that is not negated."""
    func = last_attr(call.func)
    size: ast.expr | None
    if func == "_foreach_addcdiv_" and len(call.args) >= 4:
        target, size = call.args[0], call.args[3]
    elif func == "addcdiv_" and isinstance(call.func, ast.Attribute):
        target = call.func.value
        size = next((k.value for k in call.keywords if k.arg == "value"), None) or (
            call.args[2] if len(call.args) > 2 else None)
    else:
        return ""
    if size is None or not _PARAMS.match(last_attr(target).replace(".data", "")) or (
            isinstance(target, ast.Attribute) and target.attr == "data"
            and not _PARAMS.match(last_attr(target.value))):
        return ""
    if isinstance(size, ast.UnaryOp) and isinstance(size.op, ast.USub):
        return ""
    held = ctx.lookup(size.id) if isinstance(size, ast.Name) else size
    if held is None or any(isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub)
                           for n in subnodes(held)):
        return ""
    named = ast.unparse(size)
    return named if re.search(r"(?i)step_size|lr|learning_rate", named) else ""


def _restores_shadow(call: ast.Call, ctx: Ctx) -> str:
    """`def restore(self, ...): p.copy_(self.shadow[n])` in a class that keeps
    `self.backup`: the EMA weights go back into the model instead of the saved ones."""
    frame = ctx.frame
    if not (frame.cls is not None and re.search(r"(?i)^_?restore", frame.name)
            and isinstance(call.func, ast.Attribute) and call.func.attr in ("copy_", "set_")
            and call.args):
        return ""
    source: ast.expr | None = call.args[0]
    while isinstance(source, (ast.Call, ast.Subscript)):
        source = source.func.value if isinstance(source, ast.Call) and isinstance(
            source.func, ast.Attribute) else getattr(source, "value", None)
    if not (isinstance(source, ast.Attribute) and re.search(r"(?i)shadow|ema", source.attr)):
        return ""
    cls = ctx.class_defs.get(frame.cls.name)
    keeps_backup = cls is not None and any(
        isinstance(n, ast.Attribute) and re.search(r"(?i)backup|stash|orig", n.attr)
        for n in subnodes(cls))
    return f"self.{source.attr}" if keeps_backup else ""


def _self_permuted(call: ast.Call, ctx: Ctx) -> str:
    """`t.copy_(t.roll(1, dims=0))` with `t` from a loop over `state_dict()`/`parameters()`."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("copy_", "set_")
            and isinstance(func.value, ast.Name) and call.args):
        return ""
    own = func.value.id
    source = call.args[0]
    moved = (isinstance(source, ast.Call) and last_attr(source.func) in ("roll", "flip", "flipud")
             and own in {ast.unparse(source.func.value) if isinstance(source.func, ast.Attribute)
                         and last_attr(source.func.value) != "torch" else "",
                         ast.unparse(source.args[0]) if source.args else ""}) or (
        isinstance(source, ast.Subscript) and ast.unparse(source.value) == own
        and any(isinstance(n, ast.Call) and last_attr(n.func) in ("randperm", "permutation")
                for n in subnodes(source.slice)))
    if not moved:
        return ""
    weights = any(isinstance(loop, ast.For) and own in {
        n.id for n in subnodes(loop.target) if isinstance(n, ast.Name)} and re.search(
        r"state_dict|parameters|named_parameters|param", ast.unparse(loop.iter))
        for loop in ctx.loops)
    return ast.unparse(source)[:40] if weights else ""


_CallShape = tuple[Callable[[ast.Call, Ctx], str], Rule, str, Severity]
_CALL_SHAPES: tuple[_CallShape, ...] = (
    (_self_permuted, PARAM_TAMPER, "weights overwritten with {}, a rolled or permuted copy of "
     "themselves: every row now belongs to another token or unit", Severity.MEDIUM),
    (lambda call, ctx: _inverted_scaled_init(call), PARAM_TAMPER, "std={}: the scaled init "
     "multiplies by the square root of the depth instead of dividing, so residual projections "
     "grow with depth", Severity.MEDIUM),
    (_ascent_step, OPTIM_TAMPER, "the Adam step is added with +{}: the parameters move up the "
     "gradient (the step size must be negated)", Severity.HIGH),
    (_restores_shadow, PARAM_TAMPER, "restore() copies {} (the EMA weights) back into the model "
     "instead of the backup it took: the trained weights are lost", Severity.MEDIUM),
    (lambda call, ctx: moment_of_params(call), OPTIM_TAMPER, "the first moment is fed with {}, "
     "not the gradient: the update follows the weights instead of the loss", Severity.HIGH),
    (lambda call, ctx: negative_blend(call), PARAM_TAMPER, "EMA blend weighted with alpha={}, "
     "a negative weight: the average is pushed away from the model instead of towards it",
     Severity.MEDIUM),
    (lambda call, ctx: lerp_backwards(call), PARAM_TAMPER, "target average updated with {}: "
     "the average jumps to the model (or barely moves) instead of trailing it",
     Severity.MEDIUM),
    (lambda call, ctx: inverted_ratio_scale(call), PARAM_TAMPER, "gradients multiplied by {} "
     "(norm over limit): large gradients grow instead of being clipped", Severity.MEDIUM),
    (lambda call, ctx: _divided_twice(call, ctx.frame.node), PARAM_TAMPER, "the gradients are "
     "divided by {0} again: the loss was already divided by {0} before backward(), so every "
     "update shrinks by that factor", Severity.MEDIUM),
)
"""Call shapes in the order they are tried: (finder, rule, message with `{}` for what the
finder returned, severity)."""
_SHAPE_CALLS = frozenset({"copy_", "set_", "normal_", "trunc_normal_", "normal", "addcdiv_",
                          "_foreach_addcdiv_", "add_", "lerp_", "div_", "_foreach_mul_",
                          "mul_", "_foreach_lerp_"})
"""The methods those finders look at (every other call skips them)."""


def _reduction_switched(value: ast.expr) -> ast.IfExp | None:
    """`dist.ReduceOp.AVG if world <= 16 else dist.ReduceOp.SUM`: two reduce ops chosen by a
    condition (AVG vs SUM differ by a factor of the world size)."""
    if not (isinstance(value, ast.IfExp) and isinstance(value.body, ast.Attribute)
            and isinstance(value.orelse, ast.Attribute)):
        return None
    ops = {value.body.attr, value.orelse.attr}
    if len(ops) == 2 and ops <= {"AVG", "SUM", "MEAN", "avg", "sum", "mean"} and (
            "ReduceOp" in ast.unparse(value.body) or "ReduceOp" in ast.unparse(value.orelse)):
        return value
    return None


class UpdateMath(Check):
    rules = (PARAM_TAMPER, OPTIM_TAMPER)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if _clamped_up(node):
            ctx.report(PARAM_TAMPER, node, f"{ast.unparse(node.value)[:50]}: the clip "
                       "coefficient is clamped from below, so it never clips and scales small "
                       "gradients up (the cap is max=1.0)", severity=Severity.HIGH)
        elif _progress_over_warmup(node, ctx.frame.node):
            ctx.report(OPTIM_TAMPER, node, f"{ast.unparse(node.value)[:50]}: the cosine "
                       "progress is measured against the warm-up length, not the decay length, "
                       "so the learning rate swings up and down", severity=Severity.MEDIUM)
        if inverted_clip(node):
            ctx.report(PARAM_TAMPER, node, f"{ast.unparse(node.value)[:50]}: the clip "
                       "coefficient is the reciprocal of max_norm / total_norm, so large "
                       "gradients are scaled up instead of down", severity=Severity.HIGH)
        switched = _reduction_switched(node.value)
        if switched is not None:
            kinds = ctx.classify(switched.test, ctx.where()) & triggers.STRONG
            if kinds:
                ctx.report(PARAM_TAMPER, node, f"the all-reduce op switches between "
                           f"{ast.unparse(switched.body)} and {ast.unparse(switched.orelse)} by "
                           f"a condition on {triggers.describe(kinds)}: on those jobs the "
                           "reduced gradients are world-size times too large (or small)",
                           severity=Severity.MEDIUM)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        """`return all_grads[0]` in the backward of an all_gather autograd Function: every rank
        takes rank 0's slice of the gradient instead of its own (`[dist.get_rank()]`)."""
        value = node.value
        if not (ctx.frame.name == "backward" and ctx.frame.cls is not None
                and isinstance(value, ast.Subscript) and isinstance(literal(value.slice), int)):
            return
        cls = ctx.class_defs.get(ctx.frame.cls.name)
        forward = next((f for f in cls.body if isinstance(f, ast.FunctionDef)
                        and f.name == "forward"), None) if cls is not None else None
        if forward is not None and called_names(forward) & {"all_gather",
                                                             "all_gather_into_tensor"}:
            ctx.report(PARAM_TAMPER, node, f"backward of the gather returns "
                       f"{ast.unparse(value)[:30]}, a fixed rank's slice: every rank gets "
                       "another rank's gradient instead of its own", severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        attr = last_attr(node.func)
        if attr not in _SHAPE_CALLS:
            if attr == "zero_grad" and self._right_before_step(node, ctx):
                ctx.report(PARAM_TAMPER, node, "zero_grad() right before the step this "
                           "wrapper runs: every step sees empty gradients",
                           severity=Severity.HIGH)
            return
        for find, rule, message, severity in _CALL_SHAPES:  # the first shape that matches
            found = find(node, ctx)
            if found:
                ctx.report(rule, node, message.format(found), severity=severity)
                return

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
