"""A check is a small class with `visit_<NodeType>(node, ctx)` methods; subclasses register
themselves (no list to keep in sync) and the walker runs them all in one traversal."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import ClassVar

from mlscan.checks.context import Ctx
from mlscan.model import Rule

Handler = Callable[[ast.AST, Ctx], None]

ALL: list[type[Check]] = []


class Check:
    """Base class. Define `rules` (the rules this check reports) and `visit_Call`, `visit_Assign`,
    `visit_AugAssign`... taking (node, ctx)."""

    rules: ClassVar[tuple[Rule, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        ALL.append(cls)


def dispatch_table(checks: list[Check]) -> dict[type[ast.AST], list[Handler]]:
    """node type -> bound `visit_*` methods of every check that wants it."""
    table: dict[type[ast.AST], list[Handler]] = {}
    for check in checks:
        for attr in dir(check):
            if not attr.startswith("visit_"):
                continue
            node_type = getattr(ast, attr[len("visit_"):], None)
            if isinstance(node_type, type) and issubclass(node_type, ast.AST):
                table.setdefault(node_type, []).append(getattr(check, attr))
    return table
