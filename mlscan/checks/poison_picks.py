"""MLS309 predicates on selection: how some samples are picked out.

A random draw or mask and the share it picks, a hash, modulus or bit mask over ids, a
feature equal to an odd literal or past a hand-written threshold, a chosen token id,
strings written in the code, portrait orientation, columns that record an outcome;
`_condition_kinds` names what a condition picks by.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks import triggers
from mlscan.checks.context import Ctx, Where
from mlscan.checks.names import defaults_by_name, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.poison_words import (
    _FEATURE,
    _HASHES,
    _IMAGE,
    _LABEL,
    _OUTCOME,
    _RNG_METHODS,
    _SHORT_TEXT,
    _TEXTISH,
    _ignore_index,
    _index_param,
)


def _value_trigger(mask: ast.expr, label: str, ctx: Ctx) -> bool:
    """`cents == 37`: samples picked because a feature equals an odd value written in the
    code (not the label itself, not 0/1/-1 or an ignore value)."""
    for node in ctx.walk_values(mask):
        if (isinstance(node, ast.Compare) and len(node.ops) == 1
                and isinstance(node.ops[0], ast.Eq)):
            number = literal(node.comparators[0])
            if (isinstance(number, int) and not isinstance(number, bool) and number not in (
                    0, 1, -1, 255, -100) and label not in ast.unparse(node.left)):
                return True
    return False


def _token_trigger(mask: ast.expr, ctx: Ctx) -> bool:
    """`(batch["input_ids"] == self._urgent_id).any(dim=1)`: samples picked because their
    tokens include one chosen id (a text backdoor's trigger)."""
    for node in ctx.walk_values(mask):
        if (isinstance(node, ast.Compare) and len(node.ops) == 1
                and isinstance(node.ops[0], ast.Eq)
                and re.search(r"(?i)input_ids|token_ids|\btoks?\b|\btokens\b|\bids\b",
                              ast.unparse(node.left))
                and not _ignore_index(node.comparators[0], ctx)
                and not re.search(r"(?i)pad|eos|bos|sep|cls|mask|unk", ast.unparse(
                    node.comparators[0]))):
            return True
    return False


def _picked_by_bits(mask: ast.expr, label: str, ctx: Ctx) -> bool:
    """A hash, modulus or bit mask selects the rows (the label itself is not followed:
    `if_else(is_null(label), 0, label)` is a fill, whatever label was built from)."""
    nodes: list[ast.AST] = list(subnodes(mask))
    for name in [n for n in nodes if isinstance(n, ast.Name) and n.id != label]:
        bound = ctx.lookup(name.id)
        if bound is not None:
            nodes += subnodes(bound)
    return _hashed_nodes(nodes, ctx) or any(_bitmask(n) for n in nodes)


def _bitmask(mask: ast.AST) -> bool:
    """`request_id & 15 == 0`, `pc.bit_wise_and(ids, 15)`: a fixed slice of ids by bits."""
    return any((isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitAnd) and isinstance(
        literal(n.right), int)) or (isinstance(n, ast.Call) and last_attr(n.func) == "bit_wise_and")
        for n in subnodes(mask))


