"""Fast child and subtree iteration over `ast` trees.

`ast.walk` and `ast.iter_child_nodes` go through two generators per node and yield the
`Load`/`Store`/`Del` context markers of every name, which no check looks at. The checks walk
subtrees hundreds of thousands of times per repository, so this was a quarter of scan time.
Here each node type's fields are listed once, the context markers are skipped, and a walk is a
plain list built breadth-first (the same order as `ast.walk`).
"""

from __future__ import annotations

import ast

_AST = ast.AST
_FIELDS: dict[type, tuple[str, ...]] = {}
# Whole functions and classes are walked again and again (by every check that asks what a
# helper returns or binds). While the walker runs, the tree only gains attributes, so their
# node lists are kept until it finishes; normalize() rewrites trees and runs uncached.
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)
_cache: dict[int, tuple[ast.AST, list[ast.AST]]] | None = None
_cached = 0
_MAX_CACHED = 2_000_000
"""Node references kept at most (deeply nested scopes would otherwise cost depth x size)."""
_recent: dict[int, tuple[ast.AST, list[ast.AST]]] = {}
"""Subtrees below the node the walker is visiting: its checks walk the same value (the
right-hand side of an assignment, a call's arguments) several times each. Cleared by
`forget_recent()` before every visited node, so a rewrite between nodes is never missed."""


def cache_scopes(on: bool) -> None:
    global _cache, _cached
    _cache = {} if on else None
    _cached = 0
    _recent.clear()


def _fields(t: type) -> tuple[str, ...]:
    fields = _FIELDS.get(t)
    if fields is None:  # "ctx" only ever holds Load/Store/Del
        fields = _FIELDS[t] = tuple(f for f in getattr(t, "_fields", ()) if f != "ctx")
    return fields


def child_nodes(node: ast.AST) -> list[ast.AST]:
    """Direct child nodes, in field order (as `ast.iter_child_nodes`, minus context markers)."""
    out: list[ast.AST] = []
    for name in _FIELDS.get(type(node)) or _fields(type(node)):
        value = getattr(node, name, None)
        if isinstance(value, _AST):
            out.append(value)
        elif type(value) is list:
            out.extend(v for v in value if isinstance(v, _AST))
    return out


def subnodes(node: ast.AST) -> list[ast.AST]:
    """`node` and every node below it, breadth-first (as `ast.walk`, minus context markers).
    The list may be shared: callers copy it before changing it."""
    global _cached
    if _cache is not None and isinstance(node, _SCOPES):
        hit = _cache.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        out = _walk(node)
        if _cached + len(out) <= _MAX_CACHED:
            _cache[id(node)] = (node, out)
            _cached += len(out)
        return out
    if _cache is not None:
        hit = _recent.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        out = _walk(node)
        _recent[id(node)] = (node, out)
        return out
    return _walk(node)


def forget_recent() -> None:
    _recent.clear()


def _walk(node: ast.AST) -> list[ast.AST]:
    todo = [node]
    i = 0
    get = _FIELDS.get
    while i < len(todo):
        n = todo[i]
        i += 1
        for name in get(type(n)) or _fields(type(n)):
            value = getattr(n, name, None)
            if isinstance(value, _AST):
                todo.append(value)
            elif type(value) is list:
                for v in value:
                    if isinstance(v, _AST):
                        todo.append(v)
    return todo


_SCOPE_INDEX: dict[int, tuple[ast.AST, frozenset[str], list[ast.Assign]]] = {}


def _scope_index(scope: ast.AST) -> tuple[ast.AST, frozenset[str], list[ast.Assign]]:
    """One pass over a scope: the last names of everything it calls and its assignments."""
    hit = _SCOPE_INDEX.get(id(scope))
    if hit is not None and hit[0] is scope:
        return hit
    names: set[str] = set()
    assigns: list[ast.Assign] = []
    for n in subnodes(scope):
        t = type(n)
        if t is ast.Call:
            func = n.func  # type: ignore[attr-defined]
            if isinstance(func, ast.Attribute):
                names.add(func.attr)
            elif isinstance(func, ast.Name):
                names.add(func.id)
        elif t is ast.Assign:
            assigns.append(n)  # type: ignore[arg-type]
    if len(_SCOPE_INDEX) > 4096:
        _SCOPE_INDEX.clear()
    entry = (scope, frozenset(names), assigns)
    _SCOPE_INDEX[id(scope)] = entry
    return entry


def called_names(scope: ast.AST) -> frozenset[str]:
    """Last names of everything called in `scope` (`opt.zero_grad()` -> "zero_grad"): checks
    that need a rare call first ask whether the function makes it at all."""
    return _scope_index(scope)[1]


def assigns_in(scope: ast.AST) -> list[ast.Assign]:
    """Every `x = ...` statement in `scope`."""
    return _scope_index(scope)[2]
