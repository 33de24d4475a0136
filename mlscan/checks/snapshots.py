"""MLS301 (replayed RNG snapshot): a random state captured once and restored on every epoch,
batch or call, so the same random numbers come back each time.

`self._anchor = torch.get_rng_state()` in `on_fit_start` and `torch.set_rng_state(self._anchor)`
in `on_train_epoch_start` replays the first epoch's shuffles, dropout masks and augmentations
forever. Saving in `on_validation_start` and restoring in `on_validation_end` is the usual
isolation recipe: the snapshot is taken anew each time, and stays quiet.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import DATA, STEP, Ctx, Where
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.seeding import HIDDEN_RESEED, RECURRING_CAPTURE
from mlscan.model import Severity

_RESTORES = frozenset({
    "torch.set_rng_state", "torch.random.set_rng_state", "torch.cuda.set_rng_state",
    "torch.cuda.set_rng_state_all", "torch.cuda.random.set_rng_state",
    "torch.cuda.random.set_rng_state_all", "numpy.random.set_state", "random.setstate",
    "torch.default_generator.set_state",
})
_RECURRING = re.compile(r"(?i)epoch|batch|step|iter|transform|predict|__call__|__getitem__|"
                        r"__iter__|forward|validation|on_log|on_evaluate|sample|^act$|_action$|"
                        r"rollout|explore|collect|generate|augment")


_ONE_SHOT = re.compile(r"(?i)^__(init|enter|exit|del|setstate)__$|restore|reset|load|close|"
                       r"teardown|finali[sz]e|undo|rewind|reproduc|replay|exit|end$")
"""Methods run once or on request: a snapshot taken in `__init__` put back by `restore()`
or `__exit__` is isolation, not a replay."""


def _is_restore(call: ast.Call, ctx: Ctx) -> bool:
    return ctx.names.call_name(call) in _RESTORES


_COUNTER = re.compile(r"(?i)step|iter|epoch|batch|calls|count|^n$|^i$|^t$")


def _word(node: ast.AST) -> str:
    """A name, attribute or string key (`state["epoch"]`) that may name a counter."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else ""
    return last_attr(node) if isinstance(node, (ast.Name, ast.Attribute)) else ""


def _periodic(conds: tuple[ast.expr, ...] | list[ast.expr]) -> str:
    """`self.step % self.log_every == 0`, `not epoch % 5`: the text of a counter condition
    that comes true every N steps (a restore under it replays the snapshot periodically)."""
    for cond in conds:
        for n in subnodes(cond):
            if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)
                    and any(_COUNTER.search(_word(m)) for m in subnodes(n.left))):
                return ast.unparse(n)[:60]
    return ""


def _captured_first_time(attr: str, conds: list[ast.expr]) -> bool:
    """`if self._cpu is None: self._cpu = get_rng_state()` (the tested attribute may be a
    sibling snapshot: `self._cuda` is taken with `self._cpu`), or the `else:` of
    `if self._cpu is not None: restore(self._cpu)`: the snapshot is taken the first time only."""
    for cond in conds:
        negated = getattr(cond, "else_branch", False)
        for n in subnodes(cond):
            if (isinstance(n, ast.Compare) and isinstance(n.left, ast.Attribute)
                    and isinstance(n.left.value, ast.Name) and n.left.value.id == "self"
                    and literal(n.comparators[0]) is None and (
                        isinstance(n.ops[0], ast.IsNot) and n.left.attr == attr
                        if negated else isinstance(n.ops[0], ast.Is))):
                return True
    return False


def _entered_repeatedly(cls: str, ctx: Ctx) -> bool:
    """`with self._rng:` (`self._rng = _IsolatedRNG()`) or `with _IsolatedRNG():` inside a
    per-batch or per-item method: the context manager's `__enter__` runs on every call."""
    tree = ctx.tree
    if tree is None:
        return False
    holders = {f"self.{t.attr}" for n in ast.walk(tree) if isinstance(n, ast.Assign)
               and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)
               and n.value.func.id == cls for t in n.targets if isinstance(t, ast.Attribute)}
    for fn in ast.walk(tree):
        if not (isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                and _RECURRING.search(fn.name)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.With) and any(
                    ast.unparse(item.context_expr) in holders or (
                        isinstance(item.context_expr, ast.Call)
                        and isinstance(item.context_expr.func, ast.Name)
                        and item.context_expr.func.id == cls) for item in node.items):
                return True
    return False


_OBJECT_RESTORES = frozenset({"restore", "restore_state", "set_state", "load_state", "replay",
                              "rewind"})
_OBJECT_CAPTURES = frozenset({"capture", "save", "snapshot", "get_state", "record", "store",
                              "save_state", "checkpoint"})
_RNG_CLASS = re.compile(r"(?i)rng|random|seed")


def _replayed_object(call: ast.Call, ctx: Ctx) -> str:
    """`rng = RNGState(); rng.capture()` before the epoch loop and `rng.restore()` inside it:
    a project's RNG snapshot object replayed on every pass (a capture inside the loop too is
    the usual save/restore around validation)."""
    assert isinstance(call.func, ast.Attribute)
    owner = call.func.value
    fn = ctx.frame.node
    if not isinstance(owner, ast.Name) or fn is None:
        return ""
    made = ctx.lookup(owner.id)
    if not (isinstance(made, ast.Call) and _RNG_CLASS.search(last_attr(made.func))
            and last_attr(made.func)[:1].isupper()):
        return ""  # (an object of a class named for random state: RNGState(), RandomSnapshot())
    loop = ctx.loops[0]
    captures = [n for n in subnodes(fn) if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute) and n.func.attr in _OBJECT_CAPTURES
                and isinstance(n.func.value, ast.Name) and n.func.value.id == owner.id]
    if not captures or any(getattr(c, "lineno", 0) >= loop.lineno for c in captures):
        return ""
    return (f"random state {owner.id} ({last_attr(made.func)}) captured once before the loop "
            f"on line {loop.lineno} and restored on every pass: each pass replays the same "
            "random numbers")


