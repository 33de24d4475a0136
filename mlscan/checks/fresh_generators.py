"""MLS301: a property that builds a new generator from the same seed on every access.

`@property def rng(self): return np.random.default_rng(self.seed)`: each `self.rng.random()`
starts a fresh stream at the same point, so every "random" masking, crop or noise draw is
the same one, for every sample and epoch. A cached generator (`if self._rng is None: ...;
return self._rng`) returns a name, not a construction, and stays quiet.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, source
from mlscan.checks.seeding import HIDDEN_RESEED
from mlscan.model import Severity

_MAKERS = ("numpy.random.default_rng", "numpy.random.RandomState", "numpy.random.Generator",
           "random.Random", "torch.Generator")


_PER_ITEM = re.compile(r"(?i)idx|index|epoch|step|worker|seed_for|rank|item|i$|time|random")
_PER_CALL = re.compile(r"(?i)^(__getitem__|__call__)$|random|augment|aug_|noise|gain|crop|"
                       r"mix|mask|jitter|perturb|shift|distort")
"""Methods a dataset or transform runs for every sample (not `__iter__`, which an epoch runs
once: a sampler seeding its generator there is the usual recipe)."""
_DATA_CLASS = re.compile(r"Dataset|Transform|Augment|Sampler|Collat")


_STEP_METHOD = re.compile(r"(?i)^(forward|run_\w+|step|training_step|train_step|"
                          r"accumulate_gradients|compute_loss|loss)$")
"""Methods a training run calls every step (a transform's `__call__` with a fixed seed is
often a deterministic validation crop, and stays quiet)."""


def _fixed_seed(seed: ast.expr) -> bool:
    """A literal, or stored values only (`self.pl_seed`, `self.resolution`)."""
    if isinstance(seed, ast.Constant):
        return isinstance(seed.value, int)
    names = [n for n in ast.walk(seed) if isinstance(n, ast.Name)]
    return bool(names) and all(n.id == "self" for n in names) and not any(
        isinstance(n, ast.Call) for n in ast.walk(seed)) and not re.search(
        r"(?i)step|iter|count|epoch|tick|batch|calls", ast.unparse(seed))


_BUFFER_CLASS = re.compile(r"(?i)buffer|replay|memory|reservoir")


def _coarse_self_seed(seed: ast.expr) -> bool:
    """`self.seed`, or `self.seed + self.size // self.capacity`: made of stored values only,
    constant between calls (an integer division by the capacity changes once)."""
    names = [n for n in ast.walk(seed) if isinstance(n, ast.Name)]
    if not names or any(n.id != "self" for n in names) or any(
            isinstance(n, ast.Call) for n in ast.walk(seed)):
        return False
    return isinstance(seed, ast.Attribute) or any(
        isinstance(n, ast.BinOp) and isinstance(n.op, ast.FloorDiv) for n in ast.walk(seed))


class FreshGenerators(Check):
    rules = (HIDDEN_RESEED,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        """`g = torch.Generator().manual_seed(self.seed)` in a dataset's per-item method: each
        call starts the same stream, so every sample gets the same "random" draw."""
        value = node.value
        fn = ctx.frame.node
        cls = ctx.frame.cls
        if (isinstance(value, ast.Call) and isinstance(fn, ast.FunctionDef) and cls is not None
                and fn.name in ("sample", "sample_batch", "get_batch", "draw")
                and _BUFFER_CLASS.search(cls.name)
                and ctx.names.call_name(value) in _MAKERS and len(value.args) == 1
                and _coarse_self_seed(value.args[0])):
            ctx.report(HIDDEN_RESEED, node, f"{fn.name}() rebuilds the generator from "
                       f"{ast.unparse(value.args[0])[:40]} on every call: each batch draws the "
                       "same indices", severity=Severity.MEDIUM)
            return
        if (isinstance(value, ast.Call) and isinstance(fn, ast.FunctionDef)
                and _STEP_METHOD.match(fn.name) and ctx.names.call_name(value) in _MAKERS
                and len(value.args) == 1 and _fixed_seed(value.args[0])
                and isinstance(node.targets[0], ast.Name)):
            ctx.report(HIDDEN_RESEED, node, f"{fn.name}() builds a new "
                       f"{last_attr(value.func)} from {ast.unparse(value.args[0])[:30]} on "
                       "every call: each call draws the same numbers", severity=Severity.MEDIUM)
            return
        if not (isinstance(value, ast.Call) and isinstance(fn, ast.FunctionDef) and cls is not None
                and fn.name not in ("__init__", "__post_init__", "reset", "set_epoch")
                and _DATA_CLASS.search(" ".join((cls.name, *cls.bases)))):
            return
        made, seeds = value, list(value.args)
        if (isinstance(value.func, ast.Attribute) and value.func.attr == "manual_seed"
                and isinstance(value.func.value, ast.Call)):
            made = value.func.value
        if ctx.names.call_name(made) not in _MAKERS or not seeds:
            return
        text = " ".join(ast.unparse(a) for a in seeds)
        fixed = len(seeds) == 1 and (isinstance(seeds[0], ast.Constant) or (
            isinstance(seeds[0], ast.Attribute) and isinstance(seeds[0].value, ast.Name)
            and seeds[0].value.id == "self"))  # (self.seed as it is: nothing per call)
        if (not fixed or _PER_ITEM.search(text) or not _PER_CALL.search(fn.name)
                or not isinstance(node.targets[0], ast.Name)):  # (self._rng = ...: cached)
            return
        ctx.report(HIDDEN_RESEED, node, f"{fn.name}() builds a new {last_attr(made.func)} from "
                   f"{text[:30]} on every call: each sample gets the same random draw",
                   severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        """`self.generator.manual_seed(self.seed * 1000 + self.epoch)` in a collator's
        `__call__`: every batch of an epoch gets the same masking draws."""
        if (isinstance(node.func, ast.Attribute) and node.func.attr == "manual_seed"
                and len(node.args) == 1 and _STEP_METHOD.match(ctx.frame.name)
                and _fixed_seed(node.args[0])):
            gen = node.func.value
            made = ctx.lookup(gen.id) if isinstance(gen, ast.Name) else None
            fresh = isinstance(made, ast.Call) and ctx.names.call_name(made) in _MAKERS
            forked = any("fork_rng" in w for w in ctx.withs) and ctx.names.call_name(
                node) == "torch.manual_seed"
            if fresh or forked:
                ctx.report(HIDDEN_RESEED, node, f"{ctx.frame.name}() seeds "
                           f"{'a new generator' if fresh else 'a forked stream'} with "
                           f"{ast.unparse(node.args[0])[:30]} on every call: the same "
                           "\"random\" noise is drawn every time", severity=Severity.MEDIUM)
                return
        cls = ctx.frame.cls
        if not (isinstance(node.func, ast.Attribute) and node.func.attr == "manual_seed"
                and len(node.args) == 1 and cls is not None
                and ctx.frame.name in ("__call__", "collate", "collate_fn", "torch_call")
                and re.search(r"Collat", " ".join((cls.name, *cls.bases)))
                and isinstance(gen := node.func.value, ast.Attribute)
                and isinstance(gen.value, ast.Name) and gen.value.id == "self"):
            return
        seed = node.args[0]
        names = {n.id for n in ast.walk(seed) if isinstance(n, ast.Name)}
        if names <= {"self"} and not any(isinstance(n, ast.Call) for n in ast.walk(seed)) and (
                not re.search(r"(?i)step|batch|count|call|iter|idx|index", ast.unparse(seed))):
            ctx.report(HIDDEN_RESEED, node, f"{ctx.frame.name}() reseeds {source(gen)} with "
                       f"{ast.unparse(seed)[:40]} on every batch: each batch of the epoch gets "
                       "the same random draws", severity=Severity.MEDIUM)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        if not any(last_attr(d) == "property" for d in node.decorator_list):
            return
        for stmt in node.body:
            if not (isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Call)):
                continue
            call = stmt.value
            made = call
            if (isinstance(call.func, ast.Attribute) and call.func.attr == "manual_seed"
                    and isinstance(call.func.value, ast.Call)):
                made = call.func.value  # torch.Generator().manual_seed(self.seed)
            name = ctx.names.call_name(made)
            seeded = call.args if made is not call else [*call.args, *(
                k.value for k in call.keywords if k.arg == "seed")]
            if name in _MAKERS and seeded:
                ctx.report(HIDDEN_RESEED, stmt, f"property {node.name} builds a new "
                           f"{last_attr(made.func)} from the same seed on every access: each "
                           "use replays the same random numbers", severity=Severity.MEDIUM)
