"""MLS307: collectives that some ranks never reach or reach with mismatched arguments.

- An early return before a collective, taken on a test of this rank's own values
  (`if not torch.any(t): return t` above `dist.all_reduce(t)`, `if not
  torch.isfinite(kl): return None`) or on a test of the rank (`if is_main: ... return`,
  `if not is_main_process(): return {}` above `barrier()`): those ranks leave, the others
  wait forever.
- `dist.broadcast(p, src=local_rank)`: every rank names itself as the source, so the
  ranks disagree on who sends (a hang, or replicas that silently keep their own weights).
- `signal.alarm(int(max_hours * 60))`: hours times 60 is minutes, and alarm() counts
  seconds, so the wall-clock "budget" kills the job 60 times too early.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.nodes import called_names, subnodes
from mlscan.checks.stalls import _COLLECTIVES, KILL_STALL
from mlscan.model import Severity

_OWN_VALUES = frozenset({"isfinite", "isnan", "isinf", "any", "all", "item", "allclose",
                         "equal", "count_nonzero"})
_MAIN = re.compile(r"(?i)^(is_)?(main|master|leader|primary|rank_?0|rank_zero|global_zero)"
                   r"(_process|_rank)?$")
_SELF_RANK = re.compile(r"(?i)^(local_|global_|node_)?rank$")
_HOURS = re.compile(r"(?i)hour|hrs?$")
_COLLECTIVE_HELPER = re.compile(r"^_?(all_reduce|all_gather|barrier|broadcast_object|"
                                r"reduce_scatter|sync_barrier)")
_TIMERS = frozenset({"alarm", "dump_traceback_later"})


def _collective_in(stmts: list[ast.stmt], ctx: Ctx) -> ast.Call | None:
    for stmt in stmts:
        for n in subnodes(stmt):
            if not isinstance(n, ast.Call):
                continue
            name = ctx.names.call_name(n)
            if (name.startswith("torch.distributed.") and last_attr(n.func) in _COLLECTIVES) or (
                    isinstance(n.func, ast.Name) and _COLLECTIVE_HELPER.match(n.func.id)):
                return n  # (also a project's all_reduce_mean(t) or barrier() helper)
    return None


def _own_values(test: ast.expr, ctx: Ctx) -> bool:
    """`not torch.any(t)`, `not torch.isfinite(kl)`, `loss.item() > x`: this rank's tensor
    data (builtin any()/all() over Python values are not)."""
    for n in subnodes(test):
        if not (isinstance(n, ast.Call) and last_attr(n.func) in _OWN_VALUES):
            continue
        if ctx.names.call_name(n).startswith(("torch.", "numpy.")):
            return True
        if isinstance(n.func, ast.Attribute) and not n.args and n.func.attr in (
                "item", "any", "all", "isfinite", "isnan"):
            return True  # t.item(), t.any()
    return False


def _own_rank(expr: ast.expr, ctx: Ctx) -> bool:
    """`info.local_rank`, `local_rank`, or a name bound to `dist.get_rank()` / the RANK
    variable: this process's own rank (a loop variable or a looked-up peer is not)."""
    if isinstance(expr, ast.Attribute):
        return expr.attr == "local_rank"
    if not isinstance(expr, ast.Name):
        return False
    if expr.id == "local_rank":
        return True
    held = ctx.lookup(expr.id)
    if isinstance(held, ast.Call) and last_attr(held.func) in ("get_rank", "get_local_rank"):
        return not held.args and not held.keywords  # (get_rank(group) is a group's rank)
    return held is not None and any(
        isinstance(v, str) and v in ("RANK", "LOCAL_RANK") for v in map(literal, subnodes(held)))


def _agreed(tests: tuple[ast.expr, ...], before: list[ast.stmt]) -> bool:
    """The tested value went through a collective first (`all_reduce(flag, MAX)`, then `if
    not flag.item(): return`): every rank sees the same value and takes the same branch."""
    names = {n.id for t in tests for n in subnodes(t) if isinstance(n, ast.Name)}
    return any(isinstance(n, ast.Call) and last_attr(n.func) in _COLLECTIVES and any(
        isinstance(a, ast.Name) and a.id in names for a in n.args)
        for stmt in before for n in subnodes(stmt))


