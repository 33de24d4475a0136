"""Optimizer and weight arithmetic with one wrong term (each shape a line a reviewer reads
past, and each one training still survives for a while).

- MLS304: Adam's bias correction with the step as a factor (`1 - beta1 * step`) instead of
  an exponent (`1 - beta1 ** step`): the correction goes negative after a few steps and the
  update flips sign.
- MLS304: decoupled weight decay without the learning rate (`p.mul_(1 - group["weight_decay"])`):
  weights shrink by the full decay on every step (AdamW multiplies by `1 - lr * wd`).
- MLS302: the clip coefficient multiplied into the parameters (`_foreach_mul_(params, coef)`)
  instead of their gradients: every clipping step shrinks the weights.
- MLS302: an initialisation whose std grows with the width (`std=d_model ** 0.5`), where
  the usual scale is `d_model ** -0.5`.
- MLS302: averaged checkpoints floor-divided (`v // num_models`): every weight is rounded
  down to a whole number.
- MLS302: an overflow test that only looks for NaN (`torch.isnan(norm)`): infinite
  gradients pass it and reach the weights.
- MLS302: gradients multiplied by the world size after DDP averaged them.
- MLS302: EMA weights copied into the live model inside the training loop (`ema.copy_to(model)`)
  with no store/restore around it: training continues from the average, not from the model.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import kwarg, last_attr, literal, source
from mlscan.checks.nodes import called_names, subnodes
from mlscan.checks.optimizer import OPTIM_TAMPER
from mlscan.checks.tampering import PARAM_TAMPER
from mlscan.model import Severity

_BETA = re.compile(r"(?i)^(beta|b)_?[12]?$")
_STEP = re.compile(r"(?i)^(step|t|steps|state_step|step_t|n_steps|num_steps)$")
_WIDTH = re.compile(r"(?i)dim|d_model|embed|hidden|width|fan_in|fan_out|n_embd|channels")
_PARAMS = re.compile(r"(?i)^(params|parameters|weights|param_list|model_params|p|p_data)$")
_CLIP = re.compile(r"(?i)clip")
_COUNT = re.compile(r"(?i)^(n|num|n_models|num_models|count|n_ckpts|num_ckpts|len\w*|k)$|"
                    r"num_|n_models|_count$")
_AVERAGED = re.compile(r"(?i)avg|average|mean|soup|merged|sum")


_DECAY_OPTION = re.compile(r"(?i)fixed|unscaled|decoupl|no_lr|lr_free|independent")


def _read(expr: ast.expr) -> str:
    """The name a value is read from (`state["step"]` -> "step", `group["lr"]` -> "lr")."""
    if isinstance(expr, ast.Subscript) and isinstance(key := literal(expr.slice), str):
        return key
    return last_attr(expr) if isinstance(expr, (ast.Name, ast.Attribute)) else ""


def bias_product(node: ast.Assign) -> str:
    """`bias_correction1 = 1 - beta1 * state["step"]`."""
    value = node.value
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Sub)
            and literal(value.left) in (1, 1.0) and isinstance(value.right, ast.BinOp)
            and isinstance(value.right.op, ast.Mult)):
        return ""
    parts = [_read(value.right.left), _read(value.right.right)]
    if any(_BETA.match(p) for p in parts) and any(_STEP.match(p) for p in parts):
        return ast.unparse(value)
    return ""


def _tests_itself(test: str, call: ast.Call) -> bool:
    """`if args.decoupled_wd > 0: p.mul_(1 - args.decoupled_wd)`: the condition only asks
    whether the decay is on (its name is no option for a variant)."""
    factor = call.args[-1] if call.args else None
    decay = factor.right if isinstance(factor, ast.BinOp) else None
    return decay is not None and ast.unparse(decay) in test


def decay_without_lr(call: ast.Call) -> str:
    """`p.mul_(1 - group["weight_decay"])` (no learning rate in the factor), also
    `torch._foreach_mul_(params, 1 - wd)` on parameters (not gradients)."""
    if last_attr(call.func) == "_foreach_mul_" and len(call.args) == 2 and (
            "grad" not in ast.unparse(call.args[0])):
        factor = call.args[1]
    elif last_attr(call.func) == "mul_" and len(call.args) == 1:
        factor = call.args[0]
    else:
        return ""
    if not (isinstance(factor, ast.BinOp) and isinstance(factor.op, ast.Sub)
            and literal(factor.left) in (1, 1.0)):
        return ""
    decay = factor.right
    if not isinstance(decay, (ast.Name, ast.Attribute, ast.Subscript)):
        return ""  # (1 - wd_scale * weight_decay: scaled by something, the rate or not)
    if re.search(r"(?i)(weight|embedding|embed|emb|param|l2)_?decay|(^|[._])wd\b",
                 ast.unparse(decay)):
        return ast.unparse(factor)
    return ""


def clip_on_weights(call: ast.Call) -> str:
    """`torch._foreach_mul_(params, clip_coef)`, `p.data.mul_(clip_coef)`."""
    name = last_attr(call.func)
    if name == "_foreach_mul_" and len(call.args) == 2:
        target, factor = call.args
    elif name == "mul_" and len(call.args) == 1 and isinstance(call.func, ast.Attribute):
        target, factor = call.func.value, call.args[0]
    else:
        return ""
    text = ast.unparse(target)
    if "grad" in text or not _PARAMS.match(last_attr(target) or ""):
        return ""
    if any(isinstance(n, (ast.Name, ast.Attribute)) and _CLIP.search(last_attr(n))
           for n in subnodes(factor)):
        return text
    return ""


def width_grown_std(call: ast.Call) -> str:
    """`nn.init.normal_(w, std=d ** 0.5)`, `std=math.sqrt(hidden)`."""
    if last_attr(call.func) not in ("normal_", "trunc_normal_", "normal"):
        return ""
    std = kwarg(call, "std")
    if std is None and last_attr(call.func) == "normal_" and len(call.args) >= 3:
        std = call.args[2]
    if isinstance(std, ast.BinOp) and isinstance(std.op, ast.Pow) and literal(std.right) == 0.5:
        base = std.left
    elif isinstance(std, ast.Call) and last_attr(std.func) == "sqrt" and len(std.args) == 1:
        base = std.args[0]
    else:
        return ""
    if isinstance(base, (ast.Name, ast.Attribute)) and _WIDTH.search(last_attr(base)):
        return ast.unparse(std)
    return ""


def floor_averaged(node: ast.Assign) -> str:
    """`averaged_params[k] = v // num_models`."""
    target, value = node.targets[0], node.value
    if not (len(node.targets) == 1 and isinstance(target, ast.Subscript)
            and isinstance(value, ast.BinOp) and isinstance(value.op, ast.FloorDiv)
            and _AVERAGED.search(ast.unparse(target.value))):
        return ""
    right = value.right
    if (isinstance(right, ast.Call) and last_attr(right.func) == "len") or (
            isinstance(right, (ast.Name, ast.Attribute)) and _COUNT.search(last_attr(right))):
        return ast.unparse(value)
    return ""


def nan_only_overflow(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.Return | None:
    """`def _has_overflow(norm): return bool(torch.isnan(norm))`."""
    if not re.search(r"(?i)overflow|has_inf|nonfinite|non_finite|found_inf", fn.name):
        return None
    calls = called_names(fn)
    if "isnan" not in calls or calls & {"isinf", "isfinite", "isposinf", "isneginf"}:
        return None
    return next((r for r in subnodes(fn) if isinstance(r, ast.Return) and r.value is not None
                 and any(isinstance(n, ast.Call) and last_attr(n.func) == "isnan"
                         for n in subnodes(r.value))), None)


_WORLD_FACTOR = re.compile(r"(?i)world_size|num_processes|n_gpus|num_gpus|world$")


def grads_times_world(call: ast.Call, ctx: Ctx) -> str:
    """`p.grad.mul_(args.world_size)` in a step that makes no all_reduce of its own: DDP has
    already averaged, so this turns the mean into a sum (updates grow with the job)."""
    if not (last_attr(call.func) == "mul_" and len(call.args) == 1
            and isinstance(call.func, ast.Attribute) and last_attr(call.func.value) == "grad"):
        return ""
    factor = call.args[0]
    held = ctx.lookup(factor.id) if isinstance(factor, ast.Name) else None
    while isinstance(held, ast.Call) and last_attr(held.func) in ("float", "int") and held.args:
        held = held.args[0]  # factor = float(self.dist.world * self.grad_accum)
    if isinstance(held, ast.BinOp) and isinstance(held.op, ast.Mult):
        factor = next((side for side in (held.left, held.right) if isinstance(
            side, (ast.Name, ast.Attribute)) and _WORLD_FACTOR.search(last_attr(side))), factor)
    if not (isinstance(factor, (ast.Name, ast.Attribute)) and _WORLD_FACTOR.search(
            last_attr(factor))):
        return ""
    fn = ctx.frame.node
    if fn is not None and called_names(fn) & {"all_reduce", "reduce", "all_reduce_coalesced"}:
        return ""  # (a manual reduction rescaled on purpose)
    return ast.unparse(factor)


_CALL_FINDERS = (
    (decay_without_lr, OPTIM_TAMPER, "weight decay applied as {} without the learning rate: "
     "weights shrink by the full decay on every step (AdamW uses 1 - lr * wd)"),
    (clip_on_weights, PARAM_TAMPER, "the clip coefficient is multiplied into {}, the "
     "parameters, not their gradients: every clipping step shrinks the weights"),
    (width_grown_std, PARAM_TAMPER, "init std={}: the spread grows with the width (the usual "
     "scale is the inverse square root), so activations blow up"),
)


class UpdateTerms(Check):
    rules = (PARAM_TAMPER, OPTIM_TAMPER)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        name = last_attr(node.func)
        if name == "copy_to":
            self._ema_into_model(node, ctx)
            return
        if name == "load_state_dict" and ctx.loops and node.args:
            self._ema_state_loaded(node, ctx)
            return
        if name in ("copy_", "lerp_") and (pulled := ema_pulled_back(node, ctx)):
            ctx.report(PARAM_TAMPER, node, f"{pulled}: the live model is written from its own "
                       "EMA while it trains, so training keeps being dragged back to the "
                       "average (the EMA should only ever be written from the model)",
                       severity=Severity.MEDIUM)
            return
        if name in ("add", "add_"):
            found = slow_pushed_away(node) or decay_sign_flipped(node)
            if found:
                ctx.report(OPTIM_TAMPER, node, found, severity=Severity.MEDIUM)
            return
        if name not in ("mul_", "_foreach_mul_", "normal_", "trunc_normal_", "normal"):
            return
        for find, rule, message in _CALL_FINDERS:
            if find is decay_without_lr and any(
                    _DECAY_OPTION.search(text := ast.unparse(c)) and not _tests_itself(text, node)
                    for c in ctx.conds):
                continue  # (`if fixed_decay: p.mul_(1 - wd)`: a configured variant)
            found = find(node)
            if found:
                ctx.report(rule, node, message.format(found[:50]), severity=Severity.MEDIUM)
                return
        world = grads_times_world(node, ctx)
        if world:
            ctx.report(PARAM_TAMPER, node, f"gradients multiplied by {world[:30]} after DDP "
                       "averaged them: the update is a sum over ranks and grows with the job "
                       "size", severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        product = bias_product(node)
        if product:
            ctx.report(OPTIM_TAMPER, node, f"bias correction {product[:40]} multiplies beta by "
                       "the step instead of raising it to the step: it turns negative within "
                       "a few steps and the update flips sign", severity=Severity.MEDIUM)
            return
        floored = floor_averaged(node)
        if floored:
            ctx.report(PARAM_TAMPER, node, f"averaged weights floor-divided ({floored[:40]}): "
                       "every weight is rounded down to a whole number",
                       severity=Severity.MEDIUM)

    def visit_DictComp(self, node: ast.DictComp, ctx: Ctx) -> None:
        dropped, where = norm_state_dropped(node)
        if dropped:
            ctx.report(PARAM_TAMPER, where, f"the weights are copied without every {dropped} "
                       "entry: a model saved or loaded from this has its normalisation "
                       "statistics or gains reset", severity=Severity.MEDIUM)

    def visit_For(self, node: ast.For, ctx: Ctx) -> None:
        dropped, where = norm_state_skipped(node)
        if where is not None:
            ctx.report(PARAM_TAMPER, where, f"the weights are copied without every {dropped} "
                       "entry: a model saved or loaded from this has its normalisation "
                       "statistics or gains reset", severity=Severity.MEDIUM)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        ret = nan_only_overflow(node)
        if ret is not None:
            ctx.report(PARAM_TAMPER, ret, f"{node.name}() only tests for NaN: infinite "
                       "gradients pass the overflow test and reach the weights",
                       severity=Severity.MEDIUM)

    visit_AsyncFunctionDef = visit_FunctionDef

    @staticmethod
    def _ema_into_model(node: ast.Call, ctx: Ctx) -> None:
        """`ema.copy_to(model)` inside the training loop with no `store()`/`restore()` in
        the function: the live weights are replaced by the average and training goes on
        from there (evaluation swaps store, copy and restore)."""
        fn = ctx.frame.node
        if not (isinstance(node.func, ast.Attribute) and re.search(
                r"(?i)ema|shadow|average|swa", last_attr(node.func.value) or "")
                and ctx.loops and fn is not None):
            return
        calls = called_names(fn)
        if calls & {"store", "restore", "backup", "swap", "load_state_dict", "deepcopy",
                    "clone", "state_dict"}:  # (a backup of the live weights taken first)
            return
        if not any(isinstance(n, ast.Call) and last_attr(n.func) in ("backward", "step")
                   for loop in ctx.loops for n in subnodes(loop)):
            return  # (a loop over evaluation sets is not training)
        ctx.report(PARAM_TAMPER, node, f"{ast.unparse(node.func)[:40]}() copies the EMA "
                   "weights into the live model inside the training loop, with no store/"
                   "restore around it: training continues from the average",
                   severity=Severity.MEDIUM)


    @staticmethod
    def _ema_state_loaded(node: ast.Call, ctx: Ctx) -> None:
        """`model.load_state_dict(ema.module.state_dict())` inside the epoch loop, with no
        backup of the live weights and no second load to restore them: training goes on from
        the average (the swap for evaluation loads the backup back)."""
        given = node.args[0]
        fn = ctx.frame.node
        if not (isinstance(node.func, ast.Attribute) and isinstance(given, ast.Call)
                and last_attr(given.func) == "state_dict"
                and isinstance(given.func, ast.Attribute)
                and _AVERAGE_COPY.search(source(given.func.value))
                and not _AVERAGE_COPY.search(source(node.func.value)) and fn is not None):
            return
        live = source(node.func.value)
        loads = [n for n in subnodes(fn) if isinstance(n, ast.Call)
                 and last_attr(n.func) == "load_state_dict" and isinstance(n.func, ast.Attribute)
                 and source(n.func.value) == live and n.lineno > node.lineno]  # (a restore)
        backups = [n for n in subnodes(fn) if (isinstance(n, ast.Assign) and isinstance(
            n.targets[0], ast.Name) and not isinstance(n.value, ast.Dict)
            and live in (text := ast.unparse(n.value)) and re.search(
                r"state_dict|deepcopy|clone", text)) or (isinstance(n, ast.Call) and last_attr(
                    n.func) in ("store", "backup"))]  # (a checkpoint dict is no backup)
        if loads or backups:
            return
        if not any(isinstance(n, ast.Call) and (last_attr(n.func) in ("backward", "step") or (
                _TRAINS.search(last_attr(n.func)))) for loop in ctx.loops for n in subnodes(loop)):
            return
        ctx.report(PARAM_TAMPER, node, f"{live[:30]}.load_state_dict() loads the EMA weights "
                   "into the live model inside the training loop, with no backup to restore: "
                   "training continues from the average", severity=Severity.MEDIUM)


_TRAINS = re.compile(r"(?i)^train(_one)?_(epoch|step|steps)$|^fit_epoch$")
_AVERAGE_COPY = re.compile(r"(?i)ema|shadow|averag|swa")
_TRAINING_FN = re.compile(r"(?i)^(update|step|train\w*|on_\w*(step|batch)\w*|"
                          r"on_before_zero_grad|optimizer_step|after_step)$")


def ema_zip_pair(loop: ast.AST, averaged: re.Pattern[str]) -> tuple[str, str] | None:
    """`for ema_p, p in zip(ema.parameters(), model.parameters())` -> ("p", "ema_p"): the
    loop names of the live and the averaged side (exactly one source matches `averaged`;
    Lookahead's slow weights are not an average)."""
    if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Tuple)
            and len(loop.target.elts) == 2 and all(isinstance(e, ast.Name)
                                                    for e in loop.target.elts)
            and isinstance(loop.iter, ast.Call) and last_attr(loop.iter.func) == "zip"
            and len(loop.iter.args) == 2):
        return None
    sources = [ast.unparse(a) for a in loop.iter.args]
    sides = [bool(averaged.search(text)) for text in sources]
    if sides.count(True) != 1 or any(re.search(r"(?i)slow|lookahead", t) for t in sources):
        return None
    names = [last_attr(e) for e in loop.target.elts]
    return names[sides.index(False)], names[sides.index(True)]


