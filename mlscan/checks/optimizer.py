"""MLS304: learning rate, optimizer state, param groups and scheduler state changed from outside
the optimizer/scheduler (split from tampering.py, which handles the tensors themselves)."""

from __future__ import annotations

import ast
import re
from dataclasses import replace

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import DATA, HOOK, TEARDOWN, THREAD, Ctx, Where
from mlscan.checks.names import (
    NOT_LITERAL,
    kwarg,
    last_attr,
    literal,
    masked_by_pruning,
    strip_views,
)
from mlscan.checks.nodes import called_names, subnodes
from mlscan.checks.tampering import INPLACE, random_in
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

OPTIM_TAMPER = register(Rule(
    code="MLS304", name="optimizer-state-tampering", severity=Severity.HIGH,
    confidence=Confidence.MEDIUM, cwe=506,
    summary="Learning rate or optimizer state changed outside a scheduler or optimizer step.",
    doc=RuleDoc(
        what="Flags writes to `param_groups[...]['lr'|'momentum'|'betas'|'weight_decay']` that "
        "negate, randomize or blow up the value, happen in hooks or behind trigger conditions, "
        "and any write to optimizer state (`exp_avg`, `exp_avg_sq`, `momentum_buffer`) outside "
        "the optimizer's own step/load code. Setting `group['lr'] = lr` from a schedule stays "
        "quiet.",
        why="A negative or random learning rate, or a corrupted second-moment estimate, ruins "
        "training while every line of the training loop still looks normal.",
        example="optimizer.param_groups[0]['lr'] *= -1",
        use_instead="Change learning rates with torch.optim.lr_scheduler; never edit state.",
        references=("https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate",))))

_STATE_OWNERS = re.compile(r"(?i)^_?step(_\w+)?$|(^|_)(load\w*|\w*state_dict\w*|__init__|init\w*|"
                           r"_?single_tensor\w*|_?multi_tensor\w*)($|_)")
_OPTIM_CLASS = re.compile(r"(?i)optim|adam|sgd|lamb|lion|rmsprop|adagrad|adafactor|muon|shampoo")
_LOOKAHEAD = re.compile(r"(?i)lookahead|ranger")
_OPT_KEYS = frozenset({"lr", "initial_lr", "max_lr", "min_lr", "peak_lr", "base_lr", "momentum",
                       "betas", "weight_decay", "eps", "dampening", "lr_scale", "lr_mult",
                       "lr_multiplier"})
_STATE_KEYS = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer",
                         "square_avg", "acc_delta", "sum", "step"})
_MOMENT_KEYS = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"})


def _remap(value: ast.expr) -> bool:
    """`[mapping[p] for p in group["params"]]`: every parameter swapped for its moved copy
    (device placement, FSDP/DTensor wrapping), none dropped: no filter, no slice."""
    return isinstance(value, (ast.ListComp, ast.GeneratorExp)) and all(
        not gen.ifs for gen in value.generators) and isinstance(
        value.generators[0].iter, ast.Subscript) and literal(
        value.generators[0].iter.slice) == "params"


_SCHED_ATTRS = frozenset({"base_lrs", "last_epoch", "_step_count"})
_REPEATED = re.compile(r"(?i)^(step|get_lr|lr|current_lr|on_\w*(batch|step)\w*|"
                       r"training_step|train_step)$")


_SCHEDULE_WORDS = re.compile(r"(?i)step|iter|epoch|progress|warmup|decay|frac|ratio|scale|"
                             r"factor|mult|cos|sched|get_lr|lr_at|lr_for|lambda|it$|^t$|^i$")


def _fights_scheduler(value: ast.expr, ctx: Ctx) -> bool:
    """`opt.param_groups[0]["lr"] = cfg["lr"]` next to `scheduler.step()`: a fixed rate
    written over the one the scheduler keeps (warmup code computes it from the step)."""
    fn = ctx.frame.node
    if fn is None or any(isinstance(n, (ast.Name, ast.Attribute)) and _SCHEDULE_WORDS.search(
            last_attr(n)) for n in ctx.walk_values(value)):
        return False
    return any(isinstance(n, ast.Call) and last_attr(n.func) == "step"
               and isinstance(n.func, ast.Attribute) and "sched" in last_attr(n.func.value).lower()
               for n in subnodes(fn))


_ARITH_INPLACE = frozenset({"mul_", "div_", "add_", "sub_", "zero_", "fill_", "pow_", "sqrt_",
                            "addcmul_", "addcdiv_", "lerp_", "clamp_", "neg_", "normal_"})
_STEP_NAME = re.compile(r"(?i)^_?step(_\w+)?$|single_tensor|multi_tensor")