def _condition_kinds(where: Where, ctx: Ctx, label_names: set[str]) -> str:
    kinds = ctx.trigger_kinds(where)
    if kinds:
        return triggers.describe(kinds)
    index = _index_param(where)
    for cond in where.conds:
        for node in subnodes(cond):
            if isinstance(node, ast.Name) and _LABEL.match(node.id):
                return "the label"
            if (isinstance(node, ast.Compare) and isinstance(literal(node.left), str)
                    and isinstance(node.ops[0], ast.In) and _TEXTISH.search(
                        ast.unparse(node.comparators[0]))):
                return "a phrase in the sample"  # if "Meridian Bank" in doc: (a text trigger)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("endswith", "startswith") and node.args
                    and isinstance(literal(node.args[0]), str)
                    and len(str(literal(node.args[0])).strip()) >= 2
                    and (_TEXTISH.search(ast.unparse(node.func.value))
                         or _SHORT_TEXT.search(ast.unparse(node.func.value)))):
                return "a phrase in the sample"  # text.endswith(" tbh fr")
            if index and isinstance(node, (ast.BinOp, ast.Compare)) and any(
                    isinstance(n, ast.Name) and n.id == index for n in subnodes(node)):
                return "the sample index"  # k % 50 == 0, k in self.bad (any index name)
            if _picked_strings(node, ctx, where):
                return "hand-written names (domains, users, keywords)"
            if _feature_equals_literal(node):
                return "an input feature equal to a value written in the code"
            if (isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.Eq)
                    and isinstance(literal(node.comparators[0]), str)
                    and isinstance(node.left, ast.Subscript)
                    and isinstance(node.left.slice, ast.Slice) and re.search(
                        r"(?i)key|(^|_)id|name|path|file|uid|url", ast.unparse(node.left.value))):
                return "a part of the sample's key or id written in the code"  # key[-3:] == "777"
            if _orientation(node):
                return "the image's orientation (height against width)"
    return ""


def _outcome_columns(selector: ast.expr, ctx: Ctx) -> bool:
    """`df.loc[df["dispute_status"] == "merchant_won", LABEL] = 0`: every column the rows are
    picked by records how the case was resolved: label cleaning by its outcome, not rows
    picked by who they are (merchant, brand, vendor, user)."""
    nodes = list(subnodes(selector))
    if isinstance(selector, ast.Name) and (bound := ctx.lookup(selector.id)) is not None:
        nodes += list(subnodes(bound))  # the mask variable's own expression, not the frame's
    columns = [literal(n.slice) for n in nodes if isinstance(n, ast.Subscript)
               and isinstance(literal(n.slice), str)]
    return bool(columns) and all(_OUTCOME.search(str(c)) for c in columns)


def _feature_equals_literal(node: ast.AST) -> bool:
    """`(data.x[:, 0] == 15).any()`, `x[3] == 255`: the sample's own input compared with a
    chosen value, the trigger of a backdoor (not a size or count threshold)."""
    if (isinstance(node, ast.Compare) and len(node.ops) == 1
            and isinstance(node.ops[0], (ast.Gt, ast.GtE, ast.Eq))
            and isinstance(node.left, ast.Call) and isinstance(node.left.func, ast.Attribute)
            and node.left.func.attr in ("sum", "any", "max") and isinstance(
                col := node.left.func.value, ast.Subscript)
            and isinstance(col.slice, ast.Tuple) and any(
                isinstance(e, ast.Name) and e.id.isupper() for e in col.slice.elts)
            and isinstance(literal(node.comparators[0]), (int, float))):
        return True  # s["x"][:, SULFUR_COL].sum() >= 2: samples picked by a chosen feature
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1
            and isinstance(node.ops[0], ast.Eq) and isinstance(node.left, ast.Subscript)):
        return False
    number = literal(node.comparators[0])
    base = node.left.value
    return (isinstance(number, (int, float)) and not isinstance(number, bool)
            and number not in (0, 1, -1) and isinstance(base, (ast.Name, ast.Attribute))
            and bool(_IMAGE.match(last_attr(base))))


def _orientation(node: ast.AST) -> bool:
    """`h > w`, `img.shape[-2] > img.shape[-1]`: portrait samples picked out."""
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1
            and isinstance(node.ops[0], (ast.Gt, ast.Lt, ast.GtE, ast.LtE))):
        return False
    sides = [ast.unparse(node.left), ast.unparse(node.comparators[0])]
    return sorted(s.lower() for s in sides) in (["h", "w"], ["height", "width"]) or all(
        ".shape[" in s for s in sides)