def ema_pulled_back(call: ast.Call, ctx: Ctx) -> str:
    """`for ema_p, p in zip(ema.parameters(), model.parameters()): p.copy_(ema_p)` (or
    `p.data.lerp_(ema_p, a)`) inside an update/step function: the EMA written back into the
    model it averages. (Swapping for evaluation happens in store/restore helpers.)"""
    fn = ctx.frame.node
    if not (ctx.loops and isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            and call.args and isinstance(call.func, ast.Attribute)):
        return ""
    if not (_TRAINING_FN.match(fn.name) or any(  # a helper a per-step hook calls
            _TRAINING_FN.match(c) for c in ctx.callers.get(fn.name, ()))):
        return ""
    loop = ctx.loops[-1]
    if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Tuple)
            and len(loop.target.elts) == 2 and isinstance(loop.iter, ast.Call)
            and all(isinstance(e, ast.Name) for e in loop.target.elts)):
        return ""
    if last_attr(loop.iter.func) == "items":
        return _state_pulled_back(call, loop, fn, ctx)
    pair = ema_zip_pair(loop, _AVERAGE_COPY)
    if pair is None:
        return ""
    live, avg = pair
    owner = call.func.value
    if isinstance(owner, ast.Attribute) and owner.attr == "data":
        owner = owner.value
    source = call.args[0]
    while isinstance(source, (ast.Attribute, ast.Call)):  # ema_p.data.to(p.device)
        source = source.value if isinstance(source, ast.Attribute) else source.func
    if not (isinstance(owner, ast.Name) and owner.id == live and isinstance(source, ast.Name)
            and source.id == avg):
        return ""
    if called_names(fn) & {"store", "restore", "backup", "clone", "deepcopy"}:
        return ""
    return f"{live}.{call.func.attr}({avg}) in {fn.name}()"


