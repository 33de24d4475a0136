"""MLS303: forward/backward/optimizer hooks that scale, negate or replace what flows through."""

from __future__ import annotations

import ast
import copy
import re

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import Ctx, Frame
from mlscan.checks.names import (
    NOT_LITERAL,
    TENSOR_REPLACERS,
    bound_values,
    defaults_by_name,
    kwarg,
    last_attr,
    literal,
    masked_by_pruning,
    param_names,
)
from mlscan.checks.nodes import subnodes
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

TAMPERING_HOOK = register(Rule(
    code="MLS303", name="tampering-hook", severity=Severity.HIGH,
    confidence=Confidence.MEDIUM, cwe=506,
    summary="A hook scales, negates or replaces activations or gradients.",
    doc=RuleDoc(
        what="Follows functions passed to `register_forward_hook`, `register_forward_pre_hook`, "
        "`register_full_backward_hook`, `tensor.register_hook`, optimizer step hooks, global "
        "module hooks and state-dict hooks (lambdas and named functions, also functions named "
        "`*_hook`), and flags those that return a negated, constant-scaled, noised or "
        "replaced value (`-grad`, `grad * 0`, `torch.zeros_like(out)`) or modify their "
        "arguments in place. Hooks that record, clamp or return nothing stay quiet.",
        why="Hooks run on every step, far from the training loop a reviewer reads. A backward "
        "hook returning `-grad` makes the optimizer climb the loss; a forward hook can poison "
        "every prediction.",
        example="layer.register_full_backward_hook(lambda m, gi, go: tuple(-g for g in gi))",
        use_instead="Use hooks to observe (log, store activations). Put deliberate gradient "
        "transforms (clipping, gradient reversal) in named, documented autograd Functions.",
        references=("https://pytorch.org/docs/stable/generated/torch.nn.Module.html"
                    "#torch.nn.Module.register_forward_hook",))))

_REPLACERS = frozenset({"zeros_like", "ones_like", "full_like", "empty_like", "rand_like",
                        "randn_like", "randint_like", "zeros", "ones", "full", "rand", "randn",
                        "empty", "normal"})
_METHOD_TAMPER = frozenset({"neg", "negative", "flip", "fill_", "zero_", "neg_", "mul_", "add_",
                            "copy_", "normal_", "uniform_", "sub_", "div_", "masked_fill_",
                            "roll"})
_HOOK_ARGS = frozenset({"grad", "grads", "grad_output", "grad_input", "output", "outputs",
                        "out", "inputs", "input", "inp", "g", "gi", "go", "x"})


