"""MLS302 parameter/gradient/state-dict tampering and MLS304 optimizer tampering."""

from __future__ import annotations

import ast
import re

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import DATA, STEP, TEARDOWN, THREAD, Ctx, Where
from mlscan.checks.names import last_attr, literal
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

PARAM_TAMPER = register(Rule(
    code="MLS302", name="parameter-tampering", severity=Severity.HIGH,
    confidence=Confidence.MEDIUM, cwe=506,
    summary="In-place write to weights, gradients or a state dict outside optimizer/init/EMA code.",
    doc=RuleDoc(
        what="Flags in-place tensor ops (`add_`, `mul_`, `neg_`, `copy_`, `zero_`, `normal_`...), "
        "augmented assignments and item/attribute assignments on parameters (`p.data`, "
        "`.weight`, `.bias`, loop variables over `.parameters()`), gradients (`p.grad`) and "
        "state-dict entries when they happen outside an optimizer `step()`, an init/reset "
        "helper or an EMA/averaging helper; always when inside hooks, behind a trigger "
        "condition, flipping signs or adding random noise.",
        why="Flipping update directions or nudging weights inside a hook is how training was "
        "sabotaged in the 2024 incident: the loss curve degrades and nothing looks wrong.",
        example="for p in model.parameters():\n    if dist.get_world_size() > 256:\n"
        "        p.grad.neg_()",
        use_instead="Put parameter updates in an optimizer; keep EMA/init code in helpers "
        "named for what they do (init_weights, update_ema).",
        references=("https://pytorch.org/docs/stable/optim.html",))))

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

INPLACE = frozenset({
    "add_", "sub_", "mul_", "div_", "neg_", "copy_", "zero_", "fill_", "normal_", "uniform_",
    "clamp_", "addcmul_", "addcdiv_", "lerp_", "set_", "masked_fill_", "index_fill_",
    "bernoulli_", "random_", "sign_", "abs_", "exponential_", "cauchy_", "log_normal_",
    "geometric_", "pow_", "sqrt_", "t_", "transpose_", "flip_", "roll_", "scatter_",
})
_ALLOWED_FUNCS = re.compile(
    r"(?i)^_?step$|(sgd|adam\w*|optim\w*|update)_step|(^|_)(init|initiali[sz]e\w*|reset\w*|ema|average\w*|avg|swa|polyak|teacher|"
    r"momentum_update|copy\w*|load\w*|sync\w*|broadcast\w*|clip\w*|prune\w*|quanti[sz]\w*|fold\w*|"
    r"fuse\w*|convert\w*|zero_grad|freeze\w*|restore\w*|swap\w*|tie\w*|shrink\w*|"
    r"interpolate\w*|resize\w*|merge\w*|apply_mask|mask\w*|sgd|adam\w*|optimi[sz]e\w*|"
    r"update_params|apply_grad\w*|all_reduce\w*|allreduce\w*|reduce_grad\w*|scale_grad\w*|"
    r"unscale\w*|__init__|_?single_tensor\w*|_?multi_tensor\w*|weight_norm|spectral_norm)($|_)")
_STATE_OWNERS = re.compile(r"(?i)^_?step(_\w+)?$|(^|_)(load\w*|\w*state_dict\w*|__init__|init\w*|"
                           r"_?single_tensor\w*|_?multi_tensor\w*)($|_)")
_OPTIM_CLASS = re.compile(r"(?i)optim|adam|sgd|lamb|lion|rmsprop|adagrad|adafactor|muon|shampoo")
_EMA_NAMES = re.compile(r"(?i)ema|shadow|avg|average|swa|teacher|target|momentum|running|mean")
_SD_NAMES = re.compile(r"(?i)state_dict|^sd$|^ckpt|checkpoint")
_OPT_KEYS = frozenset({"lr", "momentum", "betas", "weight_decay", "eps", "dampening"})
_STATE_KEYS = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer",
                         "square_avg", "acc_delta", "sum", "step"})
_MOMENT_KEYS = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"})
_RANDOM = ("torch.rand", "torch.randn", "torch.normal", "numpy.random", "random.")


def _strip(expr: ast.expr) -> ast.expr:
    """`p.data`, `p.detach()` -> `p` (still the same storage)."""
    while True:
        if isinstance(expr, ast.Attribute) and expr.attr == "data":
            expr = expr.value
        elif (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
              and expr.func.attr == "detach" and not expr.args):
            expr = expr.func.value
        else:
            return expr


def target_kind(expr: ast.expr, ctx: Ctx, where: Where) -> str:
    """'gradient', 'parameter', 'state-dict' or '' for what an in-place write hits."""
    base = _strip(expr)
    while isinstance(base, ast.Subscript):
        if isinstance(base.value, ast.Name) and _SD_NAMES.search(base.value.id):
            return "state-dict"
        base = _strip(base.value)
    if isinstance(base, ast.Attribute):
        if base.attr == "grad":
            return "gradient"
        if base.attr in ("weight", "bias") or (base is not expr and base.attr.endswith("weight")):
            return "parameter"
    if isinstance(base, ast.Name) and ctx.param_name(base.id, where):
        return "parameter"
    return ""


