"""MLS301: a sampler that reseeds its shuffle with a fixed seed every epoch.

A sampler with `set_epoch()` (or an `epoch` attribute) exists to shuffle differently each
epoch. When the method that builds the epoch's order seeds its generator with the stored
seed alone (`g.manual_seed(self.seed)`), every epoch repeats the first one's order. Seeding
with `self.seed + self.epoch`, or seeding once in `__init__`, stays quiet.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import called_names, subnodes
from mlscan.checks.seeding import HIDDEN_RESEED
from mlscan.model import Severity

_EPOCH_ORDER = re.compile(r"(?i)^__iter__$|epoch|order|indices|batches|shuffle")


_SEEDED_RNGS = frozenset({"default_rng", "RandomState", "Random", "PCG64", "Philox", "MT19937"})


def _self_only(seed: ast.expr) -> bool:
    """The seed is made of `self.<attr>` reads only (a stored seed, no epoch, no argument)."""
    names = [n for n in subnodes(seed) if isinstance(n, ast.Name)]
    return bool(names) and all(n.id == "self" for n in names)


def _knows_epoch(cls: ast.ClassDef | None) -> bool:
    return cls is not None and any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                                   and n.name == "set_epoch" for n in cls.body)


def _worker_quotient(call: ast.Call) -> str:
    """`seed(base + worker_id // num_workers)`: integer division of the worker id by the
    worker count, which is always 0."""
    for arg in call.args:
        for n in subnodes(arg):
            if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.FloorDiv)
                    and isinstance(n.left, (ast.Name, ast.Attribute))
                    and re.fullmatch(r"(?i)worker_?id", last_attr(n.left))
                    and re.search(r"(?i)num_workers|n_workers|workers", ast.unparse(n.right))):
                return ast.unparse(n)[:40]
            if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitAnd)
                    and isinstance(n.right, ast.UnaryOp) and isinstance(n.right.op, ast.Invert)
                    and isinstance(low := literal(n.right.operand), int) and low >= 0xF
                    and any(isinstance(m, (ast.Name, ast.Attribute))
                            and re.fullmatch(r"(?i)worker_?id", last_attr(m))
                            for m in subnodes(n.left))):
                return f"{ast.unparse(n)[:40]} (the low bits cleared)"
    return ""


_RNG_RESTORE = re.compile(r"^_?(restore|set|load)_rng(_states?)?$")
"""A project's own helper that puts back a saved RNG state (`_restore_rng(state, device)`)."""
_RESTORERS = re.compile(r"(?i)^(__init__|__setstate__|__enter__)$|load|restore|resume|"
                        r"set_state|setstate|from_|rewind|reset")


def _captured_once(cls: ast.ClassDef, attr: str) -> bool:
    """Every write of `self.<attr>` is in `__init__` or under a one-time guard
    (`if self._gen is None:`)."""
    writes = 0
    for method in cls.body:
        if not isinstance(method, ast.FunctionDef):
            continue
        guarded: set[int] = set()
        for n in subnodes(method):
            if isinstance(n, ast.If) and any(
                    isinstance(c, ast.Compare) and isinstance(c.ops[0], ast.Is)
                    and literal(c.comparators[0]) is None for c in subnodes(n.test)):
                guarded |= {id(m) for stmt in n.body for m in subnodes(stmt)}
        for n in subnodes(method):
            if isinstance(n, ast.Assign) and any(
                    isinstance(t, ast.Attribute) and t.attr == attr for t in n.targets):
                writes += 1
                if method.name != "__init__" and id(n) not in guarded:
                    return False
    return writes > 0


