"""Small shapes of metric falsification found in tables and comprehensions.

Each predicate takes one node and returns a short description (empty when it does not apply):
- a "mode" table that maps max to a less-than comparison (the worst result counts as best);
- a dict comprehension that relabels one split's results as another split's;
- a value rounded up to a fixed number of decimals before it is reported.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.names import Names, last_attr, literal
from mlscan.checks.nodes import subnodes

_LESS = frozenset({"lt", "le", "__lt__", "__le__"})
_GREATER = frozenset({"gt", "ge", "__gt__", "__ge__"})
_MAX_KEYS = frozenset({"max", "maximize", "maximise", "higher", "greater", "up"})
_MIN_KEYS = frozenset({"min", "minimize", "minimise", "lower", "less", "down"})
_SPLIT = re.compile(r"(?i)(^|_|/|\b)(test|val|valid|validation|dev|train|training|eval)(_|/|\b|$)")
_SPLIT_WORDS = {"val": "val", "valid": "val", "validation": "val", "dev": "val", "eval": "val",
                "test": "test", "train": "train", "training": "train"}


def _comparison(value: ast.expr, names: Names) -> str:
    """"lt"/"gt" for operator.lt-style functions or `lambda a, b: a < b`."""
    if isinstance(value, (ast.Name, ast.Attribute)):
        attr = last_attr(value)
        if not (attr.startswith("__") or (names.qualname(value) or "").startswith("operator.")):
            return ""  # operator.le, float.__le__ (not a local function named `le`)
        return "lt" if attr in _LESS else "gt" if attr in _GREATER else ""
    if (isinstance(value, ast.Lambda) and len(value.args.args) == 2
            and isinstance(value.body, ast.Compare) and len(value.body.ops) == 1
            and isinstance(value.body.left, ast.Name)
            and isinstance(value.body.comparators[0], ast.Name)):
        first = value.args.args[0].arg
        op = value.body.ops[0]
        less = isinstance(op, (ast.Lt, ast.LtE))
        if not less and not isinstance(op, (ast.Gt, ast.GtE)):
            return ""
        if value.body.left.id != first:
            less = not less  # lambda a, b: b > a
        return "lt" if less else "gt"
    return ""


def inverted_mode_table(node: ast.Dict, names: Names) -> str:
    """`{"max": operator.le, "min": operator.ge}`: 'improved' tested the wrong way round, so
    the checkpoint kept as best (or the early-stopping patience) follows the worst result."""
    wrong = 0
    right = 0
    for key, value in zip(node.keys, node.values, strict=True):
        word = literal(key) if key is not None else None
        if not isinstance(word, str) or value is None:
            continue
        kind = _comparison(value, names)
        if word.lower() in _MAX_KEYS and kind:
            wrong, right = wrong + (kind == "lt"), right + (kind == "gt")
        elif word.lower() in _MIN_KEYS and kind:
            wrong, right = wrong + (kind == "gt"), right + (kind == "lt")
    if wrong and not right:
        return "a max/min mode table whose comparisons point the wrong way: the worse result " \
               "counts as an improvement"
    return ""


def _split_of(text: str) -> str:
    m = _SPLIT.search(text)
    return _SPLIT_WORDS[m.group(2).lower()] if m else ""


def relabelled_split(node: ast.DictComp) -> str:
    """`{f"test/{k}": v for k, v in best_val.items()}`: validation results published under the
    test split's keys."""
    gen = node.generators[0] if len(node.generators) == 1 else None
    if gen is None or not isinstance(node.key, ast.JoinedStr) or not node.key.values:
        return ""
    head = node.key.values[0]
    prefix = head.value if isinstance(head, ast.Constant) and isinstance(head.value, str) else ""
    it = gen.iter
    source = it.func.value if isinstance(it, ast.Call) and isinstance(
        it.func, ast.Attribute) and it.func.attr == "items" else None
    if not prefix or source is None or not isinstance(source, (ast.Name, ast.Attribute)):
        return ""
    to, frm = _split_of(prefix), _split_of(last_attr(source))
    if to and frm and to != frm and to != "train":
        return f"{last_attr(source)} ({frm}) published under {prefix!r} keys ({to})"
    return ""


def rounded_up(expr: ast.expr, names: Names) -> str:
    """`math.ceil(v * 100) / 100`: a value rounded up at the second decimal (display rounding
    uses round(), which goes both ways)."""
    if not (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div)
            and isinstance(expr.left, ast.Call) and len(expr.left.args) == 1):
        return ""
    name = names.call_name(expr.left)
    scale = literal(expr.right)
    inner = expr.left.args[0]
    if (last_attr(expr.left.func) == "ceil" and name.endswith("ceil")
            and isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale >= 10
            and isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Mult)
            and scale in (literal(inner.left), literal(inner.right))):
        value = inner.left if literal(inner.right) == scale else inner.right
        return ast.unparse(value)[:30]
    return ""


def metric_source(expr: ast.AST) -> bool:
    """Names in expr that read like results (`best_test`, `metrics`, `results`)."""
    return any(isinstance(n, (ast.Name, ast.Attribute)) and re.search(
        r"(?i)metric|result|score|test|val|eval|acc|f1|map|mrr|hits|bleu|rouge|auc",
        last_attr(n)) for n in subnodes(expr))