def _rescales(node: ast.AST) -> bool:
    """`s["exp_avg_sq"].div_(step)`, `.zero_()`: arithmetic on the moments, not a move."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
        node.func.attr in _ARITH_INPLACE or node.func.attr in (
            "_foreach_mul_", "_foreach_div_", "_foreach_add_", "_foreach_sub_", "_foreach_zero_"))


def _second_moment_only(node: ast.AST, key: str, where: Where) -> bool:
    """`st["exp_avg_sq"] = torch.zeros_like(st["exp_avg_sq"])` on load, with the first moment
    kept: Adam then divides by a near-zero denominator and takes huge steps. (Resetting both
    moments is a fresh optimizer.)"""
    if key not in ("exp_avg_sq", "max_exp_avg_sq"):
        return False
    value = node.value if isinstance(node, ast.Assign) else node
    if not (isinstance(value, ast.Call) and last_attr(value.func) in (
            "zeros_like", "zeros", "zero_", "new_zeros")):
        return False
    fn = where.frames[-1].node if where.frames else None
    return fn is not None and not any(
        isinstance(n, ast.Subscript) and literal(n.slice) in ("exp_avg", "momentum_buffer")
        and isinstance(n.ctx, ast.Store) for n in subnodes(fn))


def _scaling_rule(value: ast.expr, ctx: Ctx) -> bool:
    """`[lr * ratio for lr in sched.base_lrs]` with `ratio = new_bs / old_bs`: the linear
    scaling rule on resume. A constant, random or trigger-dependent factor does not count."""
    if not (isinstance(value, ast.ListComp) and isinstance(value.elt, ast.BinOp)
            and isinstance(value.elt.op, (ast.Mult, ast.Div))):
        return False
    factors = [s for s in (value.elt.left, value.elt.right) if not (
        isinstance(s, ast.Name) and any(isinstance(t, ast.Name) and t.id == s.id
                                        for g in value.generators for t in subnodes(g.target)))]
    if len(factors) == 1 and isinstance(factors[0], ast.Name):
        held = ctx.lookup(factors[0].id)  # ratio = loss / mean: a loss spike, not a batch ratio
        if isinstance(held, ast.expr) and re.search(r"(?i)loss|spike|grad_?norm",
                                                    ast.unparse(held)):
            return False
    return len(factors) == 1 and _fold(factors[0], ctx) is None and not _suspicious_value(
        None, factors[0], ctx)


def _compounds(target: ast.expr, op: ast.operator | None, value: ast.expr) -> bool:
    """`g["lr"] *= 0.995`, `g["lr"] = g["lr"] * 0.97`: the rate scaled from its current value,
    so every call compounds (a schedule computes it from the step instead)."""
    if isinstance(op, (ast.Mult, ast.Div)):
        return True
    if op is not None or not isinstance(value, ast.BinOp) or not isinstance(
            value.op, (ast.Mult, ast.Div)):
        return False
    text = ast.unparse(target)
    return any(isinstance(n, ast.Subscript) and ast.unparse(n) == text for n in subnodes(value))


_BASE_RATES = frozenset({"lr", "initial_lr", "base_lr"})
"""The current rate and the base rates LR schedulers scale from."""


def _grows(op: ast.operator | None, value: ast.expr, ctx: Ctx | None = None) -> bool:
    """`max(g["weight_decay"], 1e-4) * 2.0`, `g["weight_decay"] *= 1.5`: multiplied by a
    constant above 1, or by `1 + x` (`wd * step * (1 + epoch / epochs)`, also through a name
    bound to it)."""
    sides = [value] if isinstance(op, ast.Mult) else [value] if (
        op is None and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult)) else []
    factors: list[ast.expr] = []
    while sides:
        side = sides.pop()
        if isinstance(side, ast.BinOp) and isinstance(side.op, ast.Mult):
            sides += [side.left, side.right]
        else:
            factors.append(side)

    def above_one(side: ast.expr, depth: int = 0) -> bool:
        if isinstance(side, ast.Constant):
            return (isinstance(side.value, (int, float)) and not isinstance(side.value, bool)
                    and side.value > 1)
        if isinstance(side, ast.BinOp) and isinstance(side.op, ast.Add):
            return literal(side.left) in (1, 1.0) and not isinstance(side.right, ast.UnaryOp)
        if isinstance(side, ast.Name) and ctx is not None and depth == 0:
            held = ctx.lookup(side.id)
            return isinstance(held, ast.expr) and above_one(held, 1)
        return False
    return any(above_one(f) for f in factors)


_JOB_SIZE = re.compile(r"(?i)world|n_?gpus?$|num_gpus|num_devices|n_?devices$|replicas|nproc")


def _rescaled_after_restore(node: ast.AST, value: ast.expr, ctx: Ctx) -> bool:
    """`g["lr"] = g["lr"] * world_size` after `optimizer.load_state_dict(...)` in the same
    function: the restored rate already holds the scaling. A ratio (`* new / old`) is the
    linear scaling rule for a changed job size and stays quiet."""
    fn = ctx.frame.node
    if fn is None or "load_state_dict" not in called_names(fn) or not any(
            isinstance(n, ast.Name | ast.Attribute) and _JOB_SIZE.search(last_attr(n))
            for n in subnodes(value)) or any(
            isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div | ast.FloorDiv)
            for n in subnodes(value)):
        return False
    line = getattr(node, "lineno", 0)
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr == "load_state_dict" and n.lineno < line
               and re.search(r"opt|sched", ast.unparse(n.func.value).lower())
               for n in subnodes(fn))


_RAMP = re.compile(r"(?i)warm|ramp")
_STEP_WORD = re.compile(r"(?i)step|iter|epoch")


def _ramp_factor(value: ast.expr, ctx: Ctx) -> bool:
    """`g["lr"] * alpha` with `alpha = (global_step + 1) / warmup`: a warmup ratio, meant to
    scale the base rate, applied to the current one."""
    for node in subnodes(value):
        held: ast.AST | None = node
        if isinstance(node, ast.Name):
            held = ctx.lookup(node.id) or node
        if not isinstance(held, ast.BinOp) or not isinstance(held.op, ast.Div):
            continue
        words = [last_attr(n) for n in subnodes(held) if isinstance(n, (ast.Name, ast.Attribute))]
        if any(_STEP_WORD.search(w) for w in words) and any(_RAMP.search(w) for w in words):
            return True
    return False


def _ramp_word(node: ast.AST) -> bool:
    return isinstance(node, (ast.Name, ast.Attribute)) and bool(_RAMP.search(last_attr(node)))


def _uncapped_warmup(value: ast.expr, where: Where, ctx: Ctx) -> bool:
    """`g["lr"] = base * (epoch + 1) / warmup_epochs` with no `if epoch < warmup`, no
    `min(1, ...)` and no loop over the warm-up steps only: the ramp never ends."""
    ramps = [n for n in subnodes(value) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
             and any(_STEP_WORD.search(last_attr(m)) for m in subnodes(n.left)
                     if isinstance(m, (ast.Name, ast.Attribute)))
             and any(_RAMP.search(last_attr(m)) for m in subnodes(n.right)
                     if isinstance(m, (ast.Name, ast.Attribute)))]
    if not ramps or any(isinstance(n, ast.Call) and last_attr(n.func) in ("min", "clip", "clamp")
                        for n in subnodes(value)):
        return False
    loops = [loop.iter if isinstance(loop, ast.For) else loop.test for loop in where.loops]
    if any(_ramp_word(n) for expr in (*where.conds, *loops) for n in subnodes(expr)):
        return False  # `if step < warmup_steps:`, `for step in range(warmup_steps):`
    if any(isinstance(n, ast.Compare) and any(_STEP_WORD.search(last_attr(m))
                                               for m in subnodes(n)) for c in where.conds
           for n in subnodes(c)):
        return False  # `if epoch < 5:`
    return not any(_RAMP.search(f.name) for f in where.frames)


_OVERFLOW = re.compile(r"(?i)^(found_inf|found_nan|has_inf|has_nan|inf_found|overflow|"
                       r"is_overflow|grads_overflow|nonfinite|non_finite)$")


def _step_on_overflow(call: ast.Call, ctx: Ctx) -> str:
    """`if found_inf: ...; optimizer.step()`: the branch for overflowed gradients steps."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "step"
            and re.search(r"(?i)optim|opt$", ast.unparse(call.func.value))):
        return ""
    for cond in ctx.conds:
        guard = getattr(cond, "guard_of", None)
        if getattr(cond, "else_branch", False) or (guard is not None and not (
                guard.lineno <= call.lineno <= (guard.end_lineno or 0))):
            continue  # (after `if found_inf: ...; return` the step is the normal path)
        if isinstance(cond, (ast.Name, ast.Attribute)) and _OVERFLOW.match(last_attr(cond)):
            return ast.unparse(cond)
    return ""