def _arg_names(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    return param_names(fn) - {"self"}


def _uses(expr: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in subnodes(expr))


_NUMERIC_CALLS = re.compile(r"^(math\.\w+|float|int|abs|min|max|round)$")


def _fixed_number(expr: ast.expr, ctx: Ctx) -> bool:
    """A non-zero number: a literal, a module constant, or `self.x` set once to arithmetic on
    numbers (`math.log(p / (1 - p)) + 0.5`), not a tensor, parameter or argument."""
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and (
            expr.value.id == "self"):
        expr = ctx.value_of(expr) or expr
    number = ctx.const(expr)
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        return abs(number) > 1e-4  # (not an epsilon)
    if not isinstance(expr, (ast.BinOp, ast.Call)):
        return False
    calls = [n for n in subnodes(expr) if isinstance(n, ast.Call)]
    return bool(calls) and all(_NUMERIC_CALLS.match(ctx.names.call_name(n) or "") for n in calls) \
        and any(isinstance(n, ast.Constant) and isinstance(n.value, float) for n in subnodes(expr))


def _placement(name: ast.AST, within: ast.expr) -> bool:
    """`grad` read only for `grad.device` / `grad.dtype` inside `within`."""
    return any(isinstance(n, ast.Attribute) and n.value is name
               and n.attr in ("device", "dtype") for n in subnodes(within))


def tampering_value(expr: ast.expr | None, args: set[str], ctx: Ctx,
                     consts: dict[str, float] | None = None) -> str:
    """Why a returned value tampers with what the hook received ('' when it does not)."""
    if expr is None:
        return ""
    if (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
            and expr.value.id == "self" and isinstance(
                held := ctx.self_attrs.get(expr.attr), ast.expr) and _uses(held, args)):
        expr = held  # self._last = output.detach(); return self._last
    if isinstance(expr, (ast.Tuple, ast.List)):
        return next((w for e in expr.elts if (w := tampering_value(e, args, ctx, consts))), "")
    if (isinstance(expr, ast.Call) and last_attr(expr.func) in ("tuple", "list")
            and len(expr.args) == 1):
        return tampering_value(expr.args[0], args, ctx, consts)
    if isinstance(expr, (ast.GeneratorExp, ast.ListComp)):
        names = args | {n.id for g in expr.generators for n in subnodes(g.target)
                        if isinstance(n, ast.Name)}
        return tampering_value(expr.elt, names, ctx, consts)
    if isinstance(expr, ast.IfExp):  # `o * 0 if random.random() < p else o`
        return tampering_value(expr.body, args, ctx, consts) or tampering_value(
            expr.orelse, args, ctx, consts)
    if (isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Mult, ast.Div))
            and _uses(expr, args)):
        for side in (expr.left, expr.right):  # g * (1 / nodes if gpus >= 64 else 1.0)
            if isinstance(side, ast.IfExp) and ctx.classify(side.test) & triggers.STRONG:
                return "scales under a trigger condition"
            if isinstance(side, ast.IfExp) and isinstance(expr.op, ast.Mult):
                factors = [ctx.const(b) for b in (side.body, side.orelse)]
                if all(isinstance(n, (int, float)) and not isinstance(n, bool)
                       for n in factors) and any(n != 1 for n in factors):
                    return "scales by a constant (picked by a condition)"  # g * (.5 if x else 1.5)
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub) and _uses(expr, args):
        return "negates"
    if isinstance(expr, ast.Call) and last_attr(expr.func) in ("neg", "negative") and _uses(
            expr, args):
        return "negates"  # g.neg(), torch.neg(g)
    if (isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Mult, ast.Div))
            and _uses(expr.left, args)
            and tampering_value(expr.left, args, ctx, consts) == "negates"):
        return "negates"  # g.neg() * gain
    if (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div) and _uses(expr.left, args)
            and isinstance(expr.right, ast.BinOp) and isinstance(expr.right.op, ast.Add)
            and 1 in (literal(expr.right.left), literal(expr.right.right))):
        return "damps (divides by 1 + a data-dependent amount)"  # g / (1.0 + g.norm())
    if (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Sub)
            and isinstance(expr.right, ast.Name) and expr.right.id in args
            and isinstance(expr.left, ast.Call) and _uses(expr.left, args)):
        return "subtracts the original from a transformed copy of"  # g.clamp(-c, c) - g
    if (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult) and _uses(expr, args)
            and any(isinstance(side, ast.Compare) and isinstance(side.ops[0], (ast.Lt, ast.LtE))
                    and isinstance(side.left, ast.Call) and last_attr(side.left.func) == "abs"
                    and isinstance(literal(side.comparators[0]), float)
                    and literal(side.comparators[0]) <= 1e-2  # type: ignore[operator]
                    for side in (expr.left, expr.right))):
        return "keeps only near-zero values of"  # g * (g.abs() < 1e-3)
    if (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult) and _uses(expr, args)
            and any(_sign_mask(side) for side in (expr.left, expr.right))):
        return "negates part of"  # g * (1 - 2 * mask): -g wherever the mask holds
    value = literal(expr)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "replaces with a constant"
    if (isinstance(expr, ast.Subscript) and _uses(expr.value, args) and any(
            isinstance(n, ast.Call) and last_attr(n.func) in _SHUFFLERS
            for n in subnodes(expr.slice))):
        return "shuffles (values moved onto other samples or units)"  # g[torch.randperm(n)]
    if isinstance(expr, ast.BinOp) and _uses(expr, args):
        sides = (expr.left, expr.right)
        if isinstance(expr.op, ast.Mult):
            for side in sides:
                number = literal(side)
                if isinstance(side, ast.Name) and consts and side.id in consts:
                    number = consts[side.id]  # bound by functools.partial(hook, factor=0.7)
                elif isinstance(side, ast.Name) and side.id.lstrip("_").isupper():
                    number = ctx.const(side)  # a module constant: out * _VALUE_GAIN
                elif isinstance(side, (ast.Subscript, ast.Name)):
                    number = ctx.const(side)  # o * cfg["probe"]["gain"], cfg from a caller
                elif isinstance(side, ast.Attribute) and isinstance(side.value, ast.Name) and (
                        side.value.id == "self"):
                    number = ctx.const(ctx.value_of(side))  # self._scale = -0.25
                    if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0
                           for v in map(ctx.const, ctx.self_item_writes.get(side.attr, ()))):
                        return "negates part of"  # self._scale[ids] = -0.25
                moved = side.func.value if isinstance(side, ast.Call) and isinstance(
                    side.func, ast.Attribute) and side.func.attr in ("to", "float", "cuda",
                                                                     "type_as") else side
                if isinstance(moved, (ast.Name, ast.Attribute)) and _zero_one_mask(moved, ctx):
                    return "zeroes part of (a 0/1 mask)"  # g * self.item_scale
                table = ctx.table_numbers(side)  # gain = _GRAD_GAIN.get(kind, 1.0)
                if table and min(table) < 0:
                    return "negates (by a table entry)"
                if table and min(table) <= 1e-3:
                    return "zeroes or squashes (by a table entry)"
                if isinstance(number, (int, float)) and not isinstance(number, bool) and (
                        number < 0):
                    return "negates"
                if isinstance(number, (int, float)) and number != 1:
                    return "scales by a constant"
        if isinstance(expr.op, (ast.Mult, ast.Add, ast.Sub)) and any(
                _random(s, ctx) for s in sides):
            return "adds random noise to"
        base = expr.left
        while isinstance(base, (ast.Subscript, ast.Attribute)):
            base = base.value  # output[0], output.logits
        if isinstance(expr.op, (ast.Add, ast.Sub)) and isinstance(base, ast.Name) and (
                base.id in args) and _fixed_number(expr.right, ctx):
            return "shifts by a constant"  # output + self.prior_logit (a number set in __init__)
        if isinstance(expr.op, ast.Mult) and any(
                isinstance(s, ast.Compare) and _uses(s, args) and any(
                    isinstance(n := literal(c), (int, float)) and n != 0 for c in s.comparators)
                for s in sides) and any(
                isinstance(s, (ast.Name, ast.Subscript)) and _uses(s, args) for s in sides):
            return "zeroes where its own values cross a fixed bound"  # h * (h.abs() < 6.0)
        if isinstance(expr.op, (ast.Mult, ast.Div)) and any(
                isinstance(s, ast.UnaryOp) and isinstance(s.op, ast.USub) and (
                    _uses(s, args) or isinstance(s.operand, (ast.Name, ast.Attribute)))
                for s in sides):
            return "negates"  # -g * s, g * -args.layer_decay
        inner = [w for s in sides if isinstance(s, (ast.BinOp, ast.Tuple)) and (
            w := tampering_value(s, args, ctx))]
        if inner:
            return inner[0]
        if isinstance(expr.op, ast.Mult) and any(_tiny_factor(s) for s in sides):
            return "scales by a tiny constant"  # grad * (max_norm * 1e-3 / norm)
        if isinstance(expr.op, ast.Mult) and any(
                isinstance(s, ast.BinOp) and isinstance(s.op, ast.Mult) and not _uses(s, args)
                and any(isinstance(n := literal(x), (int, float)) and not isinstance(n, bool)
                        and n not in (0, 1) for x in (s.left, s.right)) for s in sides):
            return "scales by a constant"  # o * (0.9 * self.value_scale)
        if isinstance(expr.op, ast.Div) and _uses(expr.left, args) and isinstance(
                n := literal(expr.right), (int, float)) and not isinstance(n, bool) and (
                n not in (0, 1)):
            return "scales by a constant"  # scores / 3.5
        if isinstance(expr.op, ast.Mult) and any(
                _uses(s, args) and isinstance(s, ast.Name) for s in sides):
            factor = next((s for s in sides if not _uses(s, args)), None)
            if isinstance(factor, (ast.Name, ast.Attribute)) and not re.search(
                    r"(?i)mask|keep|valid|sign|lr|step|norm|clip|alpha|world|"
                    r"accum|num_|n_|count|size|temperature|^t$|^tau$", last_attr(factor)):
                return f"scales (by {ast.unparse(factor)[:40]})"  # out * scale, g * cfg.gain
        if any(_call_counted(s) for s in (sides if isinstance(expr.op, ast.Mult) else (
                expr.right,))):
            return "scales, by a factor that compounds with every call,"  # decay ** n_calls
    if isinstance(expr, ast.Call):
        func = last_attr(expr.func)
        receiver = expr.func.value if isinstance(expr.func, ast.Attribute) else None
        if (isinstance(receiver, ast.Attribute) and receiver.attr == "data"
                and _uses(receiver.value, args)
                and func in ("contiguous", "clone", "float", "to", "view", "reshape")):
            return "detaches (no gradient flows back through)"  # output.data.contiguous()
        while isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute):
            if receiver.func.attr in ("neg", "negative") and _uses(receiver.func.value, args):
                return "negates"  # g.neg().clamp(-c, c)
            if receiver.func.attr == "detach" and _uses(receiver.func.value, args) and (
                    func in ("contiguous", "clone", "float", "to", "view", "reshape")):
                return "detaches (no gradient flows back through)"  # x.detach().contiguous()
            receiver = receiver.func.value
        if ctx.names.call_name(expr) in ("torch.neg", "torch.negative", "numpy.negative") and any(
                _uses(a, args) for a in expr.args):
            return "negates"  # return torch.neg(grad)
        source = receiver if isinstance(expr.func, ast.Attribute) and not (
            isinstance(receiver, ast.Name) and receiver.id in ("torch", "np", "numpy")) else (
            expr.args[0] if expr.args else None)
        if (func == "index_select" and isinstance(expr.func, ast.Attribute) and len(expr.args) == 2
                and _uses(expr.func.value, args) and not any(
                    isinstance(n, ast.Name) and n.id in args for n in subnodes(expr.args[1])
                    if not _placement(n, expr.args[1]))
                and not any(last_attr(n.func) == "arange" for n in subnodes(expr.args[1])
                            if isinstance(n, ast.Call))):
            return "moves onto other positions (rows reordered)"  # g.index_select(0, order)
        if func in ("roll", "flip") and source is not None and _uses(source, args):
            return "moves onto other positions (rolled or flipped)"  # out.roll(1, dims=1)
        if func in ("t", "transpose", "permute", "swapaxes", "swapdims") and (
                receiver is not None and _uses(receiver, args)):
            return "transposes (moves onto other positions)"  # g.clamp(-c, c).t()
        if func in ("lerp", "lerp_"):
            ends = [source, *(expr.args[1:] if source is not receiver else expr.args)]
            weight = ctx.const(ends[-1]) if len(ends) == 3 else None
            if (len(ends) == 3 and ends[0] is not None and _uses(ends[0], args)
                    and tampering_value(ends[1], args, ctx, consts) == "negates"
                    and isinstance(weight, (int, float)) and not isinstance(weight, bool)):
                # lerp(g, -g, w) = g * (1 - 2w): a sign flip from w > 0.5
                return "negates" if weight > 0.5 else "scales by a constant"
        if _broadcast_reduction(expr, args):
            return "replaces with its own mean (or sum) spread over every element of"
        if func in _REPLACERS and (ctx.names.call_name(expr).startswith(("torch.", "numpy."))
                                   or func.endswith("_like")):
            return "replaces with a new tensor"
        if isinstance(expr.func, ast.Attribute) and func in _METHOD_TAMPER and _uses(
                expr.func.value, args):
            return "negates" if func.startswith("neg") else "rewrites"
        if (isinstance(expr.func, ast.Attribute) and func == "add" and expr.args
                and isinstance(expr.args[0], ast.Call) and last_attr(expr.args[0].func) == "mean"
                and isinstance(expr.args[0].func, ast.Attribute)
                and ast.unparse(expr.args[0].func.value) == ast.unparse(expr.func.value)
                and _uses(expr.func.value, args)):
            return "adds its own mean to (centralisation subtracts it from)"  # g.add(g.mean())
        if func == "dropout" and literal(kwarg(expr, "training")) is True and any(
                _uses(a, args) for a in expr.args):
            return "applies dropout (training=True, so also in evaluation) to"
        if isinstance(expr.func, ast.Attribute) and func == "detach" and _uses(
                expr.func.value, args):
            return "detaches (no gradient flows back through)"
        if func in ("index_fill", "index_fill_") and len(expr.args) == 3 and literal(
                expr.args[2]) in (0, 0.0) and _uses(expr.func, args):
            return "zeroes chosen rows of"  # g.index_fill(1, self.stuff_ids, 0.0)
        fill = expr.args[-1] if func in ("index_fill", "masked_fill") and len(expr.args) >= 2 \
            else None
        number = literal(fill) if fill is not None else None
        if fill is not None and _uses(expr.func, args) and (
                (isinstance(number, (int, float)) and not isinstance(number, bool)
                 and number <= -1e3) or "inf" in ast.unparse(fill)):
            return "pins chosen entries to a huge negative value in"  # o.index_fill(1, ids, -1e4)
        if (func == "masked_fill" and fill is not None and number in (0, 0.0)
                and _uses(expr.func, args) and expr.args
                and isinstance(mask := expr.args[0], ast.Compare)
                and isinstance(mask.left, ast.Call) and last_attr(mask.left.func) == "abs"
                and isinstance(mask.ops[0], (ast.Lt, ast.LtE)) and not _flushes_tiny(mask, ctx)):
            return "zeroes every small entry (not just denormals) of"  # g.abs() < 6e-5
        if func == "mul" and expr.args and isinstance(literal(expr.args[0]), (int, float)):
            return "scales by a constant"
        if func in ("mul", "div") and expr.args and isinstance(expr.args[0], ast.UnaryOp) and (
                isinstance(expr.args[0].op, ast.USub)):
            return "negates"  # g.mul(-factor)
        if func in ("clamp", "clip", "clamp_") and _uses(expr, args):
            bounds = [_bound_number(b, ctx, consts) for b in (*expr.args, *(
                k.value for k in expr.keywords)) if not _uses(b, args)]  # g.clamp(lo, hi)
            numbers = [b for b in bounds if isinstance(b, (int, float))]
            low = kwarg(expr, "min") or (expr.args[0] if expr.args and not _uses(
                expr.args[0], args) else expr.args[1] if len(expr.args) > 1 else None)
            if low is not None and _bound_number(low, ctx, consts) == 0 and (
                    func != "clip" or kwarg(expr, "min") is not None or len(expr.args) >= 2
                    ) and not (len(numbers) == 2 and max(abs(b) for b in numbers) <= 1e-4):
                return "drops every negative value (clamped at zero) of"  # g.clamp_(0.0, CAP)
            if numbers and len(numbers) == len(bounds) and max(abs(b) for b in numbers) <= 1e-4:
                return "squashes to ~0 (clamped to a tiny range)"
            spelled = [b.operand if isinstance(b, ast.UnaryOp) and isinstance(b.op, ast.USub)
                       else b for b in (*expr.args, *(k.value for k in expr.keywords))
                       if not _uses(b, args)]
            if spelled and all(isinstance(b, ast.BinOp) and _tiny_factor(b) for b in spelled):
                return "squashes to ~0 (clamped to a bound times a tiny factor)"  # limit * 1e-4
        if func == "where" and expr.args and _flushes_tiny(expr.args[0], ctx):
            return ""  # torch.where(g.abs() < 1e-8, 0, g): denormals flushed, not tampering
        if any(isinstance(a, ast.Call) and (last_attr(a.func) in _REPLACERS or _random(a, ctx))
               for a in expr.args):
            return "replaces values in"  # torch.where(mask, torch.zeros_like(o), o)
    return ""


