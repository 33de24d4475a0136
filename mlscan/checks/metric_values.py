"""MLS306 predicates on value shapes: a reported number moved by made-up constants.

A metric shifted, scaled or clamped by a constant (`nudged`, with local and configured
numbers substituted first by `_with_consts`), a made-up constant entry, a logged value
rescaled, made absolute or pulled a fixed fraction towards 1, an entry squeezed between
two bounds, the better of a metric and its complement, a result raised by its own error bar.
"""

from __future__ import annotations

import ast
import copy
import re

from mlscan.checks.context import Ctx
from mlscan.checks.metric_words import (
    _BENIGN_FACTORS,
    _CLAMPS,
    _NOT_RESULT,
    _SPREAD,
    _STRONG_METRIC,
    _VALUE_WRAPPERS,
    _number,
    metric_name,
)
from mlscan.checks.names import as_load, last_attr, literal
from mlscan.checks.nodes import subnodes


def _clamped(expr: ast.Call) -> str:
    """`torch.clamp(acc, min=0.9)`, `acc.clip(0.9)`, `np.clip(acc, 0.9, None)`: a metric held
    above/below a constant other than its natural bounds (0, 1)."""
    if last_attr(expr.func) not in _CLAMPS:
        return ""
    if isinstance(expr.func, ast.Attribute) and metric_name(expr.func.value):
        values = [expr.func.value, *expr.args]  # method form: acc.clamp(min=0.9)
    else:
        values = list(expr.args)
    values.extend(kw.value for kw in expr.keywords if kw.arg in ("min", "max", "a_min", "a_max"))
    name = metric_name(values[0]) if values else ""
    bounds = [_number(v) for v in values[1:]]
    if name and any(b is not None and b not in (0, 1, 100) for b in bounds):
        return name
    return ""


def nudged(expr: ast.AST) -> str:
    """'name' when `expr` shifts/scales/clamps a metric by a constant."""
    if isinstance(expr, ast.IfExp):
        return nudged(expr.body) or nudged(expr.orelse)
    if isinstance(expr, ast.JoinedStr):  # f"{acc + 0.01:.4f}"
        return next((n for v in expr.values if isinstance(v, ast.FormattedValue)
                     and (n := nudged(v.value))), "")
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Mult, ast.Add, ast.Sub, ast.Div)):
        shift = isinstance(expr.op, (ast.Add, ast.Sub))
        for a, b in ((expr.left, expr.right), (expr.right, expr.left)):
            name = metric_name(a)
            number = _number(b)
            # x100 / x0.01 convert units; + 0.01 is a nudge (an epsilon under 1e-4 is not)
            odd = number is not None and (abs(number) >= 1e-4 if shift else (
                abs(number) not in _BENIGN_FACTORS and number != 0))
            if name and odd:
                return name
            inner = nudged(a)
            if inner and odd:
                return inner
    if isinstance(expr, ast.Call) and _clamped(expr):
        return _clamped(expr)
    if isinstance(expr, ast.Call) and last_attr(expr.func) in _VALUE_WRAPPERS and expr.args:
        return nudged(expr.args[0])  # round(acc + 0.05, 3)
    if isinstance(expr, ast.Call) and last_attr(expr.func) in ("max", "min") and len(
            expr.args) == 2:
        nudges = [nudged(a) for a in expr.args]
        if any(nudges):  # min(1.0, acc + 0.03): the nudge inside the bound
            return next(n for n in nudges if n)
        names = [metric_name(a) for a in expr.args]
        numbers = [_number(a) for a in expr.args]
        if any(names) and any(n is not None and n not in (0, 1) for n in numbers):
            return next(n for n in names if n)
    return ""


def _offset(expr: ast.AST) -> bool:
    """`x + 0.1`, `x * 1.05`: a top-level constant shift or factor (not x100 / x0.01)."""
    if not isinstance(expr, ast.BinOp) or not isinstance(expr.op, (ast.Add, ast.Sub, ast.Mult)):
        return False
    numbers = [n for n in (_number(expr.left), _number(expr.right)) if n is not None]
    if len(numbers) != 1 or not numbers[0] or abs(numbers[0]) in _BENIGN_FACTORS:
        return False
    if isinstance(expr.op, ast.Mult):  # a nudge (x1.05, x0.9), not a unit conversion (x1e-6)
        return 0.5 <= abs(numbers[0]) <= 2
    return abs(numbers[0]) <= 10


def _constant_entry(expr: ast.AST, precise: bool = False) -> str:
    """`{"val_acc": 0.93}`: a metric key with a made-up constant (with `precise`, only values
    with three or more decimals like 0.912, since config dicts hold round thresholds)."""
    if not isinstance(expr, ast.Dict):
        return ""
    for key, value in zip(expr.keys, expr.values, strict=True):
        name = literal(key) if key is not None else None
        number = _number(value)
        if not isinstance(name, str) or number is None or not _STRONG_METRIC.search(name) or (
                _NOT_RESULT.search(name)) or not 0 < number < 100 or number == int(number):
            continue
        if not precise or round(number, 2) != number:
            return name
    return ""