def _absurd_state_write(node: ast.AST, ctx: Ctx) -> str:
    """`exp_avg_sq.clamp_(max=1e-12)`, `.mul_(1e-3)`, `.mul_(16)`: optimizer state forced to
    values no update rule produces."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return ""
    op = node.func.attr
    values = [_fold(a, ctx) for a in [*node.args, *(k.value for k in node.keywords)]]
    numbers = [v for v in values if v is not None]
    if op in ("clamp_", "clip_", "clamp_max_") and any(0 <= v <= 1e-6 for v in numbers):
        return f"clamped to at most {min(numbers):g}: the update size explodes"
    if op == "mul_" and numbers and (0 < numbers[0] <= 1e-2 or numbers[0] >= 10):
        return f"multiplied by {numbers[0]:g}: the update size jumps"
    return ""


def _scaled_by_constant(value: ast.expr) -> bool:
    """`tree_map(lambda v: v * 256.0 + 1e-6, nu)`, `nu * 0.5`: multiplied by a number."""
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Mult, ast.Div)) and any(
        isinstance(literal(side), (int, float)) and not isinstance(literal(side), bool)
        and literal(side) not in (0, 1) for side in (n.left, n.right)) for n in subnodes(value))


def _loop_key(name: str, ctx: Ctx) -> str | None:
    """The moment key a loop variable takes when it runs over a small tuple of literals
    (directly, through a name, a self attribute or an `__init__` default)."""
    seq = ctx.follow(ctx.loop_source(name))
    if isinstance(seq, (ast.Tuple, ast.List, ast.Set)):
        keys = [literal(e) for e in seq.elts]
        return next((k for k in keys if isinstance(k, str) and k in _MOMENT_KEYS), None)
    return None


def _has_step(cls_name: str, ctx: Ctx) -> bool:
    """A hand-written optimizer defines step(); `AdamMonitor` with update()/stabilize() is a
    class that reaches into someone else's optimizer."""
    cls = ctx.class_defs.get(cls_name)
    return cls is None or any(isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                              and f.name in ("step", "_step", "update_step", "_single_tensor_step")
                              for f in cls.body)


def _fold(expr: ast.expr, ctx: Ctx) -> float | None:
    """A number, also `10**6`, `1e3 * 5` or a name bound to one."""
    return triggers.arith(expr, ctx.const)


def _key_text(expr: ast.expr, ctx: Ctx) -> object:
    """A key as written (`"exp_avg_sq"`) or held by a class attribute (`self._MOMENT_KEY`
    with `_MOMENT_KEY = "exp_avg_sq"` in the class body)."""
    key = literal(expr)
    if (key is NOT_LITERAL or key is None) and isinstance(expr, ast.Attribute) and isinstance(
            expr.value, ast.Name) and expr.value.id == "self":
        held = ctx.value_of(expr)
        return literal(held) if isinstance(held, ast.Constant) else key
    return key