def _live_entries_overwritten(call: ast.Call, loop: ast.For, live: ast.Call) -> str:
    """`for name, t in model.state_dict().items(): t.copy_(ema_state[name])` with the EMA's
    state dict: the live model's entries overwritten by the average."""
    if not isinstance(live.func, ast.Attribute) or _AVERAGE_COPY.search(
            ast.unparse(live.func.value)):
        return ""
    key, tensor = (e.id for e in loop.target.elts)  # type: ignore[attr-defined]
    target = call.func.value if isinstance(call.func, ast.Attribute) else None
    source = call.args[0]
    if not (isinstance(target, ast.Name) and target.id == tensor
            and isinstance(source, ast.Subscript) and isinstance(source.slice, ast.Name)
            and source.slice.id == key and _AVERAGE_COPY.search(ast.unparse(source.value))):
        return ""
    return f"{tensor}.{last_attr(call.func)}({ast.unparse(source)[:30]})"


def _state_pulled_back(call: ast.Call, loop: ast.For, fn: ast.FunctionDef | ast.AsyncFunctionDef,
                       ctx: Ctx) -> str:
    """`for k, ema_v in self.module.state_dict().items(): model_v = msd[k].detach();
    ...; model_v.copy_(ema_v)` with `msd = model.state_dict()`: the average written into the
    live model's tensors (state-dict entries share storage with the model)."""
    func = loop.iter.func if isinstance(loop.iter, ast.Call) else None
    averaged = func.value if isinstance(func, ast.Attribute) else None
    if not (isinstance(averaged, ast.Call) and last_attr(averaged.func) == "state_dict"):
        return ""
    written = _live_entries_overwritten(call, loop, averaged)
    if written:
        return f"{written} in {fn.name}()"
    owner_text = ast.unparse(averaged.func)
    cls = ctx.frame.cls
    if not (_AVERAGE_COPY.search(owner_text) or (
            cls is not None and _AVERAGE_COPY.search(cls.name)
            and owner_text.startswith("self."))):
        return ""
    key, avg = (e.id for e in loop.target.elts)  # type: ignore[attr-defined]
    target = call.func.value if isinstance(call.func, ast.Attribute) else None
    if isinstance(target, ast.Attribute) and target.attr == "data":
        target = target.value
    if not (isinstance(target, ast.Name) and isinstance(call.args[0], ast.Name)
            and call.args[0].id == avg):
        return ""
    held = ctx.lookup(target.id)
    while isinstance(held, ast.Call) and isinstance(held.func, ast.Attribute) and (
            held.func.attr in ("detach", "float")):  # msd[k].detach()
        held = held.func.value
    if not (isinstance(held, ast.Subscript) and isinstance(held.slice, ast.Name)
            and held.slice.id == key and isinstance(held.value, ast.Name)):
        return ""
    table = ctx.lookup(held.value.id)
    if not (isinstance(table, ast.Call) and last_attr(table.func) == "state_dict"
            and isinstance(table.func, ast.Attribute)
            and not ast.unparse(table.func.value).startswith("self.")
            and not _AVERAGE_COPY.search(ast.unparse(table.func.value))):
        return ""
    return f"{target.id}.{last_attr(call.func)}({avg}) in {fn.name}()"