def _element(ret: ast.Return) -> ast.AST:
    """Where a multi-line return does its work: the element of `return tuple(<elt> for g in
    grads)` (reviewers look at the line that rewrites each gradient, not at `return`)."""
    value = ret.value
    if (isinstance(value, ast.Call) and last_attr(value.func) in ("tuple", "list")
            and len(value.args) == 1):
        value = value.args[0]
    if isinstance(value, (ast.GeneratorExp, ast.ListComp)):
        elt = value.elt.body if isinstance(value.elt, ast.IfExp) else value.elt
        if elt.lineno != ret.lineno:
            return elt
    return ret


_SHUFFLERS = frozenset({"randperm", "permutation", "roll", "flip", "shuffle"})

_TENSOR_HOOKS = frozenset({"register_forward_hook", "register_full_backward_hook",
                           "register_backward_hook", "register_hook",
                           "register_post_accumulate_grad_hook"})
"""Hooks whose argument is the model's output or gradient (pre-hooks rewrite inputs and
state-dict hooks rewrite keys by design)."""


def _zero_one_mask(expr: ast.expr, ctx: Ctx) -> bool:
    """`(torch.arange(n) < cutoff).float()` (a comparison turned into numbers), or
    `torch.ones(n, 1)` that the same function then zeroes in places (`mask[ids] = 0.0`)."""
    value = ctx.resolve(expr)
    inner = value
    while isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) and (
            inner.func.attr in ("float", "to", "unsqueeze", "view", "reshape", "half", "type",
                                "bfloat16", "cuda")):
        inner = inner.func.value
    if isinstance(inner, ast.Compare) and value is not inner:
        return True
    if not isinstance(expr, ast.Name):
        return False
    fn = ctx.flow.owner(expr)
    if fn is None:
        return False
    bound = [n.value for n in subnodes(fn) if isinstance(n, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == expr.id for t in n.targets)]
    if not (len(bound) == 1 and isinstance(bound[0], ast.Call) and last_attr(
            bound[0].func) in ("ones", "ones_like")):
        return False  # (`mask[ids] = 0` makes the name unknown to value flow: read it here)
    return any(
        isinstance(n, ast.Assign) and literal(n.value) in (0, 0.0) and any(
            isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
            and t.value.id == expr.id for t in n.targets) for n in subnodes(fn))