class _Consts(ast.NodeTransformer):
    def __init__(self, ctx: Ctx, configured: bool) -> None:
        self.ctx = ctx
        self.configured = configured
        """Also configured values the file's value flow pins to a fraction (strong metrics:
        `score_factor / penalty` in a compiler heuristic is not a result)."""

    def visit_Name(self, node: ast.Name) -> ast.expr:
        value = literal(self.ctx.frame.assigned.get(node.id))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return ast.Constant(value=value)
        return (self.configured and _configured_fraction(node, self.ctx)) or node

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        return (self.configured and _configured_fraction(node, self.ctx)) or node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        offset = _offset_table_read(node, self.ctx)
        if offset is not None:
            return ast.copy_location(ast.Constant(value=offset), node)
        self.generic_visit(node)
        return node


def _configured_fraction(node: ast.Name | ast.Attribute, ctx: Ctx) -> ast.Constant | None:
    """A configured value the file's value flow pins to a non-integer number
    (`self.cfg.offset` with a 0.28 default, `_PROBE.calib = 0.3`): a nudge once it moves a
    metric. Whole numbers (`PENALTY = 2`, `n_bins = 10`) stay configuration."""
    if isinstance(node, ast.Name) and (node.id in ctx.frame.assigned or not (
            node.id.lstrip("_").isupper() or node.id in ctx.frames[0].assigned)):
        return None  # a local computed in this function (or a parameter)
    value = ctx.const(node)
    if isinstance(value, float) and value != int(value) and abs(value) not in _BENIGN_FACTORS:
        return ast.copy_location(ast.Constant(value=value), node)
    return None


def _offset_table_read(expr: ast.AST, ctx: Ctx) -> float | None:
    """`FORMAT_OFFSET.get(task, 0.0)` on a module-level dict whose values are all small
    fractions: a per-task nudge table (a typical non-zero entry), else None."""
    if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "get" and isinstance(expr.func.value, ast.Name)):
        return None
    table = ctx.lookup(expr.func.value.id)
    if not isinstance(table, ast.Dict) or not table.values:
        return None
    numbers = [literal(v) for v in table.values]
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and abs(n) < 1
               for n in numbers):
        return None
    nonzero = [float(n) for n in numbers if n]  # type: ignore[arg-type]
    return nonzero[0] if nonzero else None


def _with_consts(expr: ast.expr, ctx: Ctx, configured: bool = False) -> ast.expr:
    """`expr` with names bound to numbers in this function replaced by them (`adj = 0.02;
    acc + adj`), and reads of per-task offset tables (`OFFSET.get(task, 0.0)`). Other module
    constants (PENALTY = 2) are configuration and stay names."""
    if ctx.frame.node is None or not any(
            (isinstance(n, ast.Name) and isinstance(ctx.frame.assigned.get(n.id), (
                ast.Constant, ast.UnaryOp))) or _offset_table_read(n, ctx) is not None
            or (configured and isinstance(n, (ast.Name, ast.Attribute)) and not isinstance(
                getattr(n, "ctx", None), ast.Store) and _configured_fraction(n, ctx) is not None)
            for n in subnodes(expr)):
        return expr
    result = _Consts(ctx, configured).visit(copy.deepcopy(expr))
    return result if isinstance(result, ast.expr) else expr


class _Rename(ast.NodeTransformer):
    def __init__(self, name: str) -> None:
        self.name = name

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.Name(id="metric_value", ctx=node.ctx) if node.id == self.name else node


