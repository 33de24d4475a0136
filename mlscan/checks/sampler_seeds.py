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
from mlscan.checks.names import last_attr
from mlscan.checks.nodes import called_names, subnodes
from mlscan.checks.seeding import HIDDEN_RESEED
from mlscan.model import Severity

_EPOCH_ORDER = re.compile(r"(?i)^__iter__$|epoch|order|indices|batches|shuffle")


def _knows_epoch(cls: ast.ClassDef | None) -> bool:
    return cls is not None and any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                                   and n.name == "set_epoch" for n in cls.body)


class EpochBlindSampler(Check):
    rules = (HIDDEN_RESEED,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if not (last_attr(node.func) == "manual_seed" and len(node.args) == 1
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