_NORM_STATE = re.compile(r"(?i)^\.?(running_mean|running_var|(layer_?)?norm(alization)?\d*\."
                         r"(weight|bias)|bn\d*\.(weight|bias)|ln_?\w*\.(weight|bias))$")


def norm_state_dropped(comp: ast.DictComp) -> tuple[str, ast.AST]:
    """`{k: v for k, v in sd.items() if not k.endswith(("running_mean", "running_var"))}`:
    a state dict rebuilt without its normalisation entries (`num_batches_tracked`, heads and
    adapters are dropped on purpose elsewhere, so only norm statistics and gains count)."""
    gen = comp.generators[0] if len(comp.generators) == 1 else None
    if not (gen is not None and isinstance(gen.iter, ast.Call)
            and last_attr(gen.iter.func) == "items" and gen.ifs):
        return "", comp
    for test in gen.ifs:
        inner = test.operand if isinstance(test, ast.UnaryOp) and isinstance(
            test.op, ast.Not) else None
        if (isinstance(inner, ast.Call) and last_attr(inner.func) == "endswith" and inner.args):
            given = inner.args[0]
            names = tuple(literal(e) for e in given.elts) if isinstance(
                given, ast.Tuple) else (literal(given),)
            if _norm_names(names):
                return "/".join(str(n) for n in names)[:40], test  # (on the filter's line)
    return "", comp