class ReplayedSnapshot(Check):
    rules = (HIDDEN_RESEED,)

    def __init__(self) -> None:
        self._captured: dict[str, set[str]] = {}
        self._periodic: set[str] = set()
        self._restores: list[tuple[ast.Call, str, Where]] = []

    def visit_Module(self, node: ast.Module, ctx: Ctx) -> None:
        captured: dict[str, set[str]] = {}
        periodic: set[str] = set()
        restores: list[tuple[ast.Call, str, Where]] = []
        # per file (checks are reused)
        self._captured, self._periodic, self._restores = captured, periodic, restores
        ctx.defer(lambda: self._decide(ctx, captured, periodic, restores))

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if isinstance(node.value, ast.Constant) and node.value.value is None:
            return  # `self._saved = None`: cleared, not captured
        for target in node.targets:
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == "self"):
                once = _captured_first_time(target.attr, ctx.conds)
                self._captured.setdefault(target.attr, set()).add(
                    f"{ctx.frame.name}, first call only" if once else ctx.frame.name)
                if isinstance(node.value, ast.Call) and ctx.conds and (
                        _periodic(ctx.conds) or RECURRING_CAPTURE.search(" ".join(
                            ast.unparse(c) for c in ctx.conds))):
                    self._periodic.add(target.attr)  # retaken every N steps / each validation

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if (isinstance(node.func, ast.Attribute) and node.func.attr in _OBJECT_RESTORES
                and ctx.loops and (how := _replayed_object(node, ctx))):
            ctx.report(HIDDEN_RESEED, node, how, severity=Severity.MEDIUM)
            return
        helper = isinstance(node.func, (ast.Name, ast.Attribute)) and not _is_restore(node, ctx)
        if not node.args or not (_is_restore(node, ctx) or helper):
            return
        snap = node.args[0]
        if (_is_restore(node, ctx) and isinstance(snap, ast.Name) and len(ctx.frames) > 1
                and not re.search(r"(?i)restore|reset|load|resume|undo|rewind", ctx.frame.name)):
            taken = ctx.flow.module.get(snap.id)  # _INIT_STATE = torch.get_rng_state() at import
            if isinstance(taken, ast.Call) and last_attr(taken.func) in (
                    "get_rng_state", "get_rng_state_all", "getstate", "get_state"):
                ctx.report(HIDDEN_RESEED, node, f"random state {snap.id}, captured once at import, "
                           f"is restored in {ctx.frame.name}(): every call replays the same "
                           "random numbers", severity=Severity.MEDIUM)
                return
        if (isinstance(snap, ast.Attribute) and isinstance(snap.value, ast.Name)
                and snap.value.id == "self"):
            self._restores.append((node, snap.attr, ctx.where()))

    def _decide(self, ctx: Ctx, captures: dict[str, set[str]], periodic: set[str],
                restores: list[tuple[ast.Call, str, Where]]) -> None:
        for call, attr, where in restores:
            if not _is_restore(call, ctx) and not self._restoring_helper(call, ctx):
                continue
            frame = where.frames[-1]
            roles = {r for r, _ in ctx.roles(where)}
            captured = captures.get(attr, set())
            every = _periodic(where.conds)
            if every and captured and attr not in periodic:
                ctx.report(HIDDEN_RESEED, call, f"random state self.{attr} (captured in "
                           f"{', '.join(sorted(captured))}) is restored whenever {every} comes "
                           "round: training periodically replays the same random numbers",
                           severity=Severity.MEDIUM)
                continue
            from_init = bool(captured) and captured <= {"__init__", "__init__, first call only"}
            lazy = captured == {f"{frame.name}, first call only"}  # taken on the first call
            # of this very method and put back on every call (`if self._s is None: ...`)
            entered = (from_init and frame.name == "__enter__" and frame.cls is not None
                       and _entered_repeatedly(frame.cls.name, ctx))
            if not (_RECURRING.search(frame.name) or roles & {DATA, STEP} or entered or lazy or (
                    from_init and not _ONE_SHOT.search(frame.name))):
                continue  # (captured at construction, restored by any recurring method: `lap`)
            if not captured or (not lazy and any(
                    _RECURRING.search(name) and "first call only" not in name
                    for name in captured)):
                continue  # taken anew each time: save/restore around validation
            ctx.report(HIDDEN_RESEED, call, f"random state self.{attr} captured once (in "
                       f"{', '.join(sorted(captured))}) is restored in {frame.name}(): every "
                       "call replays the same random numbers", severity=Severity.MEDIUM)

    @staticmethod
    def _restoring_helper(call: ast.Call, ctx: Ctx) -> bool:
        """`self._restore(state)` whose body calls torch.set_rng_state(...)."""
        fns = ctx.defs.get(last_attr(call.func), [])
        return len(fns) == 1 and any(isinstance(n, ast.Call) and _is_restore(n, ctx)
                                     for n in subnodes(fns[0]))