class EpochBlindSampler(Check):
    rules = (HIDDEN_RESEED,)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        """`s = seed * world_size + rank` seeds random/numpy/torch, but
        `torch.cuda.manual_seed_all(seed)` takes the raw seed: one generator is the same on
        every rank, so the ranks draw the same noise."""
        if not ctx.mentions("rank") or not ctx.mentions("manual_seed"):
            return
        made: dict[str, set[str]] = {}
        for stmt in node.body:
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)):
                names = {n.id for n in ast.walk(stmt.value) if isinstance(n, ast.Name)}
                if any("rank" in n for n in names):
                    made[stmt.targets[0].id] = names
        if not made:
            return
        seeded = [(n, n.args[0].id) for stmt in node.body for n in ast.walk(stmt)
                  if isinstance(n, ast.Call) and last_attr(n.func) in (
                      "seed", "manual_seed", "manual_seed_all") and len(n.args) == 1
                  and isinstance(n.args[0], ast.Name)]
        ranked = {arg for _call, arg in seeded if arg in made}
        raw = [(call, arg) for call, arg in seeded if arg not in made]
        if len(seeded) - len(raw) < 2 or len(raw) != 1:
            return  # (Megatron: one model-parallel generator offset by the rank on purpose)
        for call, arg in raw:
            if any(arg in made[r] for r in ranked):
                ctx.report(HIDDEN_RESEED, call, f"{ast.unparse(call.func)}({arg}) takes the seed "
                           f"without the rank, while the other generators get "
                           f"{sorted(ranked)[0]}: this one draws the same numbers on every rank",
                           severity=Severity.MEDIUM)
                return

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        attr = last_attr(node.func)
        if (attr == "setdefault" and ctx.frame.name == "set_epoch" and len(node.args) == 2
                and literal(node.args[0]) == "epoch"):
            ctx.report(HIDDEN_RESEED, node, "set_epoch() stores the epoch with setdefault: only "
                       "the first call sticks, so every epoch reshuffles like the first one",
                       severity=Severity.MEDIUM)
            return
        if node.args and ctx.mentions("worker_id") and (shared := _worker_quotient(node)):
            ctx.report(HIDDEN_RESEED, node, f"{shared}: the worker id drops out of the seed "
                       "(ids run below the worker count), so all workers get the same seed and "
                       "draw the same augmentations", severity=Severity.MEDIUM)
            return
        if (attr in ("set_rng_state", "set_state", "setstate") and len(node.args) == 1) or (
                _RNG_RESTORE.match(attr) and node.args):
            self._global_snapshot(node, ctx)
            return
        if attr == "DataLoader":
            self._loader_per_epoch(node, ctx)
            return
        if attr in _SEEDED_RNGS and len(node.args) == 1:
            self._rng_built_per_epoch(node, ctx)
            return
        if not (attr == "manual_seed" and len(node.args) == 1
                and isinstance(node.func, ast.Attribute)):
            return
        cls = ctx.frame.cls
        if cls is None or ctx.frame.name in ("__init__", "set_epoch") or not _knows_epoch(
                ctx.class_defs.get(cls.name)):
            return
        seed = node.args[0]
        if not all(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                   and n.value.id == "self" for n in subnodes(seed)
                   if isinstance(n, (ast.Attribute, ast.Name)) and not (
                       isinstance(n, ast.Name) and n.id == "self")):
            return  # (a local or a parameter: where it comes from is judged elsewhere)
        if any("epoch" in ast.unparse(n).lower() for n in subnodes(seed)):
            return
        if not _EPOCH_ORDER.search(ctx.frame.name) or any(
                "None" in ast.unparse(c) for c in ctx.conds):
            return  # (a schedule built once, or a generator created lazily on first use)
        fn = ctx.frame.node
        if fn is None or not ({"randperm", "shuffle", "permutation"} & called_names(fn)):
            return
        setter = next(n for n in ctx.class_defs[cls.name].body if isinstance(
            n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "set_epoch")
        written = {ast.unparse(t) for n in subnodes(setter) if isinstance(n, ast.Assign)
                   for t in n.targets}
        if any(ast.unparse(n) in written for n in subnodes(seed)):
            return  # set_epoch() moves the seed itself (self.seed = base + epoch)
        ctx.report(HIDDEN_RESEED, node, f"{ast.unparse(node)[:50]} in {cls.name}."
                   f"{ctx.frame.name}() ignores the epoch set by set_epoch(): every epoch "
                   "shuffles in the same order", severity=Severity.MEDIUM)

    @staticmethod
    def _rng_built_per_epoch(node: ast.Call, ctx: Ctx) -> None:
        """`rng = np.random.Generator(np.random.PCG64(self.seed))` in a sampler's `_batches()`."""
        cls = ctx.frame.cls
        seed = node.args[0]
        if (cls is None or ctx.frame.name in ("__init__", "set_epoch")
                or not _knows_epoch(ctx.class_defs.get(cls.name)) or not _self_only(seed)
                or "epoch" in ast.unparse(seed).lower()
                or not _EPOCH_ORDER.search(ctx.frame.name)):
            return
        fn = ctx.frame.node
        if fn is None or not ({"randperm", "shuffle", "permutation"} & called_names(fn)):
            return
        ctx.report(HIDDEN_RESEED, node, f"{ast.unparse(node)[:50]} in {cls.name}."
                   f"{ctx.frame.name}() ignores the epoch set by set_epoch(): every epoch "
                   "shuffles in the same order", severity=Severity.MEDIUM)

    @staticmethod
    def _loader_per_epoch(node: ast.Call, ctx: Ctx) -> None:
        """`DataLoader(..., generator=torch.Generator().manual_seed(args.seed))` built in a
        function that takes the epoch: each epoch's loader shuffles in the same order."""
        gen = next((k.value for k in node.keywords if k.arg == "generator"), None)
        fn = ctx.frame.node
        if gen is None or not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return
        if "epoch" not in {a.arg for a in fn.args.args} and not any(
                isinstance(lp, ast.For) and "epoch" in ast.unparse(lp.target) for lp in ctx.loops):
            return
        seeds = [c for c in subnodes(gen) if isinstance(c, ast.Call)
                 and last_attr(c.func) == "manual_seed" and c.args]
        if seeds and not any("epoch" in ast.unparse(c.args[0]).lower() for c in seeds):
            ctx.report(HIDDEN_RESEED, gen, "DataLoader rebuilt for each epoch with a generator "
                       f"seeded by {ast.unparse(seeds[0].args[0])[:30]} alone: every epoch "
                       "shuffles in the same order", severity=Severity.MEDIUM)

    @staticmethod
    def _global_snapshot(node: ast.Call, ctx: Ctx) -> None:
        """`global _STATE; if _STATE is None: _STATE = torch.get_rng_state()` then
        `torch.set_rng_state(_STATE)` in a function run every epoch: the state saved on the
        first call is replayed on every later one."""
        state = node.args[0]
        fn = ctx.frame.node
        if (ctx.frame.cls is not None and isinstance(state, ast.Attribute)
                and isinstance(state.value, ast.Name) and state.value.id == "self"
                and not _RESTORERS.search(ctx.frame.name)
                and (cls := ctx.class_defs.get(ctx.frame.cls.name)) is not None):
            if _captured_once(cls, state.attr):
                ctx.report(HIDDEN_RESEED, node, f"{ctx.frame.name}() restores "
                           f"self.{state.attr}, captured only once: every call rewinds the "
                           "generator to the same point, so each use replays the same random "
                           "draws", severity=Severity.MEDIUM)
            return
        if not (isinstance(state, ast.Name) and isinstance(fn, (ast.FunctionDef,
                                                                ast.AsyncFunctionDef))):
            return
        loop = ctx.loops[-1] if ctx.loops else None
        if loop is not None and not _RESTORERS.search(ctx.frame.name):
            writes = [n for n in subnodes(fn) if isinstance(n, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == state.id for t in n.targets)]
            if writes and all(w.lineno < loop.lineno for w in writes) and all(
                    isinstance(w.value, ast.Call) and "state" in ast.unparse(w.value).lower()
                    for w in writes):
                ctx.report(HIDDEN_RESEED, node, f"{ast.unparse(node)[:50]} puts back, on every "
                           f"pass of the loop, the state {state.id} captured once before it: "
                           "every epoch (or step) replays the same random draws",
                           severity=Severity.MEDIUM)
                return
        declared = {n for g in subnodes(fn) if isinstance(g, ast.Global) for n in g.names}
        if state.id not in declared:
            return
        saved = any(isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == state.id for t in n.targets)
            and isinstance(n.value, ast.Call) and "state" in last_attr(n.value.func).lower()
            for n in subnodes(fn))
        if saved:
            ctx.report(HIDDEN_RESEED, node, f"{ast.unparse(node)[:50]} restores the state saved "
                       f"into the global {state.id} on the first call of {ctx.frame.name}(): "
                       "every later call replays the same random draws",
                       severity=Severity.MEDIUM)
