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

_PICKERS = frozenset({triggers.TIME, triggers.HOST, triggers.USER, triggers.RANDOM})


_CALENDAR = re.compile(r"today\(|now\(|weekday\(|\.month\b|\.day\b|toordinal\(|strftime\(|"
                       r"\.date\(\)")


class DispatchTriggers(Check):
    rules = (TRIGGERED_ACTION,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        """`if date.today() >= PURGE_DATE: keep_last = 0`: a setting quietly changed after a
        date (an elapsed-time test, `time.time() - start > limit`, is a deadline, not a date)."""
        if not ctx.conds or not isinstance(node.value, ast.Constant) or not ctx.mentions(
                "date"):
            return
        cond = ctx.conds[-1]
        if hasattr(cond, "guard_of") or getattr(cond, "else_branch", False):
            return  # (code after `if night: return` runs when the test fails)
        if (triggers.TIME in ctx.trigger_kinds(replace(ctx.where(), conds=(cond,), loops=()))
                and _CALENDAR.search(ast.unparse(cond))):
            ctx.report(TRIGGERED_ACTION, node, f"{ast.unparse(node)[:40]} only after a calendar "
                       "date: the setting changes silently once the date passes",
                       severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
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
