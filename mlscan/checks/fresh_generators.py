"""MLS301: a property that builds a new generator from the same seed on every access.

`@property def rng(self): return np.random.default_rng(self.seed)`: each `self.rng.random()`
starts a fresh stream at the same point, so every "random" masking, crop or noise draw is
the same one, for every sample and epoch. A cached generator (`if self._rng is None: ...;
return self._rng`) returns a name, not a construction, and stays quiet.
"""

from __future__ import annotations

import ast

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr
from mlscan.checks.seeding import HIDDEN_RESEED
from mlscan.model import Severity

_MAKERS = ("numpy.random.default_rng", "numpy.random.RandomState", "numpy.random.Generator",
           "random.Random", "torch.Generator")


class FreshGenerators(Check):
    rules = (HIDDEN_RESEED,)

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