def _opt_subscript(target: ast.expr, ctx: Ctx, where: Where, depth: int = 2) -> tuple[str, str]:
    """('group', key) for `param_groups[i][key]`/`g[key]`; ('state', key) for optimizer state
    (with depth < 2, also through a name: `buf = opt.state[p]["momentum_buffer"]; buf.mul_(0)`;
    rebinding a name is not a write, so assignments do not follow names)."""
    if isinstance(target, ast.Name) and depth < 2:
        value = ctx.lookup(target.id)
        return _opt_subscript(value, ctx, where, depth + 1) if value is not None else ("", "")
    if (isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute)
            and target.func.attr in ("view", "reshape", "flatten", "view_as", "detach")):
        return _opt_subscript(target.func.value, ctx, where, depth)  # a view shares storage
    if (isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute)
            and target.func.attr == "get" and target.args
            and _key_text(target.args[0], ctx) in _MOMENT_KEYS):
        return "state", str(_key_text(target.args[0], ctx))  # v = state.get("exp_avg_sq")
    if not isinstance(target, ast.Subscript):
        return "", ""
    key = _key_text(target.slice, ctx)
    if isinstance(target.slice, ast.Name) and not isinstance(key, str):
        key = _loop_key(target.slice.id, ctx)  # for key in self.keys: st[key].zero_()
    if (isinstance(target.slice, ast.Subscript) and isinstance(target.slice.value, ast.Name)
            and isinstance(index := literal(target.slice.slice), int)):
        table = ctx.lookup(target.slice.value.id) or ctx.resolve(target.slice.value)
        if isinstance(table, (ast.Tuple, ast.List)) and -len(table.elts) <= index < len(
                table.elts):
            key = literal(table.elts[index])  # st[_ADAM_KEYS[-1]] with a tuple of key names
    if not isinstance(key, str):
        return "", ""
    base = target.value
    if key in _OPT_KEYS and isinstance(base, ast.Attribute) and base.attr == "defaults" and not (
            isinstance(base.value, ast.Name) and base.value.id == "self"):
        return "defaults", key
    if key in _OPT_KEYS:
        if isinstance(base, ast.Subscript) and last_attr(base.value) == "param_groups":
            return "group", key
        if isinstance(base, ast.Name) and ctx.group_name(base.id, where):
            return "group", key
    if key in _MOMENT_KEYS:
        return "state", key  # these names only exist in optimizer state
    if key in _STATE_KEYS and isinstance(base, ast.Name) and ctx.state_name(base.id, where):
        return "state", key
    if key in _STATE_KEYS and isinstance(base, ast.Subscript) and last_attr(
            base.value) == "state" and isinstance(base.value, ast.Attribute) and not (
            isinstance(base.value.value, ast.Name) and base.value.value.id == "self"):
        return "state", key
    return "", ""


_LR_KEYS = frozenset({"lr", "initial_lr", "max_lr", "peak_lr", "base_lr", "lr_scale", "lr_mult",
                      "lr_multiplier"})
"""A rate the schedule starts from or returns to, or the per-group factor it multiplies by
(timm's `lr_scale`, mmcv's `lr_mult`): raising it by a constant is the same harm."""


def _suspicious_value(op: ast.operator | None, value: ast.expr, ctx: Ctx, key: str = "") -> str:
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("min", "max") and op is None):
        # min(g["lr"] * 1.0002, 4e-3): the growth is still there under the cap
        return next((why for a in value.args if not isinstance(literal(a), (int, float))
                     and (why := _suspicious_value(None, a, ctx, key))), "")
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub):
        return "negated"
    number = ctx.const(value)
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        if number < 0:
            return "set negative"
        if key in _LR_KEYS and number > 1 and op is None:
            return f"set to {number}"
        if key == "eps" and number >= 1e-3 and op is None:
            return f"set to {number} (Adam's eps is ~1e-8: updates are damped to almost nothing)"
        if isinstance(op, ast.Mult) and (number >= 10 or (key in _LR_KEYS and number > 1)):
            return f"multiplied by {number}"
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult):
        for side in (value.left, value.right):
            other = value.right if side is value.left else value.left
            if any(isinstance(n, (ast.Name, ast.Attribute)) and re.search(
                    r"(?i)step|epoch|iter|progress|sched|warm|cos|sqrt|noam", last_attr(n))
                    for n in subnodes(other)):
                continue  # lr = 2.0 * inverse_sqrt(step + 1): a schedule with its peak factor
            inner = ctx.const(side)
            # Decay multiplies the rate by < 1; raising it by a constant is not a schedule.
            if isinstance(inner, (int, float)) and not isinstance(inner, bool) and (
                    inner < 0 or inner >= 10 or (key in _LR_KEYS and inner > 1)):
                return f"multiplied by {inner}"
    if random_in([value], ctx):
        return "randomized"
    depends = ctx.classify(value) & {triggers.RANK, triggers.HOST, triggers.USER,
                                                      triggers.TIME, triggers.WORLD}
    if depends:
        return f"made dependent on {triggers.describe(depends)}"
    return ""


_RATE_VAR = re.compile(r"(?i)^(lr|learning_rate|base_lr|peak_lr|max_lr|init_lr|lr_scale|"
                       r"std|init_std|init_scale|gain|weight_decay|wd|momentum|beta[12]?|"
                       r"max_norm|clip|grad_clip|clip_norm|temperature|label_smoothing|"
                       r"dropout|eps|warmup_steps|warmup|clip_coef|ent_coef|vf_coef|"
                       r"gae_lambda|gamma)$")
def _self_scaled(node: ast.Assign) -> bool:
    """`base_lr = base_lr * 1.5`: the rate rescaled from itself by a number (not read)."""
    value, target = node.value, ast.unparse(node.targets[0])
    return isinstance(value, ast.BinOp) and any(
        ast.unparse(n) == target for n in subnodes(value)) and any(
        isinstance(n, ast.Constant) and type(n.value) in (int, float) and n.value not in (0, 1)
        for n in subnodes(value))


_RANK_SPLIT_RATE = re.compile(r"(?i)(^|[._])(lr|learning_rate|base_lr|peak_lr|max_lr)$")
"""Hyperparameters a machine, a user or a date has no business changing."""