def _agreed_before(test: ast.expr, fn: ast.AST, line: int) -> bool:
    """A name in `test` went through a collective (anywhere in the function) above `line`:
    `broadcast(flag, src=0)` ... `if flag.item() == 1: barrier()`."""
    names = {n.id for n in subnodes(test) if isinstance(n, ast.Name)}
    return any(isinstance(n, ast.Call) and getattr(n, "lineno", line) < line
               and last_attr(n.func) in _COLLECTIVES and any(
                   isinstance(a, ast.Name) and a.id in names for a in n.args)
               for n in subnodes(fn))


def _main_only(test: ast.expr) -> bool:
    """`is_main`, `self.info.is_main`, `is_main_process()`, `rank == 0`, and their negations
    (`if not is_main_process(): return`: the other ranks leave and rank 0 waits)."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test = test.operand
    if isinstance(test, ast.Call) and not test.args and not test.keywords:
        test = test.func
    if isinstance(test, (ast.Name, ast.Attribute)):
        return bool(_MAIN.match(last_attr(test)))
    return (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], (ast.Eq, ast.NotEq))
            and literal(test.comparators[0]) == 0
            and bool(_SELF_RANK.match(last_attr(test.left))))


def _returns(stmts: list[ast.stmt], tests: tuple[ast.expr, ...]) -> list[
        tuple[ast.Return, tuple[ast.expr, ...], list[ast.stmt]]]:
    """Returns under `stmts` with the if-tests on the way and the statements before them in
    their block (nested functions left out)."""
    out: list[tuple[ast.Return, tuple[ast.expr, ...], list[ast.stmt]]] = []
    for i, stmt in enumerate(stmts):
        if isinstance(stmt, ast.Return):
            out.append((stmt, tests, stmts[:i]))
        elif isinstance(stmt, ast.If):
            out += _returns(stmt.body, (*tests, stmt.test))
            out += _returns(stmt.orelse, tests)
        elif isinstance(stmt, (ast.With, ast.For, ast.While, ast.Try)):
            out += _returns(stmt.body, tests)
    return out


_KILL_CALLS = frozenset({"pthread_kill", "kill", "killpg", "_exit", "abort", "raise_signal",
                         "exit", "terminate"})
_SECONDS = re.compile(r"(?i)(^|_)(s|sec|secs|seconds)$|timeout$|budget")


def _small_units(expr: ast.expr, ctx: Ctx) -> bool:
    """`(time.monotonic_ns() - t0) / 1e6` (milliseconds), also through a local name."""
    if isinstance(expr, ast.Name):
        held = ctx.lookup(expr.id)
        expr = held if isinstance(held, ast.expr) else expr
    return (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div)
            and literal(expr.right) in (1e3, 1e6, 1000, 1000000) and any(
                isinstance(n, ast.Call) and last_attr(n.func).endswith("_ns")
                for n in subnodes(expr.left)))


def _unit_mismatch(ctx: Ctx) -> str:
    for cond in ctx.conds:
        if not (isinstance(cond, ast.Compare) and len(cond.ops) == 1
                and isinstance(cond.ops[0], (ast.Gt, ast.GtE))):
            continue
        left, right = cond.left, cond.comparators[0]
        if isinstance(right, (ast.Name, ast.Attribute)) and _SECONDS.search(
                last_attr(right)) and _small_units(left, ctx):
            return f"{ast.unparse(cond)[:40]}"
    return ""


_LOSSY = re.compile(r"(?i)loss|grad|norm")


def _nonfinite_test(conds: list[ast.expr]) -> str:
    """`not torch.isfinite(loss)`, `math.isnan(loss.item())`: a test for a non-finite loss."""
    for cond in conds:
        for n in subnodes(cond):
            if (isinstance(n, ast.Call) and last_attr(n.func) in ("isfinite", "isnan", "isinf")
                    and n.args and _LOSSY.search(ast.unparse(n.args[0]))):
                return f"{ast.unparse(n.args[0])[:30]} is not finite"
    return ""


class CollectiveSkips(Check):
    rules = (KILL_STALL,)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        if not ctx.mentions("return") or not any(ctx.mentions(w) for w in (
                "barrier", "all_reduce", "all_gather", "broadcast", "reduce")):
            return
        calls = called_names(node)
        if not (calls & _COLLECTIVES or any(_COLLECTIVE_HELPER.match(c) for c in calls)):
            return  # (one cached pass: most functions call no collective at all)
        body = node.body
        for i, stmt in enumerate(body):
            if not isinstance(stmt, ast.If):
                continue
            later = _collective_in(body[i + 1:], ctx)
            if later is None:
                continue
            for ret, tests, before in _returns([stmt], ()):
                if _collective_in(before, ctx) is not None:
                    continue  # `if not main: barrier(); return`: rank 0 joins it later
                if any(_own_values(t, ctx) for t in tests) and not _agreed(tests, body[:i]):
                    why = "on a test of this rank's own values"
                elif any(_main_only(t) for t in tests):
                    why = "on a test of the rank"
                else:
                    continue
                ctx.report(KILL_STALL, ret, f"early return {why}, before the "
                           f"{last_attr(later.func)}() on line {later.lineno}: this rank "
                           "leaves and the others wait in it forever", severity=Severity.MEDIUM)
                return

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        attr = last_attr(node.func)
        if (attr in _COLLECTIVES and ctx.conds and ctx.frame.node is not None
                and ctx.names.call_name(node).startswith("torch.distributed.")
                and not hasattr(ctx.conds[-1], "guard_of")  # (the early return is reported)
                and not getattr(ctx.conds[-1], "else_branch", False)
                and _own_values(ctx.conds[-1], ctx)
                and not _agreed_before(ctx.conds[-1], ctx.frame.node, node.lineno)):
            ctx.report(KILL_STALL, node, f"{attr}() runs only when this rank's own values pass "
                       f"the test ({ast.unparse(ctx.conds[-1])[:40]}): a rank that fails it "
                       "skips the collective and the others wait in it forever",
                       severity=Severity.MEDIUM)
            return
        if attr in ("broadcast", "broadcast_object_list", "scatter", "reduce", "gather"):
            src = kwarg(node, "src") or kwarg(node, "dst")
            if src is None and attr == "broadcast" and len(node.args) > 1:
                src = node.args[1]
            if src is not None and _own_rank(src, ctx):
                ctx.report(KILL_STALL, node, f"{attr}() with src/dst={ast.unparse(src)}: every "
                           "rank names itself, so the ranks disagree on the root (a hang, or "
                           "replicas that keep their own values)", severity=Severity.MEDIUM)
        elif attr in ("exit", "_exit", "quit") and ctx.loops and ctx.conds and (
                not node.args or literal(node.args[0]) == 0) and (
                ctx.names.call_name(node) in ("sys.exit", "os._exit", "exit", "quit")) and (
                nonfinite := _nonfinite_test(ctx.conds)):
            ctx.report(KILL_STALL, node, f"the run exits with status 0 (success) when "
                       f"{nonfinite}: the scheduler and the pipeline see a finished job, "
                       "not a failed one", severity=Severity.MEDIUM)
        elif attr in _KILL_CALLS and ctx.conds and (mixed := _unit_mismatch(ctx)):
            ctx.report(KILL_STALL, node, f"{mixed}: the watchdog compares milliseconds (or "
                       "microseconds) with a budget in seconds, so it fires a thousand times "
                       "too early and kills a healthy job", severity=Severity.MEDIUM)
        elif attr in _TIMERS and node.args:
            seconds = node.args[0]
            while isinstance(seconds, ast.Call) and last_attr(seconds.func) in ("int", "float",
                                                                               "round"):
                seconds = seconds.args[0] if seconds.args else seconds
            if (isinstance(seconds, ast.BinOp) and isinstance(seconds.op, ast.Mult)
                    and {literal(seconds.left), literal(seconds.right)} & {60}
                    and any(isinstance(s, (ast.Name, ast.Attribute))
                            and _HOURS.search(last_attr(s))
                            for s in (seconds.left, seconds.right))):
                ctx.report(KILL_STALL, node, f"{attr}({ast.unparse(node.args[0])[:30]}): hours "
                           "times 60 is minutes, but the timer counts seconds, so it fires 60 "
                           "times too early", severity=Severity.MEDIUM)