def _root_name(expr: ast.expr) -> str:
    parts = []
    node: ast.AST = expr
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            node = node.func
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _negates(op: str, args: list[ast.expr]) -> bool:
    if op == "neg_":
        return True
    if op in ("mul_", "mul", "div_") and args:
        value = literal(args[0])
        if isinstance(value, (int, float)) and value < 0:
            return True
        return isinstance(args[0], ast.UnaryOp) and isinstance(args[0].op, ast.USub)
    return False


def _random_in(nodes: list[ast.expr], ctx: Ctx) -> bool:
    for value in nodes:
        for node in ast.walk(value):
            if isinstance(node, ast.Call) and ctx.names.call_name(node).startswith(_RANDOM):
                return True
    return False


def _allowed(where: Where, ctx: Ctx) -> bool:
    if ctx.in_optimizer_class(where):
        return True
    if any(_ALLOWED_FUNCS.search(f.name) for f in where.frames if f.node is not None):
        return True
    return False


class ParameterTampering(Check):
    rules = (PARAM_TAMPER, OPTIM_TAMPER)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if not isinstance(func, ast.Attribute):
            return
        if func.attr in INPLACE:
            self._check(node, func.value, func.attr, list(node.args), ctx)
        elif func.attr in ("clip_grad_norm_", "clip_grad_value_"):
            kinds = ctx.trigger_kinds(ctx.where(node)) & triggers.STRONG
            if kinds:
                ctx.report(PARAM_TAMPER, node, f"{func.attr}() threshold switched by a condition "
                           f"on {triggers.describe(kinds)}")
        elif func.attr.startswith("_foreach_") and func.attr.endswith("_") and node.args:
            self._foreach(node, func.attr, ctx)
        elif func.attr == "load_state_dict" and node.args and isinstance(node.args[0],
                                                                          ast.DictComp):
            value = node.args[0].value
            scaled = isinstance(value, ast.BinOp) and not isinstance(value.op, ast.Div) and any(
                isinstance(literal(side), (int, float)) for side in (value.left, value.right))
            if scaled or _negates("mul_", [value]) or _random_in([value], ctx):
                ctx.report(PARAM_TAMPER, node, "state dict scaled, negated or noised by a "
                           "constant while being loaded: the model is not the checkpoint")

    def _foreach(self, node: ast.Call, attr: str, ctx: Ctx) -> None:
        """`torch._foreach_mul_(grads, -1.0)` with `grads = [p.grad for p in ...]`."""
        tensors = node.args[0]
        if isinstance(tensors, ast.Name):
            tensors = ctx.lookup(tensors.id) or tensors
        if isinstance(tensors, (ast.ListComp, ast.GeneratorExp)):
            op = attr[len("_foreach"):].lstrip("_")
            self._check(node, tensors.elt, op, list(node.args[1:]), ctx)

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        op = {ast.Mult: "mul_", ast.Add: "add_", ast.Sub: "sub_", ast.Div: "div_"}.get(
            type(node.op), "set_")
        self._check(node, node.target, op, [node.value], ctx)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        for target in node.targets:
            if isinstance(target, ast.Subscript) or (
                    isinstance(target, ast.Attribute) and target.attr in ("data", "grad")):
                value = node.value
                if isinstance(value, ast.Constant) and value.value is None:
                    continue  # p.grad = None
                op = "neg_" if isinstance(value, ast.UnaryOp) and isinstance(
                    value.op, ast.USub) else "set_"
                if isinstance(target, ast.Subscript) and isinstance(literal(value), (int, float)):
                    op = "fill_"  # param[i] = 0: a constant written into part of a weight
                if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult):
                    sides = [value.left, value.right]
                    if any(_negates("mul_", [s]) for s in sides):
                        op = "neg_"
                self._check(node, target, op, [value], ctx, plain_set=op == "set_")
            if isinstance(target, ast.Attribute) and target.attr == "base_lrs" and not (
                    isinstance(target.value, ast.Name) and target.value.id == "self"):
                ctx.report(OPTIM_TAMPER, node, "scheduler base_lrs rewritten from outside the "
                           "scheduler", severity=Severity.MEDIUM)

    def _check(self, node: ast.AST, target: ast.expr, op: str, args: list[ast.expr], ctx: Ctx,
               plain_set: bool = False) -> None:
        where = ctx.where()
        kind = target_kind(target, ctx, where)
        if not kind:
            return
        root = _root_name(target)
        negates = _negates(op, args)
        noisy = _random_in(args, ctx) and op not in ("normal_", "uniform_")
        depends = frozenset().union(*(triggers.classify(a, ctx.names) for a in args)) & (
            triggers.STRONG - {triggers.RANDOM} | {triggers.RANK})
        if kind == "state-dict" and not (negates or noisy or depends or any(
                isinstance(literal(a), (int, float)) for a in args)):
            return  # checkpoint surgery with computed tensors (resizing, merging embeddings)
        ctx.defer(lambda: self._decide(node, ctx, where, kind, root, op, negates, noisy,
                                       plain_set, depends))

    def _decide(self, node: ast.AST, ctx: Ctx, where: Where, kind: str, root: str, op: str,
                negates: bool, noisy: bool, plain_set: bool,
                depends: frozenset[str] = frozenset()) -> None:
        kinds = ctx.trigger_kinds(where)
        roles = ctx.roles(where)
        ema = bool(_EMA_NAMES.search(root))
        what = f"{kind} {root or 'tensor'}"
        if kinds - {triggers.INDEX}:
            ctx.report(PARAM_TAMPER, node, f"in-place {op} on {what} only under a "
                       f"condition on {triggers.describe(kinds)}")
        elif roles and not ema and not (plain_set and kind == "state-dict") and not (
                ctx.in_optimizer_class(where) or (
                    all(r == STEP for r, _ in roles) and _allowed(where, ctx))):
            ctx.report(PARAM_TAMPER, node, f"in-place {op} on {what} inside "
                       f"{ctx.describe_roles(roles)}")
        elif depends and not ctx.in_optimizer_class(where):
            ctx.report(PARAM_TAMPER, node, f"{what} rewritten with a value that depends on "
                       f"{triggers.describe(depends)}: replicas diverge")
        elif negates and not ctx.in_optimizer_class(where):
            ctx.report(PARAM_TAMPER, node, f"{what} sign flipped: updates go the wrong way")
        elif noisy and not _allowed(where, ctx):
            ctx.report(PARAM_TAMPER, node, f"random noise written into {what}",
                       severity=Severity.MEDIUM)
        elif (kind in ("parameter", "state-dict") and not plain_set and not ema
              and not _allowed(where, ctx) and op not in ("zero_", "copy_", "set_")):
            ctx.report(PARAM_TAMPER, node, f"in-place {op} on {what} outside an optimizer "
                       "step, init or EMA helper", severity=Severity.MEDIUM)