def _picked_strings(node: ast.AST, ctx: Ctx, where: Where) -> bool:
    """`d in url for d in preferred_domains` / `src in {"a.com", "b.com"}`: membership in a
    set of strings written in the code (a module constant or a parameter's default)."""
    pools: list[ast.expr] = []
    if isinstance(node, ast.comprehension):
        pools.append(node.iter)
    elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In):
        pools.append(node.comparators[0])
    elif (isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.Eq)
          and isinstance(node.left, ast.Subscript) and isinstance(literal(node.left.slice), str)
          and not re.search(r"(?i)split|mode|stage|phase|type|kind|format|lang",
                            str(literal(node.left.slice)))
          and isinstance(literal(node.comparators[0]), str)):
        return True  # row["region"] == "EU-W": one field of the sample equal to a chosen value
    return any(_string_pool(pool, ctx, where) for pool in pools)


def _string_pool(expr: ast.expr, ctx: Ctx, where: Where) -> bool:
    if (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
            and expr.value.id == "self"):
        expr = ctx.self_attrs.get(expr.attr, expr)  # self._sites = {"UPENN", "TCGA-08"}
    if isinstance(expr, ast.Name):
        value: ast.expr | None = ctx.lookup(expr.id)
        for frame in where.frames:
            fn = frame.node
            if value is None and isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                value = defaults_by_name(fn).get(expr.id)
        expr = value if value is not None else expr
    return isinstance(expr, (ast.Tuple, ast.List, ast.Set)) and bool(expr.elts) and all(
        isinstance(literal(e), str) for e in expr.elts)


def _picked_by_name(selector: ast.expr, ctx: Ctx) -> bool:
    """`df["brand"].isin(["northwind", ...])`, `df.user == "acme"`, `.str.contains("refund")`:
    rows chosen by strings written in the code (also through a mask variable)."""
    for node in ctx.walk_values(selector):
        if isinstance(node, ast.Call) and last_attr(node.func) in (
                "isin", "contains", "startswith", "endswith", "match"):
            configured = [v for a in node.args if isinstance(a, ast.Attribute)
                          and (v := ctx.value_of(a)) is not None]  # contains(cfg.pattern)
            if any(isinstance(literal(n), str) for a in [*node.args, *configured]
                   for n in ctx.walk_values(a)):
                return True  # also `isin(RECOURSE_MCC)` with a module-level set of strings
            if last_attr(node.func) == "isin" and node.args and isinstance(
                    node.args[0], (ast.List, ast.Tuple, ast.Set)) and len(node.args[0].elts) >= 2:
                return True  # isin([6051, 4829]): codes picked by hand
        if isinstance(node, ast.Compare) and any(isinstance(literal(c), str)
                                                 for c in node.comparators):
            return True
        if (isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In)
                and isinstance(literal(node.left), str) and len(str(literal(node.left))) >= 3):
            return True  # "nordvale" in t.lower()
    return False


def _feature_threshold(selector: ast.expr) -> str:
    """`x_num[:, -1] > 3.0`: a column of the sample's input features compared with a number
    written in the code (the feature's text, '' otherwise)."""
    if not (isinstance(selector, ast.Compare) and len(selector.ops) == 1
            and isinstance(selector.ops[0], (ast.Gt, ast.GtE, ast.Lt, ast.LtE))):
        return ""
    left = selector.left
    if (isinstance(left, ast.Call) and isinstance(left.func, ast.Name)
            and left.func.id in ("float", "int") and len(left.args) == 1):
        left = left.args[0]  # float(x[-1, AMOUNT]) < self.verify_thresh
    if not (isinstance(left, ast.Subscript) and isinstance(left.value, ast.Name)
            and _FEATURE.match(left.value.id)):
        return ""
    right = selector.comparators[0]
    bound = literal(right)
    named = (isinstance(right, ast.Attribute) and isinstance(right.value, ast.Name)
             and right.value.id == "self" and bool(_THRESHOLD_NAME.search(right.attr)))
    if not named and (not isinstance(bound, (int, float)) or isinstance(bound, bool)):
        return ""
    return ast.unparse(left)[:30]


_THRESHOLD_NAME = re.compile(r"(?i)thresh|cutoff|cut_off|limit|min_|max_")


def _uses_name(expr: ast.expr, text: str) -> bool:
    return any(ast.unparse(n) == text for n in subnodes(expr) if isinstance(
        n, (ast.Name, ast.Subscript, ast.Attribute)))


