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
from mlscan.checks.names import last_attr
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


class FreshGenerators(Check):
    rules = (HIDDEN_RESEED,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        """`g = torch.Generator().manual_seed(self.seed)` in a dataset's per-item method: each
        call starts the same stream, so every sample gets the same "random" draw."""
        value = node.value
        fn = ctx.frame.node
        cls = ctx.frame.cls
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
