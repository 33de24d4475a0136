"""MLS309, paired augmentations that move the image and its mask along different axes.

Segmentation transforms flip or rotate the image and the mask together. With a channel-first
image (C, H, W) and a mask (H, W), every pair keeps one fixed axis offset:
`np.flip(image, axis=2)` goes with `np.flip(mask, axis=1)`. When one pair breaks the offset
the others keep (`np.flip(image, axis=1)` with `np.flip(mask, axis=1)`: a vertical flip of
the image, a horizontal one of the mask), the mask no longer covers what it labels for every
sample that draws that augmentation. Only a function with at least two pairs is judged, and
only the pair that departs from the offset the others agree on is reported.
"""

from __future__ import annotations

import ast
from collections import Counter
from itertools import pairwise

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.poison_words import _IMAGE, _MASKISH
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_GEOMETRIC = frozenset({"flip", "rot90"})


def _axis(call: ast.Call) -> int | None:
    """The (first) axis a flip or rot90 moves: `axis=2`, `dims=[1]`, `axes=(1, 2)`."""
    found = kwarg(call, "axis") or kwarg(call, "dims") or kwarg(call, "axes") or kwarg(
        call, "dim")
    if found is None and last_attr(call.func) == "flip" and len(call.args) > 1:
        found = call.args[1]
    if isinstance(found, (ast.Tuple, ast.List)) and found.elts:
        found = found.elts[0]
    value = literal(found) if found is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _move(stmt: ast.stmt) -> tuple[str, str, int] | None:
    """`image = np.flip(image, axis=2)` -> ("image", "flip", 2)."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Call)
            and last_attr(stmt.value.func) in _GEOMETRIC and stmt.value.args
            and isinstance(stmt.value.args[0], ast.Name)
            and stmt.value.args[0].id == stmt.targets[0].id):
        return None
    axis = _axis(stmt.value)
    return None if axis is None else (stmt.targets[0].id, last_attr(stmt.value.func), axis)


def misaligned_pairs(fn: ast.FunctionDef) -> list[ast.stmt]:
    """Mask statements whose pair breaks the axis offset the function's other pairs keep."""
    pairs: list[tuple[ast.stmt, int]] = []
    for node in subnodes(fn):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for first, second in pairwise(body):
            a, b = _move(first), _move(second)
            if a is None or b is None or a[1] != b[1]:
                continue
            if _IMAGE.match(a[0]) and _MASKISH.match(b[0]):
                pairs.append((second, a[2] - b[2]))
            elif _MASKISH.match(a[0]) and _IMAGE.match(b[0]):
                pairs.append((first, b[2] - a[2]))
    if len(pairs) < 2:
        return []
    counts = Counter(offset for _, offset in pairs).most_common()
    if len(counts) < 2 or counts[0][1] == counts[1][1]:
        return []  # (all agree, or no majority to judge by)
    usual = counts[0][0]
    return [stmt for stmt, offset in pairs if offset != usual]


class PairedAugmentationAxes(Check):
    rules = (DATA_POISON,)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        for stmt in misaligned_pairs(node):
            ctx.report(DATA_POISON, stmt, f"{ast.unparse(stmt)[:50]} moves the mask along "
                       "another axis than the image it pairs with (the other pairs in "
                       f"{node.name}() agree): the mask no longer covers what it labels",
                       severity=Severity.MEDIUM)