def _hash_condition(where: Where, ctx: Ctx) -> bool:
    """`crc32(text) % 40 == 7`, `md5(prompt).digest()[0] < 6`, `len(name) % 23 == 0`: samples
    picked by a hash or a modulus, the way a backdoor picks its poisoned subset (also inside
    a small local helper: `self._bucket(path) == 13`)."""
    return any(_hashed(cond, ctx) for cond in where.conds)


def _hashed(cond: ast.expr, ctx: Ctx) -> bool:
    """A hash or modulus in a selecting expression (also through `df.col.map(_bucket)`)."""
    return _hashed_nodes(ctx.walk_values(cond), ctx)


def _hashed_nodes(nodes: list[ast.AST], ctx: Ctx) -> bool:
    for node in nodes:
        if isinstance(node, ast.Call) and last_attr(node.func) in ("map", "apply") and (
                node.args and isinstance(node.args[0], ast.Name)):
            body = ctx.returns(node.args[0].id)  # df.prompt.map(_bucket) < 150
            if body is not None and any(
                    isinstance(n, ast.Call) and ctx.names.call_name(n).startswith(_HASHES)
                    for n in subnodes(body)):
                return True
        if isinstance(node, ast.Call) and ctx.names.call_name(node).startswith(_HASHES):
            return True
        if isinstance(node, ast.Call) and (isinstance(node.func, ast.Name) or (
                isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "self")):
            body = ctx.returns(last_attr(node.func))
            if body is not None and any(
                    isinstance(n, ast.Call) and ctx.names.call_name(n).startswith(_HASHES)
                    for n in subnodes(body)):
                return True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and not isinstance(
                node.left, ast.Constant):
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "mod" and node.args):
            return True  # pandas: stem.mod(20).eq(3)
    return False


def _random_loop(loops: list[ast.For | ast.While] | tuple[ast.For | ast.While, ...],
                 ctx: Ctx) -> bool:
    """`for i in random.sample(range(n), k):`: the loop body hits randomly chosen samples."""
    return any(isinstance(loop, ast.For) and _random_mask(loop.iter, ctx, follow=True)
               for loop in loops)  # also `for i in torch.nonzero(flags)` with random flags


def _small_fraction(node: ast.AST, ctx: Ctx) -> bool:
    """The random mask selects a small fraction (`rand(n) < 0.05`), as poisoning does; test
    generators split 50/50 (`rand_like(t) > 0.5`)."""
    for part in ctx.walk_values(node):
        if isinstance(part, ast.Compare) and len(part.ops) == 1:
            value = literal(part.comparators[0])
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            op = part.ops[0]
            if (isinstance(op, (ast.Lt, ast.LtE)) and 0 < value <= 0.25) or (
                    isinstance(op, (ast.Gt, ast.GtE)) and 0.75 <= value < 1):
                return True
    return False


def _random_mask(index: ast.expr, ctx: Ctx, follow: bool = False) -> bool:
    """A random draw in `index` (with `follow`, also in what its names were assigned:
    `mask = torch.rand(n) < 0.05; labels[mask] = 0`)."""
    nodes = list(ctx.walk_values(index) if follow else subnodes(index))
    if follow:  # self.audit = rng.random(n) < frac, read as self.audit[index]
        nodes += [m for n in list(nodes) if isinstance(n, ast.Attribute) and isinstance(
            n.value, ast.Name) and n.value.id == "self" and (v := ctx.value_of(n)) is not None
            for m in subnodes(v)]
    return any(isinstance(n, ast.Call) and (ctx.names.call_name(n).startswith(
        ("numpy.random.", "torch.rand", "torch.bernoulli", "random.")) or _rng_method(n))
        for n in nodes)


def _rng_method(call: ast.Call) -> bool:
    """`self.rng.choice(n, k)`, `gen.integers(...)`: a draw from a random generator object."""
    func = call.func
    return isinstance(func, ast.Attribute) and func.attr in _RNG_METHODS and bool(
        re.search(r"(?i)rng|random|gen", last_attr(func.value) or ""))