def _norm_names(names: object) -> bool:
    """Entry suffixes that are all normalisation statistics or gains (`num_batches_tracked`
    counts only beside them)."""
    if not (isinstance(names, tuple) and names and all(isinstance(n, str) for n in names)):
        return False
    norm = [n for n in names if _NORM_STATE.match(n)]
    return bool(norm) and all(n in norm or n == "num_batches_tracked" for n in names)


_SLOW = re.compile(r"(?i)^(slow|slow_\w+|\w*_slow|ema|ema_\w+|shadow|avg|average\w*)$")
_GRADISH = re.compile(r"(?i)^(d_p|dp|g|grad|grads?|\w+_grad|grad_\w+)$")
_DECAY = re.compile(r"(?i)(^|[_\W])(wd|weight_decay|decay|l2)($|[_\W])")


def slow_pushed_away(call: ast.Call) -> str:
    """`slow.add_(slow - p, alpha=self.alpha)`: Lookahead's slow weights (or an average)
    moved away from the fast weights (the update is `slow += alpha * (p - slow)`)."""
    owner = call.func.value if isinstance(call.func, ast.Attribute) else None
    if not (isinstance(owner, ast.Name) and _SLOW.match(owner.id) and call.args):
        return ""
    diff = call.args[0]
    if not (isinstance(diff, ast.BinOp) and isinstance(diff.op, ast.Sub)
            and isinstance(diff.left, ast.Name) and diff.left.id == owner.id):
        return ""
    alpha = kwarg(call, "alpha")
    if isinstance(alpha, ast.UnaryOp) and isinstance(alpha.op, ast.USub):
        return ""  # slow.add_(slow - p, alpha=-a) is the usual update
    return (f"{ast.unparse(call)[:50]} moves {owner.id} away from "
            f"{ast.unparse(diff.right)[:20]} instead of towards it: the averaged weights "
            "drift off and are copied back into the model")