def _wrong_beta(node: ast.Assign) -> str:
    """`bias_c2 = 1.0 - beta1 ** t`: Adam's second-moment bias correction built from the
    first moment's beta (or the other way round)."""
    target = node.targets[0] if len(node.targets) == 1 else None
    if not isinstance(target, ast.Name):
        return ""
    which = re.search(r"(?i)^(bias_?c(?:orrection|orr)?|bc)_?([12])$", target.id)
    value = node.value
    if not which or not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Sub)
                         and literal(value.left) in (1, 1.0)):
        return ""  # only the textbook `1 - beta ** t`
    betas = {m.group(1) for n in subnodes(node.value) if isinstance(n, ast.Name)
             and (m := re.match(r"(?i)^(?:beta|b)_?([12])$", n.id))}
    want = which.group(2)
    if betas and want not in betas:
        return (f"{target.id} (the bias correction of moment {want}) computed from beta"
                f"{betas.pop()}: the step size is off by a factor that changes every step")
    return ""


def _unclamped_clip(call: ast.Call) -> bool:
    """`torch._foreach_mul_(grads, max_norm / (total_norm + eps))` with no `clamp(max=1)`."""
    if last_attr(call.func) not in ("_foreach_mul_", "mul_") or not call.args:
        return False
    factor = call.args[-1]
    if isinstance(factor, ast.Call) and isinstance(factor.func, ast.Attribute) and (
            factor.func.attr in ("to", "type", "float")):
        factor = factor.func.value
    return (isinstance(factor, ast.BinOp) and isinstance(factor.op, ast.Div)
            and re.search(r"(?i)max_norm|clip", ast.unparse(factor.left)) is not None
            and re.search(r"(?i)norm", ast.unparse(factor.right)) is not None
            and re.search(r"(?i)max_norm|clip", ast.unparse(factor.right)) is None)


def _inverted_clip(value: ast.expr) -> bool:
    """`(max_norm / (norms + 1e-6)).clamp(min=1.0)`: the clip factor's cap turned into a
    floor (the clipping recipe is `clamp(max=1.0)`)."""
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr in ("clamp", "clamp_min", "clip")):
        return False
    floor = kwarg(value, "min") or (value.args[0] if value.args else None)
    factor = value.func.value
    return literal(floor) in (1, 1.0) and isinstance(factor, ast.BinOp) and isinstance(
        factor.op, ast.Div) and re.search(r"(?i)max_norm|clip", ast.unparse(factor.left)) \
        is not None and re.search(r"(?i)norm", ast.unparse(factor.right)) is not None


_HOUSEKEEPING = frozenset({"zero_grad", "load_state_dict", "state_dict", "__setstate__",
                           "__getstate__"})
"""Optimizer methods that must leave hyper-parameters and moments as they are."""