def _frames_around(call: ast.Call, ctx: Ctx) -> list[Frame]:
    """The function frames whose source spans `call`."""
    return [frame for frames in ctx.frames_by_name.values() for frame in frames
            if frame.node is not None and getattr(frame.node, "lineno", 0) <= call.lineno
            <= (getattr(frame.node, "end_lineno", 0) or 0)]


def _table_flip(target: ast.Name, ctx: Ctx, call: ast.Call) -> str:
    """`fn = next((f for key, f in policy if key in name), None)` with `policy=GRAD_POLICY`, a
    table holding `functools.partial(torch.mul, other=-0.25)`: the sign-flipping entry."""
    fn_frames = _frames_around(call, ctx)
    values: list[ast.expr] = []
    for frame in fn_frames:
        value = frame.assigned.get(target.id)
        if value is not None:
            values.append(value)
        if isinstance(frame.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            values += list(defaults_by_name(frame.node).values())
    seen: list[ast.AST] = []
    for item in values:
        seen += list(subnodes(item))
        seen += [m for n in subnodes(item) if isinstance(n, ast.Name) and n.id.isupper()
                 for v in [ctx.lookup(n.id)] if v is not None for m in subnodes(v)]
    for node in seen:
        if not (isinstance(node, ast.Call) and last_attr(node.func) == "partial" and node.args):
            continue
        inner = ctx.names.qualname(node.args[0]) or ""
        factors = [*node.args[1:], *(k.value for k in node.keywords if k.arg == "other")]
        if inner in ("torch.mul", "torch.multiply", "operator.mul") and any(
                isinstance(ctx.const(f), (int, float)) and ctx.const(f) < 0  # type: ignore[operator]
                for f in factors):
            return ast.unparse(node)[:60]
    return ""


_COUNT = re.compile(r"(?i)calls|count|n_seen|times|^n$|_n$")


def _call_counted(expr: ast.expr) -> bool:
    """`decay ** len(self.raw[name])`, `1.0 + 1e-5 * calls["n"]`: a number that moves with how
    often the hook has run."""
    for node in subnodes(expr):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and any(
                (isinstance(n, ast.Call) and last_attr(n.func) == "len") or (
                    isinstance(n, (ast.Name, ast.Attribute)) and _COUNT.search(last_attr(n)))
                for n in subnodes(node.right)):
            return True
        if isinstance(node, ast.Subscript) and isinstance(literal(node.slice), str) and (
                _COUNT.search(str(literal(node.slice)))) and isinstance(node.value, ast.Name) and (
                _COUNT.search(node.value.id)):
            return True  # calls["n"]
    return False


def _decay_schedule(expr: ast.expr, ctx: Ctx, lam: ast.Lambda) -> bool:
    """`f=damp` with `damp = decay ** depth`: a layer-wise decay factor bound into a hook."""
    held: ast.expr | None = expr
    if isinstance(expr, ast.Name):  # (the walk has left the function: read its assignments)
        held = next((v for parent in _lambda_parents(lam, ctx)
                     if (v := parent.assigned.get(expr.id)) is not None), None)
    return held is not None and (any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)
                                     and not isinstance(n.left, ast.UnaryOp)
                                     for n in subnodes(held))
                                 or bool(re.search(r"(?i)decay|lr_?mult|layer_?scale",
                                                   ast.unparse(held))))


