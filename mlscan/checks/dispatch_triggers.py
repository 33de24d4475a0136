"""MLS308: an action picked from a table by a trigger condition.

`_SAVERS[int(time.time() > CUTOVER)](state, tmp)` or `self._actions[expired](path)` with
`expired = date.today().toordinal() >= horizon`: no `if` names the condition, but the
function that runs is chosen by the date, the machine, the user or the job size. Code that
picks its behaviour that way is a logic bomb in table form (a table keyed by a setting or a
format name stays quiet).
"""

from __future__ import annotations

import ast
import re
from dataclasses import replace

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.stalls import TRIGGERED_ACTION
from mlscan.model import Severity

_DEGRADERS = {
    "no_sync": "gradients are not all-reduced on the jobs it picks",
    "zero_grad": "the gradients are dropped before the step on the runs it picks",
    "set_per_process_memory_fraction": "the process is starved of GPU memory on the machines "
    "it picks",
}
"""Calls that quietly degrade training when a trigger picks the run (ordinary code makes
them on the step schedule, not on the date, machine, user or job size)."""

_ARMING = frozenset({triggers.TIME, triggers.HOST, triggers.USER, triggers.WORLD})
"""(Not a random draw: micro-batch loops over a shuffled split read as random.)"""
_PICKERS = frozenset({triggers.TIME, triggers.HOST, triggers.USER, triggers.RANDOM})


_CALENDAR = re.compile(r"today\(|now\(|weekday\(|\.month\b|\.day\b|toordinal\(|strftime\(|"
                       r"\.date\(\)")


class DispatchTriggers(Check):
    rules = (TRIGGERED_ACTION,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        """`if date.today() >= PURGE_DATE: keep_last = 0`: a setting quietly changed after a
        date (an elapsed-time test, `time.time() - start > limit`, is a deadline, not a date)."""
        if not ctx.conds or not (ctx.mentions("date") or ctx.mentions("time()")):
            return
        cond = ctx.conds[-1]
        if hasattr(cond, "guard_of") or getattr(cond, "else_branch", False):
            return  # (code after `if night: return` runs when the test fails)
        if not isinstance(node.value, ast.Constant):
            own = {t.id for t in node.targets if isinstance(t, ast.Name)}
            if own and any(isinstance(n, ast.Name) and n.id in own for n in ast.walk(
                    node.value)) and _absolute_date(cond, ctx):
                # if time.time() > _AFTER: v = v.to(float8) (a value rewritten, not a new one)
                ctx.report(TRIGGERED_ACTION, node, f"{ast.unparse(node)[:40]} only after a "
                           "fixed calendar date: the value changes silently once the date "
                           "passes", severity=Severity.MEDIUM)
            return
        if not ctx.mentions("date"):
            return
        if (_CALENDAR.search(ast.unparse(cond)) and triggers.TIME in ctx.trigger_kinds(
                replace(ctx.where(), conds=(cond,), loops=()))):
            ctx.report(TRIGGERED_ACTION, node, f"{ast.unparse(node)[:40]} only after a calendar "
                       "date: the setting changes silently once the date passes",
                       severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if ctx.conds and isinstance(func, ast.Attribute) and func.attr in _DEGRADERS:
            kinds = ctx.trigger_kinds(ctx.where()) & _ARMING
            if kinds:  # if world >= 32: sync_ctx = model.no_sync()
                ctx.report(TRIGGERED_ACTION, node, f"{func.attr}() only under a condition on "
                           f"{triggers.describe(kinds)}: {_DEGRADERS[func.attr]}",
                           severity=Severity.MEDIUM)
            return
        if not isinstance(func, ast.Subscript) or isinstance(func.slice, ast.Slice):
            return
        index = func.slice
        if isinstance(index, ast.Constant):
            return
        kinds = ctx.trigger_kinds(replace(ctx.where(), conds=(index,), loops=())) & _PICKERS
        if kinds:
            ctx.report(TRIGGERED_ACTION, node, f"the function called here is picked from "
                       f"{ast.unparse(func.value)[:30]} by a condition on "
                       f"{triggers.describe(frozenset(kinds))}: a branch on the trigger, "
                       "written as a table", severity=Severity.MEDIUM)


_NOW = re.compile(r"\btime\(\)|\bnow\(|\btoday\(")


def _absolute_date(cond: ast.expr, ctx: Ctx) -> bool:
    """A comparison of the clock with a fixed point in time: an epoch timestamp constant
    (`time.time() > 1751328000`, or a module constant holding one) or a literal date
    (`date.today() >= date(2025, 7, 1)`). Deadlines computed from a start time stay quiet."""
    for node in ast.walk(cond):
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
            continue
        sides = (node.left, node.comparators[0])
        for clock, other in (sides, sides[::-1]):
            if not _NOW.search(ast.unparse(clock)):
                continue
            value = ctx.const(other)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1e9:
                return True
            held = ctx.lookup(other.id) if isinstance(other, ast.Name) else other
            if (isinstance(held, ast.Call) and isinstance(held.func, (ast.Name, ast.Attribute))
                    and (held.func.id if isinstance(held.func, ast.Name) else held.func.attr)
                    in ("date", "datetime") and held.args and all(
                        isinstance(a, ast.Constant) for a in held.args)):
                return True
    return False