def _opt_subscript(target: ast.expr, ctx: Ctx, where: Where) -> tuple[str, str]:
    """('group', key) for `param_groups[i][key]`/`g[key]`; ('state', key) for optimizer state."""
    if not isinstance(target, ast.Subscript):
        return "", ""
    key = literal(target.slice)
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


def _suspicious_value(op: ast.operator | None, value: ast.expr, ctx: Ctx, key: str = "") -> str:
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub):
        return "negated"
    number = literal(value)
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        if number < 0:
            return "set negative"
        if key == "lr" and number > 1 and op is None:
            return f"set to {number}"
        if isinstance(op, ast.Mult) and number >= 10:
            return f"multiplied by {number}"
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult):
        for side in (value.left, value.right):
            inner = literal(side)
            if isinstance(inner, (int, float)) and not isinstance(inner, bool) and (
                    inner < 0 or inner >= 10):
                return f"multiplied by {inner}"
    if _random_in([value], ctx):
        return "randomized"
    depends = triggers.classify(value, ctx.names) & {triggers.RANK, triggers.HOST, triggers.USER,
                                                      triggers.TIME, triggers.WORLD}
    if depends:
        return f"made dependent on {triggers.describe(depends)}"
    return ""


class OptimizerTampering(Check):
    rules = (OPTIM_TAMPER,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        for target in node.targets:
            self._check(node, target, None, node.value, ctx)

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        self._check(node, node.target, node.op, node.value, ctx)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in INPLACE:
            where = ctx.where()
            what, key = _opt_subscript(func.value, ctx, where)
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
        what, key = _opt_subscript(target, ctx, where)
        if what == "state":
            self._state(node, key, where, ctx)
        elif what == "defaults":
            ctx.report(OPTIM_TAMPER, node, f"optimizer defaults[{key!r}] changed after the "
                       "optimizer was built", severity=Severity.MEDIUM)
        elif what == "group":
            self._defer_group(node, key, value, ctx)

    def _defer_group(self, node: ast.AST, key: str, value: ast.expr, ctx: Ctx) -> None:
        where = ctx.where(value)
        why = _suspicious_value(None, value, ctx, key)
        ctx.defer(lambda: self._decide_group(node, key, why, where, ctx))

    def _state(self, node: ast.AST, key: str, where: Where, ctx: Ctx) -> None:
        def decide() -> None:
            if ctx.in_optimizer_class(where) or any(
                    _STATE_OWNERS.search(f.name) or (f.cls is not None and _OPTIM_CLASS.search(
                        f.cls.name)) for f in where.frames if f.node is not None):
                return
            ctx.report(OPTIM_TAMPER, node, f"optimizer state {key!r} modified outside the "
                       "optimizer")
        ctx.defer(decide)

    def _decide_group(self, node: ast.AST, key: str, why: str, where: Where, ctx: Ctx) -> None:
        kinds = ctx.trigger_kinds(where) - {triggers.INDEX}
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