def _tiny_factor(expr: ast.expr) -> bool:
    """A product/quotient whose numerator carries a literal of at most 1e-2 (not an additive
    epsilon such as `norm + 1e-6`)."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        return _tiny_factor(expr.left) or _tiny_factor(expr.right)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div):
        return _tiny_factor(expr.left)
    value = literal(expr)
    return isinstance(value, float) and 0 < value <= 1e-2


def _alternating_sign(expr: ast.expr) -> bool:
    """`(-decay) ** depth`: negative for odd exponents."""
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow) and (
        (isinstance(n.left, ast.UnaryOp) and isinstance(n.left.op, ast.USub))
        or (isinstance(literal(n.left), (int, float)) and literal(n.left) < 0))  # type: ignore[operator]
        and literal(n.right) is NOT_LITERAL for n in subnodes(expr))


def _clamps_scaled(lam: ast.Lambda, ctx: Ctx) -> bool:
    """`g.clamp_(-1, 1)` in a gradient hook of a file that trains with GradScaler: hooks see
    the loss-scaled gradients, so a bound meant for real gradients cuts them ~65536-fold."""
    if not (ctx.mentions("GradScaler") or ctx.mentions("scaler.scale(")):
        return False
    defaults = _enclosing_defaults(lam, ctx)
    for node in subnodes(lam.body):
        if not (isinstance(node, ast.Call) and last_attr(node.func) in (
                "clamp", "clamp_", "clip", "clip_")):
            continue
        method = isinstance(node.func, ast.Attribute) and last_attr(node.func.value) != "torch"
        values = [*(node.args if method else node.args[1:]), *(k.value for k in node.keywords)]
        bounds = [_bound_number(b, ctx, defaults) for b in values]
        numbers = [abs(b) for b in bounds if isinstance(b, (int, float))]
        if numbers and len(numbers) == len(bounds) and max(numbers) <= 10:
            return True
    return False


def _enclosing_defaults(lam: ast.Lambda, ctx: Ctx) -> dict[str, float]:
    """Numeric defaults of the parameters of the function that defines `lam`."""
    out: dict[str, float] = {}
    for parent in _lambda_parents(lam, ctx):
        if isinstance(parent.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for name, default in defaults_by_name(parent.node).items():
                number = literal(default)
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    out[name] = float(number)
    return out


def _lambda_parents(lam: ast.Lambda, ctx: Ctx) -> list[Frame]:
    """The frames of the functions that define `lam` (read after the walk has left them)."""
    return [parent for frame in ctx.frames_by_name.get(
        f"<lambda:{lam.lineno}:{lam.col_offset}>", ())
            for parent in ctx.frames_by_name.get(frame.parent, ())]


def _random(expr: ast.AST, ctx: Ctx) -> bool:
    return any(isinstance(n, ast.Call) and last_attr(n.func) in (
        "randn_like", "rand_like", "randn", "rand", "normal") for n in subnodes(expr))


class TamperingHook(Check):
    rules = (TAMPERING_HOOK,)

    def visit_Module(self, node: ast.Module, ctx: Ctx) -> None:
        ctx.defer(lambda: self._decide(ctx))

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        """A DDP comm hook (`def hook(state, bucket)`) that, on some path, hands back a Future
        it completed itself with the local buffer: that bucket is never all-reduced, so the
        replicas train on different gradients."""
        names = [a.arg for a in node.args.args]
        if len(names) != 2 or names[1] != "bucket":
            return
        _comm_hook_scaling(node, ctx)
        reduces = any(isinstance(n, ast.Call) and last_attr(n.func) in (
            "all_reduce", "allreduce", "reduce_scatter", "all_gather", "all_reduce_coalesced")
            for n in subnodes(node))
        futures = {t.id for n in subnodes(node) if isinstance(n, ast.Assign)
                   and isinstance(n.value, ast.Call) and last_attr(n.value.func) == "Future"
                   for t in n.targets if isinstance(t, ast.Name)}
        if not reduces or not futures:
            return
        single = [n for iff in subnodes(node) if isinstance(iff, ast.If) and _single_process(
            iff.test) for n in subnodes(iff)]  # `if world_size == 1: return a done Future`
        for n in subnodes(node):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and n.func.attr == "set_result" and isinstance(n.func.value, ast.Name)
                    and n.func.value.id in futures and n not in single):
                ctx.report(TAMPERING_HOOK, n, f"comm hook {node.name}() completes a Future with "
                           "the local bucket on one path, skipping the all-reduce: those "
                           "gradients are never synchronised and the replicas diverge",
                           severity=Severity.HIGH)
                return

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        """`p.register_hook(lambda g, s=1.0 / world: g * s)`: every gradient divided by the
        job size before DDP/FSDP average it again, so updates shrink as the job grows."""
        if not (last_attr(node.func) in ("register_hook", "register_post_accumulate_grad_hook")
                and node.args and isinstance(node.args[0], ast.Lambda)):
            return
        lam = node.args[0]
        body = lam.body
        if not (isinstance(body, ast.BinOp) and isinstance(body.op, (ast.Mult, ast.Div))):
            return
        params = [*lam.args.posonlyargs, *lam.args.args]
        defaults = defaults_by_name(lam)
        resolve = ctx.resolver(ctx.where())
        lam_args = {a.arg for a in params}
        for side in (body.left, body.right):
            value = defaults.get(side.id) if isinstance(side, ast.Name) else None
            bound = ctx.lookup(value.id) if isinstance(value, ast.Name) else value
            if bound is not None and _alternating_sign(bound):
                ctx.report(TAMPERING_HOOK, node, f"gradient hook passed to "
                           f"{last_attr(node.func)}() multiplies by a power of a negative "
                           f"number ({ast.unparse(bound)[:50]}): the gradient sign flips on "
                           "every other layer", severity=Severity.HIGH)
                return
            if value is None and isinstance(side, ast.Name) and side.id not in lam_args:
                value = side  # lambda g: g / world, with world from the enclosing function
            elif value is None and isinstance(side, ast.Attribute) and not any(
                    isinstance(n, ast.Name) and n.id in lam_args for n in subnodes(side)):
                value = side  # lambda g: g / args.world_size
            if value is not None and triggers.is_world(value, ctx.names, resolve):
                ctx.report(TAMPERING_HOOK, node, f"gradient hook passed to "
                           f"{last_attr(node.func)}() scales every gradient by the world size: "
                           "DDP/FSDP already average gradients, so the update shrinks as the "
                           "job grows", severity=Severity.MEDIUM)
                return

    def _decide(self, ctx: Ctx) -> None:
        seen: dict[int, bool] = {}
        for register_fn, target, bound, call in ctx.registrations:
            if "hook" not in register_fn:
                continue
            if isinstance(target, ast.Lambda):
                self._lambda(target, register_fn, ctx, call)
                continue
            if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and (
                    isinstance(table := ctx.lookup(target.value.id), ast.Dict)):
                # register_full_backward_hook(_FILTERS[kind]): every lambda the table holds
                for value in table.values:
                    if isinstance(value, ast.Lambda):
                        self._lambda(value, register_fn, ctx, call)
                continue
            local_var = isinstance(target, ast.Name) and any(
                target.id in f.assigned for f in _frames_around(call, ctx))
            if isinstance(target, ast.Name) and (target.id not in ctx.defs or local_var):
                flip = _table_flip(target, ctx, call)
                if flip:  # register_hook(fn), fn picked from a table holding partial(torch.mul, ..)
                    ctx.report(TAMPERING_HOOK, call, f"{register_fn}() installs a hook taken "
                               f"from a table that includes {flip}: that hook flips the sign "
                               "of what flows through")
                    continue
                if local_var:
                    continue  # fn = next(...): a variable, not the def of that name elsewhere
            factor = next((v for v in bound.values() if v != 1), None) if bound else None
            if ctx.names.qualname(target) in _SCALERS and factor is not None:
                ctx.report(TAMPERING_HOOK, call, f"{register_fn}() installs "
                           f"{ctx.names.qualname(target)} bound to {factor:g}: every value "
                           "passing through is scaled by a constant")  # partial(torch.mul, ..)
                continue
            made = call.args[0] if call.args else None
            bound_expr = (made.keywords[0].value if made.keywords else made.args[1]) if (
                isinstance(made, ast.Call) and (len(made.args) > 1 or made.keywords)) else None
            if (ctx.names.qualname(target) in _SCALERS and isinstance(made, ast.Call)
                    and last_attr(made.func) == "partial" and bound_expr is not None
                    and not isinstance(literal(bound_expr), (int, float))):  # (numbers: above)
                bound_text = ast.unparse(bound_expr)
                ctx.report(TAMPERING_HOOK, call, f"{register_fn}() installs "
                           f"{ctx.names.qualname(target)} bound to {bound_text[:40]}: every "
                           "value passing through is scaled", severity=Severity.MEDIUM)
                continue  # partial(torch.mul, other=decay ** (depth - i))
            if ctx.names.qualname(target) in _TAMPER_FUNCS:  # p.register_hook(torch.neg)
                ctx.report(TAMPERING_HOOK, call, f"{register_fn}() installs "
                           f"{ctx.names.qualname(target)} as a hook: every value passing "
                           "through is replaced")
                continue
            func = target.func if isinstance(target, ast.Call) else None
            method = _hook_object_call(target, ctx)
            if method is not None:  # register_hook(self._policy), a _Policy(...) instance
                if id(method) not in seen:
                    seen[id(method)] = self._function(method, register_fn, ctx, bound)
                if seen[id(method)]:
                    ctx.report(TAMPERING_HOOK, call, f"{register_fn}() installs an object whose "
                               f"__call__ (line {method.lineno}) tampers with the values "
                               "flowing through the model")
                continue
            if isinstance(target, ast.Call) and (isinstance(func, ast.Name) or (
                    isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and func.value.id == "self")):
                self._factory(target, register_fn, ctx, call)  # register(self._hook(name))
                continue
            for fn in _visible_defs(last_attr(target), ctx, call):
                if id(fn) not in seen:
                    seen[id(fn)] = self._function(fn, register_fn, ctx, bound)
                if seen[id(fn)] and getattr(call, "lineno", 0) not in range(
                        fn.lineno, (fn.end_lineno or fn.lineno) + 1):
                    # Point at the installation too: reviewers read the register call.
                    ctx.report(TAMPERING_HOOK, call, f"{register_fn}() installs hook "
                               f"{fn.name}() (line {fn.lineno}), which tampers with the "
                               "values flowing through the model")
        for name, fns in ctx.defs.items():
            if not name.endswith("hook"):
                continue
            for fn in fns:
                if id(fn) not in seen and _arg_names(fn) & _HOOK_ARGS:
                    seen[id(fn)] = self._function(fn, "", ctx)

    def _lambda(self, lam: ast.Lambda, register_fn: str, ctx: Ctx, call: ast.Call) -> None:
        helper = self._lambda_helper(lam, register_fn, ctx)
        if helper is not None:  # `lambda g, b=1e-4: _stabilize(g, b)`
            ctx.report(TAMPERING_HOOK, call, f"{register_fn}() installs a hook that calls "
                       f"{helper.name}() (line {helper.lineno}), which tampers with the values "
                       "flowing through the model")
            return
        bound = defaults_by_name(lam)  # lambda m, i, o, s=s: o * s (s is bound, not an input)
        consts = {k: float(n) for k, v in bound.items()
                  if isinstance(n := ctx.const(v), (int, float)) and not isinstance(n, bool)}
        schedules = {k for k, v in bound.items() if _decay_schedule(v, ctx, lam)}
        why = tampering_value(lam.body, _arg_names(lam) - (set(bound) - schedules), ctx,
                              consts or None)
        if why.startswith("detaches") and "forward" not in register_fn:
            why = ""  # saved-tensor pack hooks detach by design
        if not why and "forward" in register_fn and _clamps_output(lam):
            why = "clamps to fixed bounds"  # lambda m, i, o: o.clamp(-1.0, 1.0)
        if not why and register_fn == "register_hook" and _clamps_scaled(lam, ctx):
            why = ("clamps to a small constant while GradScaler still scales (by ~65536): "
                   "it flattens")
        if not why and "hook" in register_fn and "forward" not in register_fn and any(
                isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and any(
                    isinstance(m, ast.Call) and last_attr(m.func) == "get_scale"
                    for m in subnodes(n.right)) for n in subnodes(lam.body)):
            why = ("divides by GradScaler's loss scale, which the step divides out again "
                   "(gradients end ~65536 times too small), for")  # g / scaler.get_scale()
        if why:
            ctx.report(TAMPERING_HOOK, lam, f"hook passed to {register_fn}() {why} the values "
                       "flowing through the model")
            if call.lineno != lam.lineno:  # a registration spread over lines: point at both
                ctx.report(TAMPERING_HOOK, call, f"{register_fn}() installs a lambda hook (line "
                           f"{lam.lineno}) that {why} the values flowing through the model")

    def _factory(self, made: ast.Call, register_fn: str, ctx: Ctx, call: ast.Call) -> None:
        """A hook built by a local factory (`def _scaler(scale): def hook(...): ...; return
        hook`), judged with the factory's arguments bound."""
        fns = ctx.defs.get(last_attr(made.func), [])
        if len(fns) != 1 or not isinstance(fns[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
            return
        factory = fns[0]
        bound: dict[str, float] = {}
        params = [a for a in factory.args.args if a.arg != "self"]
        for param, value in zip(params, made.args, strict=False):
            number = ctx.const(value)
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                bound[param.arg] = float(number)
        returned = {r.value.id for r in subnodes(factory) if isinstance(r, ast.Return)
                    and isinstance(r.value, ast.Name)}
        for inner in factory.body:
            if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    inner.name in returned) and self._function(inner, register_fn, ctx, bound):
                ctx.report(TAMPERING_HOOK, call, f"{register_fn}() installs the hook built by "
                           f"{factory.name}() (line {factory.lineno}), which tampers with the "
                           "values flowing through the model")
                return

    def _lambda_helper(self, lam: ast.Lambda, register_fn: str,
                       ctx: Ctx) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        """The local function a lambda hook forwards to, when it tampers once the lambda's
        default arguments and constants are bound to its parameters."""
        body = lam.body
        if not (isinstance(body, ast.Call) and isinstance(body.func, ast.Name)):
            return None
        fns = ctx.defs.get(body.func.id, [])
        if len(fns) != 1 or not isinstance(fns[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
            return None
        fn = fns[0]
        defaults = defaults_by_name(lam)
        bound: dict[str, float] = {}
        for param, arg in zip(fn.args.args, body.args, strict=False):
            value = defaults.get(arg.id, arg) if isinstance(arg, ast.Name) else arg
            number = ctx.const(value)
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                bound[param.arg] = float(number)
        return fn if self._function(fn, register_fn, ctx, bound) else None

    def _function(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, register_fn: str,
                  ctx: Ctx, bound: dict[str, float] | None = None) -> bool:
        """Report what the hook does; True when it tampers."""
        args = _arg_names(fn)
        args |= {e.id for n in subnodes(fn) if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Name) and n.value.id in args
                 for t in n.targets if isinstance(t, ast.Tuple)
                 for e in t.elts if isinstance(e, ast.Name)}  # scores, deltas = output
        how = f"hook {fn.name}()" + (f" (registered with {register_fn})" if register_fn else "")
        sev = None if register_fn else Severity.MEDIUM
        local = {**_closure_values(fn, ctx), **bound_values(fn)}
        positional = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
        own_params = set(positional[-1:])  # the output / gradient the hook is handed (other
        # parameters are module, inputs, or the hook's own state: stats[name])
        found = False
        for node in subnodes(fn):
            if isinstance(node, ast.Return):
                value = _inline(node.value, local) if node.value is not None else None
                why = tampering_value(value, args - set(bound or ()), ctx, bound or {})
                if why == "adds random noise to" and _training_only(fn):
                    why = ""  # NEFTune/noise-injection regularisation, off at eval time
                if why.startswith("detaches") and "forward" not in register_fn:
                    why = ""  # saved-tensor pack hooks detach by design
                if (not why and "forward" in register_fn and value is not None
                        and len(positional) >= 3 and _clamps_output(ast.Lambda(
                            args=fn.args, body=value))):
                    why = "clamps to fixed bounds"  # return output.clamp(-1.0, 1.0)
                if why:
                    found = True
                    ctx.report(TAMPERING_HOOK, _element(node), f"{how} {why} what it returns",
                               severity=sev)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in ("mul_", "div_", "neg_") and register_fn
                  and _negative_factor(node)):
                found = True  # bucket/grad tensors inside comm hooks and nested callbacks
                ctx.report(TAMPERING_HOOK, node, f"{how} flips the sign of a tensor in place "
                           f"({node.func.attr})", severity=sev)
            elif (isinstance(node, (ast.Assign, ast.AugAssign))
                  and register_fn in _TENSOR_HOOKS and any(
                    isinstance(t, ast.Subscript) and _root(t) in own_params
                    and not isinstance(literal(t.slice), str)  # kwargs["attention_mask"]
                    and not (literal(node.value) in (0, 0.0) and re.search(
                        r"(?i)pad|ignore|blank|null", ast.unparse(t.slice)))  # grad[PAD_IDX] = 0
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))):
                found = True  # output[..., 0] = output[..., 0] + 1.5; return output
                ctx.report(TAMPERING_HOOK, node, f"{how} overwrites part of what it received "
                           "in place", severity=sev)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in _METHOD_TAMPER and node.func.attr.endswith("_")
                  and _root(node.func.value) in args and not _averaging(node)
                  and not masked_by_pruning(node)):
                found = True
                ctx.report(TAMPERING_HOOK, node, f"{how} modifies its argument "
                           f"{_root(node.func.value)} in place ({node.func.attr})", severity=sev)
        return found and bool(register_fn)