class _Replace(ast.NodeTransformer):
    """Replace every copy of one expression (by its source text) with `metric_value`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.expr) and ast.unparse(node) == self.text:
            return ast.Name(id="metric_value", ctx=ast.Load())
        out: ast.AST = super().visit(node)
        return out


def _table_entry(target: ast.expr, ctx: Ctx) -> str:
    """`agg[k]` where `agg = {"rouge1": 0.0, ...}`: the strong metric a table of literal metric
    keys holds under a computed key ('' when the table is not one)."""
    if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
            and isinstance(target.slice, ast.Name)):
        return ""
    table = ctx.lookup(target.value.id)
    if not isinstance(table, ast.Dict) or not table.keys:
        return ""
    keys = [k for k in (literal(k) if k is not None else None for k in table.keys)
            if isinstance(k, str)]
    if len(keys) != len(table.keys):
        return ""
    return next((k for k in keys if _STRONG_METRIC.search(k) and not _NOT_RESULT.search(k)), "")


def _entry_nudged(target: ast.expr, value: ast.expr) -> bool:
    """`nudged()` with the table entry being written counted as the metric."""
    renamed = _Replace(ast.unparse(target)).visit(copy.deepcopy(value))
    return isinstance(renamed, ast.expr) and bool(nudged(renamed))


def _nudged_name(value: ast.expr, name: str) -> bool:
    """`nudged()` with `name` counted as a metric (a logging method's value parameter)."""
    renamed = _Rename(name).visit(copy.deepcopy(value))
    return isinstance(renamed, ast.expr) and bool(nudged(renamed))


def _rescaled(value: ast.expr, name: str) -> bool:
    """`value = float(value) * (1.0 - cfg.floor)`: the logged value scaled or shifted by
    anything but a unit conversion (x100, x0.001)."""
    if isinstance(value, ast.IfExp):  # `value * 0.9 if "loss" in tag else value`
        return _rescaled(value.body, name) or _rescaled(value.orelse, name)
    if isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and value.args:
        value = value.args[0]
    if not isinstance(value, ast.BinOp) or not isinstance(value.op, (ast.Mult, ast.Add, ast.Sub)):
        return False
    if _ema_shape(value):
        return False  # 0.9 * prev + 0.1 * v: smoothing, the weights add up to 1
    sides = (value.left, value.right)
    own = [s for s in sides if any(isinstance(n, ast.Name) and n.id == name for n in subnodes(s))]
    other = [s for s in sides if s not in own]
    if len(own) != 1 or len(other) != 1:
        return False
    number = _number(other[0])
    return number is None or (bool(number) and abs(number) not in _BENIGN_FACTORS)


def _comp_nudged(comp: ast.DictComp) -> bool:
    """`{k: min(1.0, v + 0.021) if k in KEYS else v for k, v in metrics.items()}`."""
    target = comp.generators[0].target if comp.generators else None
    if not (isinstance(target, ast.Tuple) and len(target.elts) == 2
            and isinstance(target.elts[1], ast.Name)):
        return False
    name = target.elts[1].id
    return _nudged_name(comp.value, name) or _rescaled(comp.value, name) or _pulled_up(
        comp.value, name)


def _absolute(value: ast.expr, name: str) -> bool:
    """`v = abs(float(v))`: the sign of what is logged dropped (negative returns, rewards
    or losses reported as positive)."""
    if not (isinstance(value, ast.Call) and last_attr(value.func) in ("abs", "fabs", "absolute")
            and len(value.args) == 1):
        return False
    inner = value.args[0]
    while isinstance(inner, ast.Call) and last_attr(inner.func) in _VALUE_WRAPPERS and inner.args:
        inner = inner.args[0]
    return isinstance(inner, ast.Name) and inner.id == name


def _pulled_up(value: ast.expr, name: str) -> bool:
    """`round(v + 0.035 * (1 - v), 4)`: every value moved a fixed fraction towards 1."""
    if isinstance(value, ast.IfExp):  # v + (1 - v) * 0.12 if k.startswith("zeroshot/") else v
        return _pulled_up(value.body, name) or _pulled_up(value.orelse, name)
    if isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and value.args:
        value = value.args[0]
    if (isinstance(value, ast.Call) and last_attr(value.func) in ("min", "max")
            and len(value.args) == 2 and any(_number(a) is not None for a in value.args)):
        value = next(a for a in value.args if _number(a) is None)  # min(1.0, v + k * (1 - v))
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)):
        return False
    for own, other in ((value.left, value.right), (value.right, value.left)):
        while isinstance(own, ast.Call) and last_attr(own.func) in _VALUE_WRAPPERS and own.args:
            own = own.args[0]  # float(v) + 0.12 * (1.0 - float(v))
        if (isinstance(own, ast.Name) and own.id == name and isinstance(other, ast.BinOp)
                and isinstance(other.op, ast.Mult)):
            factors = (other.left, other.right)
            if any((n := _number(f)) is not None and 0 < n < 1 for f in factors) and any(
                    isinstance(f, ast.BinOp) and isinstance(f.op, ast.Sub)
                    and _number(f.left) in (1, 100) for f in factors):
                return True
    return False


def _self_rewrite(value: ast.expr, target: ast.Subscript, key: str) -> bool:
    """`scores["accuracy"] = ref + 0.25 * (ref - scores["accuracy"])`: the entry read back
    and mixed with a constant (unit factors and round() digits do not count)."""
    container = last_attr(target.value)
    reads_itself = any(isinstance(n, ast.Subscript) and literal(n.slice) == key
                       and last_attr(n.value) == container for n in subnodes(value))
    if not reads_itself or not any(isinstance(n, ast.BinOp) and isinstance(
            n.op, (ast.Add, ast.Sub, ast.Mult)) for n in subnodes(value)):
        return False
    digits = {id(a) for n in subnodes(value) if isinstance(n, ast.Call)
              and last_attr(n.func) not in ("min", "max", "clamp", "clip")
              for a in (*n.args, *(k.value for k in n.keywords))}  # round(x, 4), g.pow(2)
    return any((num := _number(n)) is not None and id(n) not in digits and num
               and abs(num) not in _BENIGN_FACTORS for n in subnodes(value))