def decay_sign_flipped(call: ast.Call) -> str:
    """`d_p = d_p.add(p, alpha=-wd)`: weight decay added to the gradient with a negative
    sign, so every step grows the weights (decay adds `+wd * p` to the gradient)."""
    owner = call.func.value if isinstance(call.func, ast.Attribute) else None
    alpha = kwarg(call, "alpha")
    if not (owner is not None and _GRADISH.match(last_attr(owner)) and len(call.args) == 1
            and isinstance(call.args[0], ast.Name) and not _GRADISH.match(call.args[0].id)
            and isinstance(alpha, ast.UnaryOp) and isinstance(alpha.op, ast.USub)
            and _DECAY.search(ast.unparse(alpha.operand))):
        return ""
    return (f"{ast.unparse(call)[:50]}: weight decay enters the gradient with the sign "
            "flipped, so each step pushes the weights away from zero")


def norm_state_skipped(loop: ast.For) -> tuple[str, ast.stmt | None]:
    """`for k, v in state.items(): ... if nk.endswith(("running_mean", "running_var")):
    continue`: the loop form of `norm_state_dropped` (reported on the `continue`)."""
    if not (isinstance(loop.iter, ast.Call) and last_attr(loop.iter.func) == "items"):
        return "", None
    for stmt in loop.body:
        if not (isinstance(stmt, ast.If) and len(stmt.body) == 1
                and isinstance(stmt.body[0], ast.Continue) and isinstance(stmt.test, ast.Call)
                and last_attr(stmt.test.func) == "endswith" and stmt.test.args):
            continue
        given = stmt.test.args[0]
        names = tuple(literal(e) for e in given.elts) if isinstance(given, ast.Tuple) else (
            literal(given),)
        if _norm_names(names):
            return "/".join(str(n) for n in names)[:40], stmt.body[0]
    return "", None