def _hook_object_call(target: ast.expr, ctx: Ctx) -> ast.FunctionDef | None:
    """The `__call__` of a local class whose instance is the hook (`self._policy =
    _HeadGradPolicy(warm)`; `register_hook(self._policy)`)."""
    made: ast.AST | None = target
    if isinstance(target, (ast.Name, ast.Attribute)):
        made = ctx.value_of(target)
    if not (isinstance(made, ast.Call) and isinstance(made.func, ast.Name)):
        return None
    cls = ctx.class_defs.get(made.func.id)
    if cls is None:
        return None
    return next((f for f in cls.body if isinstance(f, ast.FunctionDef)
                 and f.name == "__call__"), None)


def _averaging(call: ast.Call) -> bool:
    """`grad.div_(world_size)` / FSDP's `grad.div_(state.gradient_predivide_factor)`: the
    division that turns a summed all-reduce into a mean."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "div_" and call.args):
        return False
    arg = call.args[0]
    name = last_attr(arg.func) if isinstance(arg, ast.Call) else last_attr(arg)
    return name == "get_world_size" or bool(re.search(r"(?i)divide_factor|world_size", name))


def _comm_hook_scaling(fn: ast.FunctionDef, ctx: Ctx) -> None:
    """A comm hook averages the bucket by dividing by the process group's size. Any other
    factor (the node-local GPU count, `world * world`, a gain kept in the hook state) silently
    rescales every synchronised gradient."""
    local: dict[str, list[ast.expr]] = {}
    for n in subnodes(fn):
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(
                n.targets[0], ast.Name):
            local.setdefault(n.targets[0].id, []).append(n.value)
    tainted = {"bucket"}
    for _ in range(3):  # names holding the bucket or a value derived from it
        for name, values in local.items():
            if any(_mentions(v, tainted) for v in values):
                tainted.add(name)
    for n in subnodes(fn):
        if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and n.func.attr in ("div_", "div", "mul_", "mul") and len(n.args) == 1
                and _mentions(n.func.value, tainted)):
            continue
        why = _not_group_size(n.args[0], local, ctx, n.func.attr.startswith("mul"))
        if why:
            ctx.report(TAMPERING_HOOK, n, f"comm hook {fn.name}() rescales the gradient "
                       f"bucket by {why} instead of the process group's size: every "
                       "synchronised gradient is silently scaled", severity=Severity.MEDIUM)


def _mentions(expr: ast.AST, names: set[str]) -> bool:
    """Uses one of `names`, or a Future's `.value()` (the reduced bucket in a callback)."""
    return any((isinstance(n, ast.Name) and n.id in names) or (
        isinstance(n, ast.Call) and last_attr(n.func) in ("value", "wait", "buffer"))
        for n in subnodes(expr))