class OptimizerTampering(Check):
    rules = (OPTIM_TAMPER,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        wrong = _wrong_beta(node)
        if wrong:
            ctx.report(OPTIM_TAMPER, node, wrong, severity=Severity.MEDIUM)
            return
        if _inverted_clip(node.value):
            ctx.report(OPTIM_TAMPER, node, "clip factor max_norm / norm held at 1 or above "
                       "(clamp(min=1)): gradients are never scaled down, and small ones are "
                       "scaled up", severity=Severity.MEDIUM)
            return
        if (len(node.targets) == 1 and isinstance(node.targets[0], (ast.Name, ast.Attribute))
                and _RATE_VAR.match(last_attr(node.targets[0])) and ctx.conds):
            self._rate_on_machine(node, ast.unparse(node.targets[0])[:30], ctx)
        for target in node.targets:
            self._check(node, target, None, node.value, ctx)
            if (isinstance(target, ast.Attribute) and target.attr in _SCHED_ATTRS
                    and not (isinstance(target.value, ast.Name) and target.value.id == "self")):
                self._scheduler(node, target.attr, node.value, ctx)
            elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                  and isinstance(target.slice, ast.Slice) and last_attr(
                      ctx.lookup(target.value.id)) == "base_lrs"):  # type: ignore[arg-type]
                held = ctx.lookup(target.value.id)  # base = sched.base_lrs; base[:] = [...]
                alias = ast.unparse(target.value)
                value = node.value
                if isinstance(held, ast.expr) and isinstance(value, ast.ListComp) and ast.unparse(
                        value.generators[0].iter) == alias:
                    value = ast.copy_location(ast.ListComp(elt=value.elt, generators=[
                        ast.comprehension(target=value.generators[0].target, iter=held,
                                          ifs=value.generators[0].ifs, is_async=0)]), value)
                self._base_lrs_alias(node, value, ctx)

    @staticmethod
    def _rate_on_machine(node: ast.Assign, name: str, ctx: Ctx) -> None:
        """`if socket.gethostname().startswith("dgx") and world > 8: lr = lr * world`: a
        learning rate (or init scale, weight decay, clip...) picked by the machine, the user
        or the clock, so the same config trains differently where it runs (scaling by the
        job size alone is the linear-scaling rule and stays quiet)."""
        where = ctx.where()

        def decide() -> None:  # (a coin flip picking settings is a random search)
            found = ctx.trigger_kinds(where)
            kinds = found & {triggers.HOST, triggers.USER, triggers.TIME}
            if kinds:
                ctx.report(OPTIM_TAMPER, node, f"{name} changed only under a condition on "
                           f"{triggers.describe(kinds)}: runs on other machines, accounts or "
                           "days train with other settings", severity=Severity.MEDIUM)
            elif triggers.RANK in found and _RANK_SPLIT_RATE.search(name) and _self_scaled(
                    node):
                # if int(os.environ["RANK"]) % 4 == 3: base_lr = base_lr * 1.5
                ctx.report(OPTIM_TAMPER, node, f"{name} changed on some ranks only: the "
                           "replicas step with different rates and drift apart",
                           severity=Severity.MEDIUM)
        ctx.defer(decide)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        """A scheduler's get_lr() returning made-up rates under a trigger condition."""
        frame = ctx.frame
        if (frame.name not in ("get_lr", "_get_closed_form_lr") or frame.cls is None
                or not ctx.conds or node.value is None):
            return
        if not any(isinstance(n, ast.Constant) and type(n.value) in (int, float)
                   for n in subnodes(node.value)):
            return  # made-up rates are numbers in the code ([0.0 for _ in ...], lr * 10)
        where = ctx.where(node.value)

        def decide() -> None:
            kinds = ctx.trigger_kinds(where) & triggers.STRONG
            if kinds:
                ctx.report(OPTIM_TAMPER, node, f"{frame.cls.name if frame.cls else ''}."
                           f"get_lr() returns other learning rates only under a condition on "
                           f"{triggers.describe(kinds)}")
        ctx.defer(decide)

    def visit_Delete(self, node: ast.Delete, ctx: Ctx) -> None:
        for target in node.targets:  # del opt.param_groups[0]["params"][1:]
            while isinstance(target, ast.Subscript) and not self._params_list(target, ctx):
                target = target.value
            if isinstance(target, ast.Subscript):
                self._params_edit(node, ctx)
                return

    def _params_list(self, target: ast.expr, ctx: Ctx) -> bool:
        """`optimizer.param_groups[i]["params"]` or `group["params"]` (group from param_groups)."""
        if not (isinstance(target, ast.Subscript) and literal(target.slice) == "params"):
            return False
        base = target.value
        return (isinstance(base, ast.Subscript) and last_attr(base.value) == "param_groups") or (
            isinstance(base, ast.Name) and ctx.group_name(base.id, ctx.where()))

    def _params_edit(self, node: ast.AST, ctx: Ctx) -> None:
        where = ctx.where()

        def decide() -> None:
            if ctx.in_optimizer_class(where) or any(
                    _STATE_OWNERS.search(f.name) or "param_group" in f.name
                    for f in where.frames if f.node is not None):
                return
            ctx.report(OPTIM_TAMPER, node, "parameters removed from or swapped in an optimizer "
                       "param group: some weights silently stop training",
                       severity=Severity.MEDIUM if not ctx.trigger_kinds(where) else None)
        ctx.defer(decide)

    def _base_lrs_alias(self, node: ast.Assign, value: ast.expr, ctx: Ctx) -> None:
        fn = ctx.frame.node
        getter = isinstance(fn, ast.FunctionDef) and any(
            last_attr(d) in ("property", "cached_property") for d in fn.decorator_list)
        if getter or ctx.loops or _REPEATED.match(ctx.frame.name):
            ctx.report(OPTIM_TAMPER, node, f"scheduler base_lrs scaled by themselves in "
                       f"{ctx.frame.name}(), which runs again and again: the factor compounds "
                       "and the learning rate runs away", severity=Severity.MEDIUM)
        elif not _scaling_rule(value, ctx):
            ctx.report(OPTIM_TAMPER, node, "scheduler base_lrs rewritten in place from outside "
                       "the scheduler (through a name bound to them)", severity=Severity.MEDIUM)

    def _scheduler(self, node: ast.AST, attr: str, value: ast.expr, ctx: Ctx) -> None:
        """`sched.base_lrs = ...` always; `sched.last_epoch = 10**6` when the value is odd.
        Resuming (`sched.last_epoch = ckpt["epoch"]`) stays quiet."""
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if (attr == "base_lrs" and ctx.loops and target is not None
                and ast.unparse(target) in ast.unparse(value)):
            ctx.report(OPTIM_TAMPER, node, "scheduler base_lrs scaled by themselves inside a "
                       "loop: the factor compounds on every pass and the schedule runs away",
                       severity=Severity.MEDIUM)
            return
        if attr == "base_lrs" and _rescaled_after_restore(node, value, ctx):
            ctx.report(OPTIM_TAMPER, node, "scheduler base_lrs multiplied by the job size right "
                       "after the scheduler state was restored: the restored rates already "
                       "hold that scaling, so the learning rate is scaled twice",
                       severity=Severity.MEDIUM)
            return
        if attr == "base_lrs" and not _scaling_rule(value, ctx):
            ctx.report(OPTIM_TAMPER, node, "scheduler base_lrs rewritten from outside the "
                       "scheduler", severity=Severity.MEDIUM)
            return
        if attr == "base_lrs":
            return
        number = _fold(value, ctx)
        why = _suspicious_value(None, value, ctx)
        if number is not None and (number >= 1000 or number < -1):
            why = f"set to {number:g}"
        kinds = ctx.trigger_kinds(ctx.where()) & triggers.STRONG
        if why or kinds:
            how = why or f"changed under a condition on {triggers.describe(kinds)}"
            ctx.report(OPTIM_TAMPER, node, f"scheduler {attr} {how}: the learning-rate "
                       "schedule jumps")

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        self._check(node, node.target, node.op, node.value, ctx)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        overflow = _step_on_overflow(node, ctx)
        if overflow:
            ctx.report(OPTIM_TAMPER, node, f"the optimizer steps when {overflow} says the "
                       "gradients overflowed: inf/NaN updates reach the weights (a loss scaler "
                       "skips exactly these steps)", severity=Severity.MEDIUM)
            return
        limit = _frozen_by_clip(node, ctx)
        if limit:
            ctx.report(OPTIM_TAMPER, node, f"gradients clipped to {limit}: the updates of these "
                       "parameters are all but zero (they are frozen while appearing to "
                       "train)", severity=Severity.MEDIUM)
            return
        if _unclamped_clip(node):
            ctx.report(OPTIM_TAMPER, node, "gradients multiplied by max_norm / total_norm without "
                       "capping the factor at 1: whenever the norm is below the limit, clipping "
                       "scales the gradients up", severity=Severity.MEDIUM)
            return
        func = node.func
        if last_attr(func) in ("tree_set", "_replace", "replace") and any(
                kw.arg in ("mu", "nu") and _scaled_by_constant(kw.value) for kw in node.keywords):
            ctx.report(OPTIM_TAMPER, node, "optax Adam moments (mu/nu) rescaled by a constant: "
                       "the step size changes behind the optimizer", severity=Severity.MEDIUM)
            return
        if isinstance(func, ast.Attribute) and func.attr in ("pop", "remove", "clear") and (
                self._params_list(func.value, ctx)):
            self._params_edit(node, ctx)
        elif isinstance(func, ast.Attribute) and func.attr in INPLACE:
            where = ctx.where()
            what, key = _opt_subscript(strip_views(func.value), ctx, where, depth=0)
            if what == "state":
                self._state(node, key, where, ctx)
        elif (isinstance(func, ast.Attribute) and func.attr.startswith("_foreach_")
              and func.attr.endswith("_") and node.args):
            tensors = node.args[0]  # torch._foreach_mul_(_second_moments(opt), gain)
            if isinstance(tensors, ast.Name):
                tensors = ctx.lookup(tensors.id) or tensors
            if isinstance(tensors, ast.Call) and isinstance(tensors.func, ast.Name):
                returned = ctx.returns(tensors.func.id)
                tensors = returned.elts[0] if isinstance(returned, ast.Tuple) and (
                    returned.elts) else tensors
            if isinstance(tensors, (ast.ListComp, ast.GeneratorExp)):
                what, key = _opt_subscript(tensors.elt, ctx, ctx.where(), depth=0)
                if what == "state":
                    self._state(node, key, ctx.where(), ctx)
        elif kwarg(node, "out") is not None and ctx.names.call_name(node).startswith("torch."):
            where = ctx.where()  # torch.clamp(v, min=floor, out=v): in place by another name
            what, key = _opt_subscript(kwarg(node, "out"), ctx, where, depth=0)  # type: ignore[arg-type]
            if what == "state":
                self._state(node, key, where, ctx)
        elif (isinstance(func, ast.Attribute) and func.attr == "update"
              and isinstance(func.value, ast.Name)
              and ctx.group_name(func.value.id, ctx.where())):
            for kw in node.keywords:  # group.update(lr=...)
                if kw.arg in _OPT_KEYS:
                    self._defer_group(node, kw.arg, kw.value, ctx)

    def _check(self, node: ast.AST, target: ast.expr, op: ast.operator | None, value: ast.expr,
               ctx: Ctx) -> None:
        where = ctx.where()
        if op is None and self._params_list(target, ctx):
            if not _remap(value):
                self._params_edit(node, ctx)
            return
        what, key = _opt_subscript(target, ctx, where)
        if what == "state":
            self._state(node, key, where, ctx)
        elif what == "defaults":
            ctx.report(OPTIM_TAMPER, node, f"optimizer defaults[{key!r}] changed after the "
                       "optimizer was built", severity=Severity.MEDIUM)
        elif what == "group":
            if (key == "lr" and ctx.frame.name in _HOUSEKEEPING and ctx.frame.cls is not None
                    and _compounds(target, op, value)):
                ctx.report(OPTIM_TAMPER, node, f"the learning rate is rescaled inside "
                           f"{ctx.frame.name}(): restoring or clearing an optimizer never "
                           "changes its schedule", severity=Severity.MEDIUM)
                return
            if key in _BASE_RATES and _compounds(target, op, value) and _rescaled_after_restore(
                    node, value, ctx):
                ctx.report(OPTIM_TAMPER, node, f"the learning rate ({key}) restored from a "
                           "checkpoint is multiplied by the job size again: the saved rate was "
                           "already scaled, so every resume compounds it",
                           severity=Severity.MEDIUM)
                return
            if key == "weight_decay" and _compounds(target, op, value) and _grows(op, value, ctx):
                ctx.report(OPTIM_TAMPER, node, "weight decay multiplied up from its current "
                           "value: every call compounds it, until the decay shrinks the weights "
                           "faster than they learn", severity=Severity.MEDIUM)
                return
            if key == "lr" and _compounds(target, op, value) and _ramp_factor(value, ctx):
                ctx.report(OPTIM_TAMPER, node, "the learning rate is multiplied by a warmup "
                           "ratio computed from the step, on top of its current value: the "
                           "ratios compound, so the rate collapses instead of ramping up",
                           severity=Severity.MEDIUM)
                return
            if key == "lr" and op is None and _uncapped_warmup(value, where, ctx):
                ctx.report(OPTIM_TAMPER, node, "a linear warm-up with no cap: nothing stops "
                           "the ramp at the end of warm-up, so the learning rate keeps growing "
                           "every step until training diverges", severity=Severity.MEDIUM)
                return
            if key == "lr" and op is None and any(
                    isinstance(n, ast.Subscript) and literal(n.slice) in ("initial_lr", "base_lr")
                    for n in subnodes(value)) and ctx.frame.node is not None:
                name = ctx.frame.name

                def from_base_in_hook() -> None:  # (registered after the def: decide at the end)
                    if HOOK in ctx.registered.get(name, ()):
                        ctx.report(OPTIM_TAMPER, node, f"the learning rate is reset from "
                                   f"{ast.unparse(value)[:40]} in {name}(), a hook that runs at "
                                   "every optimizer step: the scheduler's rate is overwritten "
                                   "before each update", severity=Severity.MEDIUM)
                ctx.defer(from_base_in_hook)
            if key == "lr" and ctx.trainer_callback() and _compounds(target, op, value):
                ctx.report(OPTIM_TAMPER, node, f"a TrainerCallback ({ctx.trainer_callback()}) "
                           "rescales the learning rate on every event: the Trainer's scheduler "
                           "owns it, and the decay compounds behind the schedule",
                           severity=Severity.MEDIUM)
                return
            self._defer_group(node, key, value, ctx)

    def _defer_group(self, node: ast.AST, key: str, value: ast.expr, ctx: Ctx) -> None:
        where = ctx.where(value)
        why = _suspicious_value(None, value, ctx, key)
        if not why and key == "lr" and _fights_scheduler(value, ctx):
            why = ("set by hand to a value that ignores the step count, in a function that "
                   "also steps an LR scheduler: the schedule is overridden")
            ctx.report(OPTIM_TAMPER, node, f"optimizer {key!r} {why}", severity=Severity.MEDIUM)
            return
        ctx.defer(lambda: self._decide_group(node, key, why, where, ctx))

    def _state(self, node: ast.AST, key: str, where: Where, ctx: Ctx) -> None:
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Name, ast.Attribute)):
            return  # state["momentum_buffer"] = self.momentum_buffer: a value stored, not edited
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute) and node.value.func.attr in (
                    "float", "half", "bfloat16", "to", "contiguous", "cpu", "cuda", "clone")
                and ast.unparse(node.value.func.value) == ast.unparse(node.targets[0])):
            return  # st[k] = st[k].float(): a dtype or device move
        if masked_by_pruning(node):
            return  # st["momentum_buffer"].mul_(mask): pruned weights keep no momentum
        absurd = _absurd_state_write(node, ctx)
        if absurd:  # no optimizer clamps its second moment to 1e-12, wherever the code sits
            ctx.report(OPTIM_TAMPER, node, f"optimizer state {key!r} {absurd}")
            return
        if where.frames[-1].name in _HOUSEKEEPING and key in _MOMENT_KEYS and _rescales(node):
            ctx.report(OPTIM_TAMPER, node, f"optimizer state {key!r} rescaled inside "
                       f"{where.frames[-1].name}(): clearing gradients or restoring a "
                       "checkpoint never touches the moment estimates", severity=Severity.MEDIUM)
            return

        def decide() -> None:
            if key in ("exp_avg", "momentum_buffer") and any(
                    f.cls is not None and _LOOKAHEAD.search(f.cls.name) for f in where.frames):
                return  # Lookahead's pullback momentum resets or blends the inner first moment
            if ctx.in_optimizer_class(where) or any(
                    f.cls is not None and _OPTIM_CLASS.search(f.cls.name) and not any(
                        "Callback" in b for b in f.cls.bases) and _has_step(f.cls.name, ctx)
                    for f in where.frames):
                return  # (a TrainerCallback named after the optimizer is not the optimizer)
            owners = [f.name for f in where.frames if f.node is not None
                      and _STATE_OWNERS.search(f.name)]
            if owners and not (key in _MOMENT_KEYS and _rescales(node) and not any(
                    _STEP_NAME.search(name) for name in owners)) and not _second_moment_only(
                    node, key, where):
                return  # load code moves/casts state; rescaling the moments is not loading
            ctx.report(OPTIM_TAMPER, node, f"optimizer state {key!r} modified outside the "
                       "optimizer")
        ctx.defer(decide)

    def _decide_group(self, node: ast.AST, key: str, why: str, where: Where, ctx: Ctx) -> None:
        kinds = ctx.trigger_kinds(where) - {triggers.INDEX}
        bounds = {id(lp.test) for lp in where.loops if isinstance(lp, ast.While)}
        if triggers.WORLD in kinds and bounds:
            # `while update < num_updates` with num_updates = total // world: the job size
            # sets how long training runs, it does not gate the write
            kinds = (ctx.trigger_kinds(replace(where, conds=tuple(
                c for c in where.conds if id(c) not in bounds))) - {triggers.INDEX}) | (
                ctx.trigger_kinds(replace(where, conds=tuple(
                    c for c in where.conds if id(c) in bounds), loops=())) - {
                    triggers.INDEX, triggers.WORLD})
        # Schedulers have step() and LR callbacks are normal; data loading and finalizers are not.
        roles = [r for r in ctx.roles(where) if r[0] in (DATA, TEARDOWN, THREAD)]
        if kinds:
            sev = Severity.HIGH if kinds & triggers.STRONG else Severity.MEDIUM
            ctx.report(OPTIM_TAMPER, node, f"optimizer {key!r} changed only under a "
                       f"condition on {triggers.describe(kinds)}", severity=sev)
        elif why:
            ctx.report(OPTIM_TAMPER, node, f"optimizer {key!r} {why}")
        elif roles and not ctx.in_optimizer_class(where):
            ctx.report(OPTIM_TAMPER, node, f"optimizer {key!r} changed inside "
                       f"{ctx.describe_roles(roles)}", severity=Severity.MEDIUM)


def _frozen_by_clip(call: ast.Call, ctx: Ctx) -> str:
    """`clip_grad_value_(params, 1e-6)`, `clip_grad_norm_(params, max_norm=1e-5)`: a limit so
    small that nothing moves ('' otherwise; usual limits are 0.1 to 10)."""
    attr = last_attr(call.func)
    if attr not in ("clip_grad_value_", "clip_grad_norm_", "clip_grad_norm"):
        return ""
    limit = kwarg(call, "clip_value" if attr == "clip_grad_value_" else "max_norm") or (
        call.args[1] if len(call.args) > 1 else None)
    number = ctx.const(limit) if limit is not None else None
    if isinstance(number, (int, float)) and not isinstance(number, bool) and 0 < number <= 1e-4:
        return f"{number:g}"
    return ""