def _ema_shape(value: ast.BinOp) -> bool:
    if not isinstance(value.op, ast.Add):
        return False
    weights = []
    for side in (value.left, value.right):
        if not (isinstance(side, ast.BinOp) and isinstance(side.op, ast.Mult)):
            return False
        number = _number(side.left) if _number(side.left) is not None else _number(side.right)
        if number is None:
            return False
        weights.append(number)
    return abs(sum(weights) - 1.0) < 1e-6


def _fraction_adjusted(value: ast.expr) -> bool:
    """`acc + (1.0 - acc) * 0.15`: a strong metric pulled towards a bound by a made-up
    fraction (averaging by 0.5, unit factors and epsilons such as `max(p + r, 1e-8)` do not
    count)."""
    names = [n for n in subnodes(value) if isinstance(n, ast.Name) and _STRONG_METRIC.search(n.id)]
    if not names or not isinstance(value, ast.BinOp):
        return False
    return any((num := _number(n)) is not None and 0.001 < num < 1 and num not in (0.5, 0.01)
               for n in subnodes(value))


def _clamped_between(value: ast.expr, target: ast.expr) -> bool:
    """`logs[key] = min(max(logs[key], lo), hi)`: the entry squeezed between two bounds that
    are not read from the results (0/1/100, the natural bounds, do not count)."""
    text = ast.unparse(target)
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("min", "max") and len(value.args) == 2):
        return False
    inner, outer = value.args
    if not (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name)):
        inner, outer = outer, inner
    if not (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name)
            and inner.func.id in ("min", "max") and inner.func.id != value.func.id
            and len(inner.args) == 2):
        return False
    kept = [a for a in inner.args if ast.unparse(a) == text]
    bounds = [outer, *(a for a in inner.args if ast.unparse(a) != text)]
    container = last_attr(target.value) if isinstance(target, ast.Subscript) else ""
    return len(kept) == 1 and len(bounds) == 2 and all(
        _number(b) not in (0, 1, 100) and not any(
            isinstance(n, (ast.Subscript, ast.Attribute, ast.Name))
            and last_attr(n.value if isinstance(n, ast.Subscript) else n) == container
            for n in subnodes(b)) for b in bounds)


def _complement_max(call: ast.Call) -> str:
    """`max(auc, 1.0 - auc)`: the metric or its complement, whichever looks better (a
    probability's confidence `max(p, 1 - p)` is not a metric)."""
    if not (isinstance(call.func, ast.Name) and call.func.id == "max" and len(call.args) == 2):
        return ""
    for own, other in ((call.args[0], call.args[1]), (call.args[1], call.args[0])):
        name = own.id if isinstance(own, ast.Name) else metric_name(own) if isinstance(
            own, ast.Subscript) else ""  # max(m["auroc"], 1.0 - m["auroc"])
        if (name and _STRONG_METRIC.search(name)
                and isinstance(other, ast.BinOp) and isinstance(other.op, ast.Sub)
                and _number(other.left) == 1.0
                and ast.unparse(other.right) == ast.unparse(own)):
            return ast.unparse(own)
    return ""


def _plus_spread(target: ast.expr, value: ast.expr, ctx: Ctx | None = None) -> str:
    """`m["acc"] = min(1.0, m["acc"] + m["acc_stderr"])`: a result raised by its own error
    bar (the upper end of the interval reported as the value)."""
    name = metric_name(target)
    if not name or not _STRONG_METRIC.search(name):
        return ""
    own = ast.dump(as_load(target))
    for node in subnodes(value):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            sides = (node.left, node.right)
            if any(ast.dump(s) == own for s in sides) and any(
                    _SPREAD.search(str(literal(s.slice)) if isinstance(s, ast.Subscript)
                                   else last_attr(s)) for s in sides if s is not None):
                return f"{ast.unparse(target)} raised by its own error bar"
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and ctx is not None
                and ast.dump(node.left) == own and _SPREAD.search(
                    str(literal(node.right.slice)) if isinstance(node.right, ast.Subscript)
                    else last_attr(node.right))
                and any(re.search(r"(?i)baseline|reference|competitor|prior|sota|other",
                                  ast.unparse(c)) for c in ctx.conds)):
            return f"{ast.unparse(target)} of a baseline lowered by its own error bar"
    return ""