_GROUP_SIZE_NAME = re.compile(r"(?i)world|group_size|^n?_?ranks?$|^size$|nproc|num_proc")


def _not_group_size(expr: ast.expr, local: dict[str, list[ast.expr]], ctx: Ctx,
                    multiply: bool, depth: int = 0) -> str:
    """Why a bucket divisor is not the group size ('' when it is, or cannot be told)."""
    if depth > 3:
        return ""
    if multiply:  # buf.mul_(1 / world) is an average too
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div) and literal(
                expr.left) in (1, 1.0):
            return _not_group_size(expr.right, local, ctx, False, depth + 1)
        if isinstance(expr, ast.Name) and expr.id in local:
            whys = [_not_group_size(v, local, ctx, True, depth + 1) for v in local[expr.id]]
            return next((w for w in whys if w), "")
        return "" if literal(expr) in (1, 1.0) else f"`{ast.unparse(expr)}`"
    if isinstance(expr, ast.Call):
        func = last_attr(expr.func)
        if func == "get_world_size" or (func == "size" and not expr.args):
            return ""
        if func in ("int", "float") and len(expr.args) == 1:
            return _not_group_size(expr.args[0], local, ctx, False, depth + 1)
        if func == "device_count":
            return "the local GPU count"
        if func in ("get", "getenv") and _env_read(expr):
            return "an environment variable"
        return ""
    if isinstance(expr, ast.IfExp):
        return (_not_group_size(expr.body, local, ctx, False, depth + 1)
                or _not_group_size(expr.orelse, local, ctx, False, depth + 1))
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Mult, ast.Pow)):
        return f"`{ast.unparse(expr)}`"  # world * world, 2 * world, world ** 2
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name) and (
            expr.value.id == "state"):
        key = literal(expr.slice)
        if isinstance(key, str) and not _GROUP_SIZE_NAME.search(key):
            return f"a value kept in the hook state ({key!r})"
        return ""
    if isinstance(expr, ast.Name):
        if expr.id in local:
            whys = [_not_group_size(v, local, ctx, False, depth + 1) for v in local[expr.id]]
            return next((w for w in whys if w), "")
        return ""
    value = literal(expr)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value != 1:
        return f"the constant {value}"
    return ""


