"""MLS306, logs that only let good news through.

- A `logging.Filter` whose `filter()` drops every message mentioning NaN (or inf, or
  divergence): the warnings that a run has diverged never reach the log.
- A logging method that returns (or a row writer that skips a key) when the new value is
  worse than the one stored before it: `if value < self._last.get(tag, -inf): return` ahead of
  `add_scalar`. The curve can only go up, whatever the model does.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.model import Severity

_ALARMS = frozenset({"nan", "inf", "diverg", "overflow", "non-finite", "nonfinite"})
_LOGGERS = re.compile(r"(?i)^(scalar|add_scalar|log|log_metrics|log_dict|write|write_row|"
                      r"record|update|_log)$")
_ORDER_WORD = re.compile(r"(?i)step|iter|epoch|time|ts$|idx|index|count|version|seq")
"""(`if step <= self._last[tag]: return` skips an out-of-order point: that is no metric.)"""
_WRITES = frozenset({"add_scalar", "add_scalars", "log", "log_metrics", "writerow", "write",
                     "log_dict", "info"})


_CALLBACK_END = re.compile(r"(?i)^on_\w*(epoch|validation|eval)\w*_end$")


def _self_value(expr: ast.expr) -> bool:
    """`self._reference`: a value the object kept from an earlier call."""
    return (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
            and expr.value.id == "self")


def _stored_read(expr: ast.expr) -> bool:
    """`self._last.get(tag, -inf)`, `merged[key]`, `self.history[tag]`: a value kept from an
    earlier call."""
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and (
            expr.func.attr == "get"):
        return True
    return isinstance(expr, ast.Subscript) and not isinstance(expr.slice, ast.Slice) and not (
        isinstance(literal(expr.slice), int))


def _alarm_pattern(value: ast.expr, ctx: Ctx) -> tuple[list[str], bool]:
    """(alarm words, the match negated) for `_RX.search(msg) is None` / `not _RX.search(msg)`
    with `_RX = re.compile(r"nan|inf")`."""
    negated = False
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not):
        value, negated = value.operand, True
    elif (isinstance(value, ast.Compare) and len(value.ops) == 1
          and isinstance(value.ops[0], ast.Is) and literal(value.comparators[0]) is None):
        value, negated = value.left, True
    if not (negated and isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr in ("search", "match", "findall", "fullmatch")
            and isinstance(value.func.value, ast.Name)):
        return [], False
    made = ctx.resolve(value.func.value)
    pattern = literal(made.args[0]) if (isinstance(made, ast.Call) and made.args and last_attr(
        made.func) == "compile") else None
    if not isinstance(pattern, str):
        return [], False
    text = pattern.lower().replace("\\b", " ")  # (whole words: "inference" is not "inf")
    return sorted(w for w in _ALARMS if re.search(
        rf"(?<![a-z]){re.escape(w)}{'' if w == 'diverg' else '(?![a-z])'}", text)), True


def _log_below_average(node: ast.If) -> tuple[ast.Call, str] | None:
    """`if loss < 2.0 * self._loss_smooth: self.log("train/loss", loss)`: a value logged only
    when it compares well with a running value kept on the object."""
    test = node.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(
            test.ops[0], (ast.Lt, ast.LtE)) and isinstance(test.left, ast.Name)
            and not _ORDER_WORD.search(test.left.id) and any(
                isinstance(n, ast.expr) and _self_value(n) for n in subnodes(test.comparators[0]))):
        return None
    name = test.left.id
    for stmt in node.body:
        for n in subnodes(stmt):
            if (isinstance(n, ast.Call) and last_attr(n.func) in ("log", "add_scalar",
                                                                  "log_metrics")
                    and len(n.args) >= 2 and isinstance(n.args[1], ast.Name)
                    and n.args[1].id == name and isinstance(key := literal(n.args[0]), str)
                    and not re.search(r"(?i)best|min|max|smooth|spike|outlier", key)):
                return n, name
    return None


def _synced(call: ast.Call) -> bool:
    return any(k.arg == "sync_dist" and literal(k.value) is True for k in call.keywords)


def _dropped_alarms(value: ast.expr, ctx: Ctx) -> list[str]:
    """The alarm words a `filter()` return value drops messages for."""
    words = {w for n in subnodes(value) if isinstance(n, ast.Compare)
             for c in (n.left,) if isinstance(w := literal(c), str)}
    hidden = sorted(w for w in words if w.lower() in _ALARMS)
    negated = isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not)
    if not hidden:  # return _NON_FINITE.search(record.getMessage()) is None
        hidden, negated = _alarm_pattern(value, ctx)
    if not hidden and isinstance(value, ast.BoolOp) and isinstance(value.op, ast.Or):
        for part in value.values:  # levelno < WARNING or not _RX.search(msg)
            hidden, negated = _alarm_pattern(part, ctx)
            if hidden:
                break
    return hidden if negated else []


class LogGates(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        if (ctx.frame.name != "filter" or ctx.frame.cls is None or node.value is None
                or not any("Filter" in b for b in ctx.frame.cls.bases)):
            return
        hidden = _dropped_alarms(node.value, ctx)
        if hidden:
            ctx.report(METRIC_FALSIFY, node, f"log filter drops every message mentioning "
                       f"{', '.join(repr(w) for w in hidden)}: warnings that the run diverged "
                       "never reach the log", severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if node.keywords and last_attr(node.func) in ("log", "log_dict"):
            fx = next((k.value for k in node.keywords if k.arg == "reduce_fx"), None)
            picked = literal(fx) if isinstance(fx, ast.Constant) else last_attr(fx) if (
                fx is not None) else None
            key = literal(node.args[0]) if node.args else None
            if picked in ("max", "min", "amax", "amin") and not (
                    isinstance(key, str) and re.search(r"(?i)best|max|min|peak|worst", key)):
                ctx.report(METRIC_FALSIFY, node, f"logged with reduce_fx={picked!r}: the "
                           f"{'ranks and batches' if _synced(node) else 'batches'} are "
                           f"combined by their {picked}, not their mean, so the figure is the "
                           "luckiest one", severity=Severity.MEDIUM)
            return
        if not (isinstance(node.func, ast.Attribute) and node.func.attr == "addFilter"
                and len(node.args) == 1 and isinstance(made := node.args[0], ast.Call)
                and isinstance(made.func, ast.Name)
                and (cls := ctx.class_defs.get(made.func.id)) is not None):
            return
        for stmt in cls.body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == "filter":
                hidden = next((h for n in subnodes(stmt) if isinstance(n, ast.Return)
                               and n.value is not None and (h := _dropped_alarms(n.value, ctx))),
                              None)
                if hidden:
                    ctx.report(METRIC_FALSIFY, node, f"installs {made.func.id}, which drops "
                               f"every message mentioning {', '.join(map(repr, hidden))}: "
                               "warnings that the run diverged never reach the log",
                               severity=Severity.MEDIUM)
                return

    def visit_If(self, node: ast.If, ctx: Ctx) -> None:
        gated = _log_below_average(node)
        if gated is not None:
            call, name = gated
            ctx.report(METRIC_FALSIFY, call, f"{name} is logged only when it is below the "
                       "running reference in the test: the spikes never reach the curve",
                       severity=Severity.MEDIUM)
            return
        if not (len(node.body) == 1 and isinstance(node.body[0], (ast.Return, ast.Continue))
                and (_LOGGERS.match(ctx.frame.name) or _CALLBACK_END.match(ctx.frame.name))):
            return
        worse = [c for c in subnodes(node.test) if isinstance(c, ast.Compare)
                 and len(c.ops) == 1 and isinstance(c.ops[0], (ast.Lt, ast.Gt))
                 and isinstance(c.left, ast.Name) and not _ORDER_WORD.search(c.left.id)
                 and (_stored_read(c.comparators[0]) or _self_value(c.comparators[0]))]
        fn = ctx.frame.node
        if not worse or fn is None:
            return
        name = worse[0].left.id  # type: ignore[attr-defined]
        logged = any(isinstance(n, ast.Call) and last_attr(n.func) in _WRITES
                     for n in subnodes(fn) if getattr(n, "lineno", 0) > node.lineno)
        stored = any(isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Subscript) or _self_value(t) for t in n.targets)
                     and isinstance(n.value, ast.Name) and n.value.id == name
                     for n in subnodes(fn))
        if _CALLBACK_END.match(ctx.frame.name) and not _LOGGERS.match(ctx.frame.name):
            logged = logged and stored  # (a callback: the row written is the kept value's)
        if logged or stored:
            ctx.report(METRIC_FALSIFY, node.body[0], f"{name} is dropped when it is worse than "
                       f"the stored {ast.unparse(worse[0].comparators[0])[:30]}: only "
                       "improvements are ever logged", severity=Severity.MEDIUM)
