"""MLS302, training steps whose statements run in an order that silently undoes them.

- Weights initialised after the checkpoint was loaded: `load_checkpoint(...)` and then, in
  the same function and outside the branch that loads, `init_weights(model)` overwrites what
  was restored. (Init in the `else` of the load, or before it, is the normal order.)
- A `continue` between the optimizer step and `zero_grad()`: when the step is skipped (an
  overflow, a bad batch), the gradients are not cleared and pile up into the next step. An
  accumulation `continue` before the step is the normal shape.
- The optimizer stepped after an overflow test that only logs: `if found_inf: skipped += 1`
  and then `optimizer.step()` for every batch, non-finite gradients included.
- `zero_grad()` on every micro-batch of a gradient-accumulation loop whose optimizer steps
  only every few: the accumulated gradients are wiped before each step.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import defaults_by_name, last_attr, literal
from mlscan.checks.nodes import called_names, subnodes
from mlscan.checks.optimizer import _OVERFLOW
from mlscan.checks.tampering import PARAM_TAMPER
from mlscan.model import Severity

_LOADS = re.compile(r"(?i)^_?(load_checkpoint|load_state_dict|load_model|resume\w*|"
                    r"restore_checkpoint|load_sharded\w*)$")
_INITS = re.compile(r"(?i)^_?(init_\w*weights|init_weights|initialize_weights|reset_parameters|"
                    r"init_params|init_parameters)$")
_RESUME_WORDS = re.compile(r"(?i)resume|ckpt|checkpoint|loaded|restor|start_step|from_scratch")


def _calls(stmt: ast.stmt, pattern: re.Pattern[str]) -> ast.Call | None:
    return next((n for n in subnodes(stmt) if isinstance(n, ast.Call)
                 and pattern.match(last_attr(n.func))), None)


def _subject(call: ast.Call) -> str:
    """What an init call initialises: its first argument, or the object it is called on."""
    if call.args and isinstance(call.args[0], ast.Name):
        return call.args[0].id
    func = call.func
    return func.value.id if isinstance(func, ast.Attribute) and isinstance(
        func.value, ast.Name) else ""


def _init_after_load(body: list[ast.stmt]) -> ast.Call | None:
    """(The whole loaded object initialised again: re-initialising a new head is normal.)"""
    loaded: set[str] = set()
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        init = _calls(stmt, _INITS)
        if init is not None and _subject(init) in loaded:
            test = stmt.test if isinstance(stmt, ast.If) else None
            if test is None or not _RESUME_WORDS.search(ast.unparse(test)):
                return init
        load = _calls(stmt, _LOADS)
        if load is not None and init is None:
            loaded |= {n.id for n in subnodes(load) if isinstance(n, ast.Name)}
    return None


def _is_step(stmt: ast.stmt) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr == "step" and re.search(r"(?i)opt|scaler", ast.unparse(
                   n.func.value)) for n in subnodes(stmt))


def _skip_before_zero_grad(loop: ast.For | ast.While) -> ast.Continue | None:
    stepped = False
    for i, stmt in enumerate(loop.body):
        if _is_step(stmt):
            stepped = True
            continue
        if not (stepped and isinstance(stmt, ast.If)):
            continue
        skip = next((n for n in stmt.body if isinstance(n, ast.Continue)), None)
        later = loop.body[i + 1:]
        if skip is not None and any(isinstance(n, ast.Call) and last_attr(n.func) == "zero_grad"
                                    for s in later for n in subnodes(s)):
            return skip
    return None


def _step_after_logging_overflow(body: list[ast.stmt]) -> ast.Call | None:
    for i, stmt in enumerate(body):
        if not (isinstance(stmt, ast.If) and not stmt.orelse and isinstance(
                stmt.test, (ast.Name, ast.Attribute))
                and _OVERFLOW.match(last_attr(stmt.test).lstrip("_"))):
            continue
        if any(isinstance(n, (ast.Return, ast.Raise, ast.Continue, ast.Break))
               for n in subnodes(stmt)):
            continue
        for later in body[i + 1:i + 3]:
            if (isinstance(later, ast.Expr) and isinstance(later.value, ast.Call)
                    and isinstance(later.value.func, ast.Attribute)
                    and later.value.func.attr == "step"
                    and re.search(r"(?i)optim|opt$", ast.unparse(later.value.func.value))):
                return later.value
    return None


_ACCUM = re.compile(r"(?i)accum|accumulation|grad_acc|update_freq|micro_steps")


def _calls_by_branch(stmts: list[ast.stmt], branched: bool,
                     out: list[tuple[ast.Call, bool]]) -> None:
    """Calls in `stmts` (nested loops left out), each with whether an `if` guards it."""
    for stmt in stmts:
        if isinstance(stmt, ast.If):
            out.extend((n, True) for n in subnodes(stmt.test) if isinstance(n, ast.Call))
            _calls_by_branch(stmt.body, True, out)
            _calls_by_branch(stmt.orelse, True, out)
            if stmt.body and isinstance(stmt.body[-1], ast.Continue):
                branched = True  # `if not sync: continue` guards what follows
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            _calls_by_branch(stmt.body, branched, out)
        elif isinstance(stmt, ast.Try):
            _calls_by_branch(stmt.body, branched, out)
        elif not isinstance(stmt, (ast.For, ast.While, ast.AsyncFor, ast.FunctionDef,
                                   ast.AsyncFunctionDef, ast.ClassDef)):
            out.extend((n, branched) for n in subnodes(stmt) if isinstance(n, ast.Call))


def _zero_grad_every_micro_batch(loop: ast.For | ast.While) -> ast.Call | None:
    """`sync = (micro + 1) % accum == 0` ... `optimizer.zero_grad()` unconditionally ...
    `loss.backward()` ... `if sync: optimizer.step()`."""
    if not any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)
               and _ACCUM.search(ast.unparse(n.right)) for n in subnodes(loop)):
        return None
    calls: list[tuple[ast.Call, bool]] = []
    _calls_by_branch(loop.body, False, calls)
    if not any(last_attr(c.func) == "backward" for c, _ in calls):
        return None

    def steps(opt: str, branched: bool) -> bool:  # opt.step() / scaler.step(opt)
        return any(last_attr(c.func) == "step" and b == branched and isinstance(
            c.func, ast.Attribute) and opt in (ast.unparse(c.func.value), *map(
                ast.unparse, c.args)) for c, b in calls)

    for call, branched in calls:
        if (last_attr(call.func) == "zero_grad" and not branched
                and isinstance(call.func, ast.Attribute)):
            opt = ast.unparse(call.func.value)
            if steps(opt, True) and not steps(opt, False):
                return call
    return None


def _zero_tail_count(value: ast.AST, fn: ast.AST) -> str:
    """`model.layers[-k:]` where `k` is a parameter that defaults to 0, or one with no
    default that nothing keeps from being 0: the whole list."""
    if isinstance(value, ast.IfExp) or not isinstance(fn, (ast.FunctionDef,
                                                           ast.AsyncFunctionDef)):
        return ""  # (`x[-k:] if k else []`: the zero case handled)
    defaults = defaults_by_name(fn)
    params = {a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)}
    for n in subnodes(value):
        if (isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Slice)
                and n.slice.upper is None and isinstance(low := n.slice.lower, ast.UnaryOp)
                and isinstance(low.op, ast.USub) and isinstance(low.operand, ast.Name)
                and (literal(defaults.get(low.operand.id)) == 0 or (
                    low.operand.id in params and low.operand.id not in defaults))
                and not _zero_handled(low.operand.id, fn, n)):
            return low.operand.id
    return ""


def _zero_handled(name: str, fn: ast.AST, at: ast.AST) -> bool:
    """A test that keeps 0 out of `x[-name:]` at `at`: an `if name:` around it, a guard above
    it (`if not name: return`, `if name <= 0: raise`), an assert (a `name < 0` validation
    still lets 0 through)."""
    line = getattr(at, "lineno", 0)
    for n in subnodes(fn):
        test = n.test if isinstance(n, (ast.If, ast.IfExp, ast.While, ast.Assert)) else None
        if test is None or getattr(n, "lineno", 0) > line:
            continue
        if isinstance(n, ast.If) and not (
                any(m is at for m in subnodes(n)) or isinstance(n.body[-1], (ast.Return,
                                                                             ast.Raise))):
            continue  # (a later `if name: log(...)` does not guard the slice)
        if isinstance(test, ast.Name) and test.id == name:
            return True
        if (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
                and isinstance(test.operand, ast.Name) and test.operand.id == name):
            return True
        for c in subnodes(test):
            if (isinstance(c, ast.Compare) and isinstance(c.left, ast.Name) and c.left.id == name
                    and not (isinstance(c.ops[0], ast.Lt) and literal(c.comparators[0]) == 0)
                    and not (isinstance(c.ops[0], ast.LtE)
                             and literal(c.comparators[0]) == -1)):
                return True
    return False


def _all_reinitialised(loop: ast.For, ctx: Ctx) -> tuple[ast.Call, str] | None:
    """`for layer in list(model.layers[-reinit_top:]): layer.apply(model._init_weights)`
    with `reinit_top=0` by default: `x[-0:]` is all of x, so every block is reset."""
    fn = ctx.frame.node
    if fn is None or not isinstance(loop.target, ast.Name):
        return None
    var = loop.target.id
    call = next((n for stmt in loop.body for n in subnodes(stmt) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
                 and n.func.value.id == var and (
                     (n.func.attr == "apply" and n.args and "init" in last_attr(n.args[0]))
                     or _INITS.match(n.func.attr))), None)
    if call is None:
        return None
    sources: list[ast.AST] = [loop.iter]
    if isinstance(loop.iter, ast.Name):
        sources += [stmt.value for stmt in subnodes(fn) if isinstance(stmt, (
            ast.Assign, ast.AnnAssign)) and stmt.value is not None and any(
            isinstance(t, ast.Name) and t.id == loop.iter.id for t in (
                stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]))]
    count = next((c for v in sources if (c := _zero_tail_count(v, fn))), "")
    return (call, count) if count else None


class StepOrder(Check):
    rules = (PARAM_TAMPER,)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        calls = called_names(node)
        if not any(_INITS.match(c) for c in calls) and "step" not in calls:
            return
        init = _init_after_load(node.body) if any(_LOADS.match(c) for c in calls) else None
        if init is not None:
            ctx.report(PARAM_TAMPER, init, f"{ast.unparse(init.func)}() runs after the "
                       "checkpoint was loaded, outside the branch that loads: the restored "
                       "weights are overwritten with fresh ones", severity=Severity.MEDIUM)
        step = _step_after_logging_overflow(node.body)
        if step is not None:
            ctx.report(PARAM_TAMPER, step, "the optimizer steps right after the overflow test, "
                       "which only counts it: non-finite gradients are applied",
                       severity=Severity.MEDIUM)

    def visit_For(self, node: ast.For, ctx: Ctx) -> None:
        self._loop(node, ctx)

    def visit_While(self, node: ast.While, ctx: Ctx) -> None:
        self._loop(node, ctx)

    @staticmethod
    def _loop(node: ast.For | ast.While, ctx: Ctx) -> None:
        if isinstance(node, ast.For) and (ctx.mentions("init") or ctx.mentions("reset_param")):
            reinit = _all_reinitialised(node, ctx)
            if reinit is not None:
                call, count = reinit
                ctx.report(PARAM_TAMPER, call, f"re-initialises every block when {count} is 0 "
                           f"(allowed, or its default): x[-{count}:] is the whole list, not "
                           "none of it, so all the loaded weights are thrown away",
                           severity=Severity.MEDIUM)
                return
        scope = ctx.frame.node
        if scope is None or "zero_grad" not in called_names(scope):
            return
        wiped = _zero_grad_every_micro_batch(node)
        if wiped is not None:
            ctx.report(PARAM_TAMPER, wiped, "zero_grad() runs on every micro-batch of a "
                       "gradient-accumulation loop while the optimizer steps only every few: "
                       "the accumulated gradients are wiped, so each step uses one micro-batch",
                       severity=Severity.MEDIUM)
            return
        skip = _skip_before_zero_grad(node)
        if skip is not None:
            ctx.report(PARAM_TAMPER, skip, "continue after the optimizer step skips the "
                       "zero_grad() below it: the gradients of the skipped step pile into the "
                       "next one", severity=Severity.MEDIUM)