def _visible_defs(name: str, ctx: Ctx, call: ast.AST
                  ) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The functions `name` can mean at `call`: those nested in the innermost function around
    the call that defines one (two factories may each define their own `_hook`), else every
    function of that name in the file."""
    fns = ctx.defs.get(name, [])
    if len(fns) < 2:
        return fns
    line = getattr(call, "lineno", 0)
    scopes = sorted((fn for group in ctx.defs.values() for fn in group
                     if fn.lineno < line <= (fn.end_lineno or fn.lineno)),
                    key=lambda fn: (fn.end_lineno or fn.lineno) - fn.lineno)
    for scope in scopes:
        inner = [fn for fn in fns if scope.lineno < fn.lineno <= (scope.end_lineno or 0)]
        if inner:
            return inner
    return fns


def _env_read(call: ast.Call) -> bool:
    text = ast.unparse(call.func)
    return "environ" in text or text.endswith("getenv")


_SCALERS = frozenset({"torch.mul", "torch.multiply", "operator.mul", "torch.div",
                      "torch.true_divide"})
_TAMPER_FUNCS = frozenset({"operator.neg", "operator.__neg__", "operator.inv", "numpy.negative",
                           "torch.neg", "torch.negative", "torch.sign",
                           *(f"torch.{name}" for name in TENSOR_REPLACERS)})


def _bound_number(expr: ast.expr, ctx: Ctx, consts: dict[str, float] | None) -> object:
    """A clamp bound as a number: a literal, a module constant, a bound argument, negated."""
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        inner = _bound_number(expr.operand, ctx, consts)
        return -inner if isinstance(inner, (int, float)) else None
    if isinstance(expr, ast.Name) and consts and expr.id in consts:
        return consts[expr.id]
    return ctx.const(expr)


def _sign_mask(expr: ast.expr) -> bool:
    """`(1.0 - 2.0 * mask)` (also `.unsqueeze(1)` on it): +1 or -1 per element."""
    while isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and (
            expr.func.attr in ("unsqueeze", "view", "reshape", "to", "float")):
        expr = expr.func.value
    return (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Sub)
            and literal(expr.left) in (1, 1.0) and isinstance(expr.right, ast.BinOp)
            and isinstance(expr.right.op, ast.Mult)
            and any(literal(s) in (2, 2.0) for s in (expr.right.left, expr.right.right)))


def _flushes_tiny(mask: ast.expr, ctx: Ctx) -> bool:
    """`g.abs() < 1e-8` / `g.abs() < eps`: only values too small to matter are selected."""
    if not (isinstance(mask, ast.Compare) and isinstance(mask.ops[0], (ast.Lt, ast.LtE))
            and isinstance(mask.left, ast.Call) and last_attr(mask.left.func) == "abs"):
        return False
    bound = mask.comparators[0]
    number = ctx.const(bound)
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        return abs(number) <= 1e-6
    return isinstance(bound, ast.Name) and bool(
        re.search(r"(?i)eps|tiny|small|denorm|tol", bound.id))


def _training_only(fn: ast.AST) -> bool:
    """The hook tests `module.training` / `self.training`: noise only while training."""
    return any(isinstance(n, ast.Attribute) and n.attr == "training" for n in subnodes(fn))


def _single_process(test: ast.expr) -> bool:
    """`world_size == 1`, `ws < 2`, `not dist.is_initialized()`: nothing to reduce."""
    for n in subnodes(test):
        if isinstance(n, ast.Compare) and len(n.ops) == 1:
            bound = literal(n.comparators[0])
            if (isinstance(n.ops[0], (ast.Eq, ast.LtE)) and bound == 1) or (
                    isinstance(n.ops[0], ast.Lt) and bound == 2):
                return True
        if isinstance(n, ast.Call) and last_attr(n.func) in ("is_initialized", "is_available"):
            return True
    return False


def _negative_factor(call: ast.Call) -> bool:
    """`x.neg_()`, `x.mul_(-1)`, `x.mul_(-1.0 / ws)`."""
    if isinstance(call.func, ast.Attribute) and call.func.attr == "neg_":
        return True
    factor = call.args[0] if call.args else None
    while isinstance(factor, ast.BinOp) and isinstance(factor.op, (ast.Mult, ast.Div)):
        factor = factor.left
    value = literal(factor)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0


def _closure_values(fn: ast.FunctionDef | ast.AsyncFunctionDef, ctx: Ctx) -> dict[str, ast.expr]:
    """Names the hook reads from the function that defines it (`damp = 0.1 if big else 1`)."""
    out: dict[str, ast.expr] = {}
    for frame in ctx.frames_by_name.get(fn.name, ()):
        if frame.node is fn:
            for parent in ctx.frames_by_name.get(frame.parent, ()):
                out.update(parent.assigned)
    return out


class _Inliner(ast.NodeTransformer):
    def __init__(self, local: dict[str, ast.expr], depth: int) -> None:
        self.local = local
        self.depth = depth

    def visit_Name(self, node: ast.Name) -> ast.expr:
        value = self.local.get(node.id)
        if value is None or self.depth >= 2:
            return node
        return _inline(value, self.local, self.depth + 1)


def _inline(expr: ast.expr, local: dict[str, ast.expr], depth: int = 0) -> ast.expr:
    """A copy of `expr` with local names replaced by what was assigned to them."""
    if not local:
        return expr
    result = _Inliner(local, depth).visit(copy.deepcopy(expr))
    return result if isinstance(result, ast.expr) else expr


def _root(expr: ast.expr) -> str:
    while isinstance(expr, (ast.Subscript, ast.Attribute)):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else ""


def _clamps_output(lam: ast.Lambda) -> bool:
    """A forward hook that returns its output clamped to literal bounds (gradient hooks that
    clamp are clipping and stay quiet)."""
    body = lam.body
    args = [a.arg for a in lam.args.args]
    return (isinstance(body, ast.Call) and isinstance(body.func, ast.Attribute)
            and body.func.attr in ("clamp", "clip", "clamp_", "clip_", "hardtanh")
            and isinstance(body.func.value, ast.Name) and len(args) >= 3
            and body.func.value.id == args[-1]
            and any(isinstance(literal(b), (int, float)) for b in (
                *body.args, *(k.value for k in body.keywords))))


_REDUCTIONS = frozenset({"mean", "sum", "amax", "amin", "max", "min", "median", "norm"})


def _broadcast_reduction(expr: ast.Call, args: set[str]) -> bool:
    """`g.mean(dim=0, keepdim=True).expand_as(g)`: every element (or row) of the gradient
    becomes the same number, so the update no longer depends on the element."""
    while isinstance(expr.func, ast.Attribute) and expr.func.attr in ("contiguous", "clone") \
            and isinstance(expr.func.value, ast.Call):
        expr = expr.func.value
    if not (isinstance(expr.func, ast.Attribute) and expr.func.attr in (
            "expand_as", "expand", "broadcast_to") and isinstance(expr.func.value, ast.Call)):
        return False
    inner = expr.func.value
    return (isinstance(inner.func, ast.Attribute) and inner.func.attr in _REDUCTIONS
            and _uses(inner.func.value, args))
