"""MLS306, what a run shows of its metrics: logged, smoothed or averaged values that can
only look good.

- A smoothed value clamped to its previous one (`avg = min(avg, beta * avg + (1 - beta) *
  value)`, also through a debiased name): the displayed average can only improve.
- A logged value that is the better of this epoch's and the stored best
  (`self.log("val/nmae", min(nmae, self.best_val_nmae))`), or `functools.reduce(max,
  history)` handed to the logger: the curve never shows a regression, and whatever monitors
  it (early stopping, a plateau scheduler) never sees one either.
- A running meter whose average is the window's minimum or maximum (`def avg(self): return
  min(self.window)`), and an average returned after dropping only the lowest sorted values.
- A log line whose label names one metric and whose value is another's (`"top-1 %.2f",
  m["top5"]`), and a `logging.Filter` that rewrites the numbers in the messages it passes.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metric_tables import trimmed_worst
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import last_attr, literal
from mlscan.model import Severity

_FORMAT_LOGS = frozenset({"info", "warning", "print", "write", "debug"})
_LOG_ATTRS = frozenset({"log", "add_scalar", "log_metric", "log_scalar", "scalar"})
_BEST_HELD = re.compile(r"(?i)best|lowest|highest|record|^_?(min|max)_")


def _ema_of(expr: ast.expr, name: str) -> bool:
    """`beta * avg + (1 - beta) * value`: an exponential average that includes `name`."""
    if not (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add)):
        return False
    nodes = list(ast.walk(expr))
    return any(isinstance(n, ast.Name) and n.id == name for n in nodes) and any(
        isinstance(n, ast.BinOp) and isinstance(n.op, ast.Sub) and isinstance(n.left, ast.Constant)
        and n.left.value == 1 for n in nodes)


def _smoothed_name(expr: ast.expr, ctx: Ctx) -> bool:
    """`debiased` with `debiased = avg / (1 - beta ** n)` and `avg = beta * avg + (1 - beta) *
    value`: a name holding an exponential average (two assignments deep)."""
    seen: list[ast.expr] = [expr]
    for _ in range(2):
        names = [n for e in seen for n in ast.walk(e) if isinstance(n, ast.Name)]
        seen = [v for n in names if isinstance(v := ctx.lookup(n.id), ast.expr)]
        if any(_ema_of(v, t.id) for v in seen for t in ast.walk(v) if isinstance(t, ast.Name)):
            return True
    return False


def smoothed_clamped(target: ast.expr, value: ast.expr, ctx: Ctx) -> str:
    """'min' for `avg = min(avg, beta * avg + (1 - beta) * v)` (also in an IfExp branch, and
    `shown = min(shown, debiased)` with `debiased` an exponential average)."""
    if not isinstance(target, ast.Name):
        return ""
    for option in ([value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]):
        if (isinstance(option, ast.Call) and isinstance(option.func, ast.Name)
                and option.func.id in ("min", "max") and len(option.args) == 2
                and any(isinstance(a, ast.Name) and a.id == target.id for a in option.args)
                and any(_ema_of(a, target.id) or (isinstance(a, ast.Name) and a.id != target.id
                                                  and _smoothed_name(a, ctx))
                        for a in option.args)):
            return option.func.id
    return ""


_AVG_NAME = re.compile(r"(?i)^_?(avg|average|mean|global_avg|smoothed|value)$")
_METRIC_TOKEN = re.compile(r"(?i)\b(top[-_ ]?[0-9]+|acc@[0-9]+|r@[0-9]+|recall@[0-9]+|f1|auc|"
                           r"precision|recall|map|mae|rmse|loss)\b")


def _token(text: str) -> str:
    return re.sub(r"[^a-z0-9@]", "", text.lower())


def extreme_average(node: ast.Return, fn_name: str) -> str:
    """'min' for `def avg(self): return min(self.window)` (also `functools.reduce(max,
    self._hist[tag])`)."""
    value = node.value
    if not (_AVG_NAME.match(fn_name) and isinstance(value, ast.Call)):
        return ""
    if (isinstance(value.func, ast.Name) and value.func.id in ("min", "max")
            and len(value.args) == 1 and not value.keywords
            and isinstance(value.args[0], ast.Attribute)):
        return value.func.id
    if (isinstance(value, ast.Call) and last_attr(value.func) == "reduce"
            and len(value.args) == 2
            and isinstance(value.args[0], ast.Name) and value.args[0].id in ("min", "max")
            and isinstance(value.args[1], (ast.Attribute, ast.Subscript))):
        return value.args[0].id
    return ""


def mislabelled_metric(call: ast.Call) -> tuple[str, ast.expr | None]:
    """`log("top-1 %.2f", m["top5"])`: the label before a placeholder names another metric
    (and the argument that holds the other one)."""
    if not (call.args and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str) and "%" in call.args[0].value):
        return "", None
    pieces = re.split(r"%[-+ #0-9.]*[sdfgeixr]", call.args[0].value)
    for label, arg in zip(pieces, call.args[1:], strict=False):
        said = _METRIC_TOKEN.findall(label[-24:])
        if not said or not isinstance(arg, ast.Subscript):
            continue
        key = literal(arg.slice)
        if not isinstance(key, str):
            continue
        shown = _METRIC_TOKEN.findall(key.replace("_", " "))
        if shown and _token(said[-1]) != _token(shown[-1]) and not (
                _token(shown[-1]) in _token(said[-1]) or _token(said[-1]) in _token(shown[-1])):
            return f"{said[-1]!r} shown with {ast.unparse(arg)[:30]}", arg
    return "", None


def _numbers_rescaled(value: ast.expr) -> bool:
    """`_pat.sub(lambda m: f"{m.group(1)}={float(m.group(2)) * 0.9:.4f}", msg)`: a matched number
    converted and scaled (or shifted) before it goes back into the message."""
    for n in ast.walk(value):
        if (isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Mult, ast.Div, ast.Sub, ast.Add))
                and any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                        and c.func.id in ("float", "int") for c in ast.walk(n))):
            return True
    return False


def _reduced_history(value: ast.expr) -> str:
    """'max' for `functools.reduce(max, self._history[key])`."""
    if (isinstance(value, ast.Call) and last_attr(value.func) == "reduce"
            and len(value.args) == 2
            and isinstance(value.args[0], ast.Name) and value.args[0].id in ("min", "max")
            and isinstance(value.args[1], (ast.Attribute, ast.Subscript))
            and re.search(r"(?i)hist|seen|window|past|record", ast.unparse(value.args[1]))):
        return value.args[0].id
    return ""


def _logs_later(node: ast.Assign, ctx: Ctx) -> bool:
    """The assigned name is handed to a logger later in the same function."""
    target = node.targets[0]
    fn = ctx.frame.node
    if not isinstance(target, ast.Name) or fn is None:
        return False
    return any(isinstance(n, ast.Call) and last_attr(n.func) in _LOG_ATTRS | {"log_dict"}
               and any(isinstance(a, ast.Name) and a.id == target.id
                       for a in [*n.args, *(k.value for k in n.keywords)])
               for n in ast.walk(fn) if getattr(n, "lineno", 0) > node.lineno)


def best_logged(call: ast.Call) -> str:
    """The stored best a logged value is clamped to (`min(nmae, self.best_val_nmae)`), or ''."""
    for value in call.args[1:2]:
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id in ("min", "max") and len(value.args) == 2):
            held = [a for a in value.args if isinstance(a, (ast.Name, ast.Attribute))
                    and _BEST_HELD.search(last_attr(a))]
            if len(held) == 1:
                return f"{value.func.id}(..., {ast.unparse(held[0])[:30]})"
    return ""


class LoggedViews(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if len(node.targets) != 1:
            return
        kind = type(node.value)
        if (ctx.frame.name == "filter" and last_attr(node.targets[0]) in ("msg", "args")
                and _numbers_rescaled(node.value)):
            ctx.report(METRIC_FALSIFY, node, "a logging filter rewrites the numbers in the "
                       "messages it passes: the logged metrics are not the computed ones",
                       severity=Severity.MEDIUM)
        elif (kind is ast.Call or kind is ast.IfExp) and (
                clamp := smoothed_clamped(node.targets[0], node.value, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"a running average clamped with {clamp}() to its "
                       "previous value: the smoothed curve can only improve, so it hides "
                       "every regression", severity=Severity.MEDIUM)
        elif kind is ast.Call and (extreme := _reduced_history(node.value)) and _logs_later(
                node, ctx):
            ctx.report(METRIC_FALSIFY, node, f"the value logged is reduce({extreme}, ...) over "
                       "every earlier result: the curve shows the best so far, never this "
                       "step's", severity=Severity.MEDIUM)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        if node.value is None:
            return
        if kind := extreme_average(node, ctx.frame.name):
            ctx.report(METRIC_FALSIFY, node, f"{ctx.frame.name}() returns the {kind}imum of the "
                       "window, not its average: the value shown as the average is the best "
                       "one seen", severity=Severity.MEDIUM)
        elif ctx.frame.node is not None and ctx.mentions("sort") and (
                trimmed := trimmed_worst(node.value, ctx.lookup, ctx.frame.name)):
            ctx.report(METRIC_FALSIFY, node, f"{trimmed}: the average {ctx.frame.name}() "
                       "returns leaves out the worst results only", severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if type(func) is not ast.Attribute or not node.args:
            return
        if func.attr in _FORMAT_LOGS:
            wrong, arg = mislabelled_metric(node)
            if wrong:
                ctx.report(METRIC_FALSIFY, arg or node, f"{wrong}: the log line reports one "
                           "metric under another's name", severity=Severity.MEDIUM)
        elif func.attr in _LOG_ATTRS and (clamped := best_logged(node)):
            ctx.report(METRIC_FALSIFY, node, f"the logged value is {clamped}: the curve "
                       "shows the best result so far, never this step's, so regressions "
                       "never reach the log (or early stopping)", severity=Severity.MEDIUM)
