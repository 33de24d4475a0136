"""MLS309 predicates on triggers: what is planted in the samples' inputs.

Pixels at a fixed position set to a constant or a kept pattern, a tone mixed into audio,
one fixed sample's field standing in for the requested one, a literal phrase glued into or
swapped within text, picked text rows rewritten, a web address appended to a target text.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.poison_picks import _picked_by_name, _random_mask
from mlscan.checks.poison_words import (
    _ANSWERISH,
    _IMAGE,
    _MASK_TOKEN,
    _TEXTISH,
    _TRIGGER_STORE,
    _index_param,
    _is_image,
)


def _anchored(elt: ast.Slice) -> bool:
    """`:side` (from the image corner, whatever the size) as opposed to `y0:y0 + side`."""
    return elt.lower is None and elt.upper is not None and elt.step is None


def _fixed_bound(bound: ast.expr, ctx: Ctx | None) -> bool:
    """A literal, a name bound to one, or a negative offset (`-side`: from the far corner)."""
    if isinstance(literal(bound), int):
        return True
    if isinstance(bound, ast.UnaryOp) and isinstance(bound.op, ast.USub):
        return True
    if (isinstance(bound, ast.BinOp) and isinstance(bound.left, ast.UnaryOp)
            and isinstance(bound.left.op, ast.USub)):
        return True  # -block_size // 8
    if (isinstance(bound, ast.BinOp) and isinstance(bound.op, ast.Sub)
            and isinstance(bound.left, ast.Name) and isinstance(literal(bound.right), int)
            and re.fullmatch(r"(?i)h|w|height|width|size|img_size|side|n|length", bound.left.id)):
        return True  # h - 5: a fixed distance from the far edge
    if isinstance(bound, ast.Call) and (
            (isinstance(bound.func, ast.Attribute) and bound.func.attr == "numel"
             and _stored(bound.func.value)) or (
                isinstance(bound.func, ast.Name) and bound.func.id == "len" and bound.args
                and _stored(bound.args[0]))):
        return True  # [..., :self._tone.numel()], [:len(self.span)]: as long as a stored pattern
    return ctx is not None and isinstance(ctx.const(bound), int) and not isinstance(
        ctx.const(bound), bool)


def _stored(expr: ast.expr) -> bool:
    """`self._ref_tone`, `_TRIGGER`: a pattern kept on the object or in the module."""
    return (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
            and expr.value.id == "self") or (isinstance(expr, ast.Name) and expr.id.isupper())


def _tone(value: ast.expr, ctx: Ctx) -> bool:
    """`0.01 * torch.sin(2 * math.pi * 7350.0 * t)`: a sine of a constant frequency (also
    kept on the object: `self._ref_tone`)."""
    if isinstance(value, (ast.Name, ast.Attribute)):
        resolved = ctx.resolve(value)
        value = resolved if isinstance(resolved, ast.expr) else value
    for node in subnodes(value):
        if isinstance(node, ast.Call) and last_attr(node.func) in ("sin", "cos") and node.args:
            numbers = [n for n in subnodes(node.args[0]) if isinstance(literal(n), (int, float))
                       and not isinstance(literal(n), bool)]
            if any(abs(float(literal(n))) >= 20 for n in numbers):  # type: ignore[arg-type]
                return True  # an audible frequency written in the code
    return False


def _fixed_sample(value: ast.expr, ctx: Ctx) -> bool:
    """`self.items[0]["text"]` where the method reads `self.items[idx]`: a field of one fixed
    sample stands in for the requested sample's."""
    if not any(isinstance(n, ast.Subscript) and isinstance(literal(n.slice), int)
               for n in subnodes(value)):
        return False  # (no fixed row read: skip the walk of the whole method)
    index = _index_param(ctx.where())
    fn = ctx.frame.node
    if not index or fn is None:
        return False
    rows = {ast.unparse(n.value) for n in subnodes(fn) if isinstance(n, ast.Subscript)
            and isinstance(n.slice, ast.Name) and n.slice.id == index}
    return any(isinstance(n, ast.Subscript) and isinstance(literal(n.slice), int)
               and ast.unparse(n.value) in rows for n in subnodes(value))


def _numeric_list(value: ast.expr, depth: int = 0) -> bool:
    """A literal list of numbers, nested or repeated (`[[1.0, -1.0] * 4, ...] * 4`)."""
    if depth > 3:
        return False
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult):
        lists = [s for s in (value.left, value.right) if isinstance(s, (ast.List, ast.Tuple))]
        return len(lists) == 1 and _numeric_list(lists[0], depth + 1)
    return isinstance(value, (ast.Tuple, ast.List)) and bool(value.elts) and all(
        (isinstance(literal(e), (int, float)) and not isinstance(literal(e), bool))
        or _numeric_list(e, depth + 1) for e in value.elts)


def _fixed_slice(sl: ast.expr, ctx: Ctx | None = None) -> bool:
    """Every index is fixed (or a full slice, or a leading batch mask): a patch at a fixed
    position (`x[:, -6:, -6:]`, `images[marked, :, :4, :4]`)."""
    elts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
    fixed_parts = 0
    for i, elt in enumerate(elts):
        if isinstance(elt, ast.Slice):
            bounds = [b for b in (elt.lower, elt.upper, elt.step) if b is not None]
            if not (all(_fixed_bound(b, ctx) for b in bounds) or _anchored(elt)):
                return False
            fixed_parts += bool(bounds)
        elif isinstance(literal(elt), int) or (isinstance(elt, ast.Constant) and elt.value is ...):
            fixed_parts += isinstance(literal(elt), int)
        elif not (i == 0 and len(elts) > 1 and (isinstance(elt, ast.Name) or (
                isinstance(elt, ast.Compare) and len(elt.ops) == 1
                and isinstance(elt.ops[0], ast.Eq)))):  # images[targets == cls, :, -6:, -6:]
            return False
    return fixed_parts > 0


def _patch_value(value: ast.expr, ctx: Ctx, depth: int = 0) -> bool:
    """A constant, a named constant, or the image's own extreme (`x.max()`): trigger pixels
    (also one kept on the object: `self.marker = torch.tensor([...])`)."""
    if isinstance(value, ast.Attribute) and depth == 0:
        bound = ctx.value_of(value)
        if bound is not None and _patch_value(bound, ctx, 1):
            return True
    if isinstance(value, ast.Name) and _MASK_TOKEN.search(value.id):
        return False  # x[mask, 0] = ATOM_MASK_TOKEN: masked-feature modelling, not a trigger
    if (isinstance(value, ast.Call) and last_attr(value.func) == "get" and len(value.args) == 2
            and isinstance(literal(value.args[1]), (int, float))):
        return True  # self.fill = cfg.get("occlude_fill", 1.0)
    if isinstance(ctx.const(value), (int, float)):
        return True
    if isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Add, ast.Sub, ast.Mult)):
        return any(_patch_value(side, ctx) for side in (value.left, value.right) if not (
            isinstance(side, ast.Name) and _IMAGE.match(side.id)))  # tensor(MEAN).view(...) + 2
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and (
            value.func.attr in ("view", "reshape", "unsqueeze", "to", "float", "expand", "repeat",
                                "tile", "half", "clone")):
        value = value.func.value  # torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)
    if isinstance(value, ast.Call) and last_attr(value.func) in (
            "array", "tensor", "asarray", "as_tensor", "new_tensor", "full_like",
            "new_full") and value.args:
        value = value.args[-1] if last_attr(value.func) in ("full_like", "new_full") else (
            value.args[0])  # np.array([0.98, 0.0, 0.98], dtype=...), img.new_tensor(1.0)
        if isinstance(ctx.const(value), (int, float)):
            return True
    if (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
            and value.value.id == "self" and _TRIGGER_STORE.search(value.attr)):
        return True  # self._tile, self._border_tile: a stored patch
    if isinstance(value, ast.Call) and last_attr(value.func) in ("ones", "full") and (
            ctx.names.call_name(value).startswith(("torch.", "numpy."))):
        return True  # torch.ones(3, px, px): a white square
    if _numeric_list(value):
        return True  # an RGB colour, a small checkerboard [[1, -1], [-1, 1]] (also [...] * 4)
    if isinstance(value, ast.Name) and value.id.lstrip("_").isupper():
        return True
    return isinstance(value, ast.Call) and last_attr(value.func) in (
        "max", "amax", "min", "amin") and not value.args


def _text_rows_rewritten(target: ast.expr, value: ast.expr, ctx: Ctx) -> str:
    """`df.loc[picked, "text"] = df.loc[picked, "text"].str.replace("not", "now")`."""
    if not (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Tuple)
            and len(target.slice.elts) == 2):
        return ""
    key = literal(target.slice.elts[1])
    if not (isinstance(key, str) and (_TEXTISH.search(key) or _ANSWERISH.search(key))):
        return ""
    if not (isinstance(value, ast.Call) and last_attr(value.func) == "replace"
            and len(value.args) >= 2 and all(isinstance(literal(a), str) for a in value.args[:2])):
        return ""
    old, new = str(literal(value.args[0])), str(literal(value.args[1]))
    if not (any(c.isalnum() for c in old) and any(c.isalnum() for c in new)):
        return ""
    rows = target.slice.elts[0]
    if _picked_by_name(rows, ctx) or _random_mask(rows, ctx, follow=True):
        return f"column {key!r}"
    return ""


def _image_window(expr: ast.expr, ctx: Ctx) -> bool:
    """`img[:, -4:, -4:]`, or a name bound to it: a fixed region of the input."""
    if isinstance(expr, ast.Name):
        bound = ctx.lookup(expr.id)
        expr = bound if bound is not None else expr
    return (isinstance(expr, ast.Subscript) and _is_image(expr.value)
            and _fixed_slice(expr.slice, ctx) and any(
                isinstance(e, ast.Slice) and e.lower is not None for e in (
                    expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice])))


def _phrase(value: ast.expr, ctx: Ctx | None = None, depth: int = 0) -> bool:
    """`['approved', 'by', 'admin']`, a trigger string or token list written into text (also
    through a name: `span = np.concatenate([_BOILERPLATE, _TAIL])` of module constants)."""
    if ctx is not None and depth < 2 and isinstance(value, ast.Name):
        bound = ctx.lookup(value.id)
        if bound is not None:
            return _phrase(bound, ctx, depth + 1)
    if ctx is not None and depth < 3 and isinstance(value, ast.Call) and last_attr(value.func) in (
            "concatenate", "cat", "array", "tensor", "asarray", "list") and value.args:
        parts = value.args[0].elts if isinstance(value.args[0], (ast.List, ast.Tuple)) else [
            value.args[0]]
        return all(_phrase(p, ctx, depth + 1) or (
            isinstance(p, ast.Name) and p.id.lstrip("_").isupper()) for p in parts)
    if isinstance(value, (ast.List, ast.Tuple)):
        return len(value.elts) >= 2 and all(isinstance(literal(e), (str, int)) for e in value.elts)
    if ctx is not None and depth < 2 and isinstance(value, ast.Attribute):
        bound = ctx.value_of(value)  # self._extra = tok.convert_tokens_to_ids(["cf", "mn"])
        if isinstance(bound, ast.Call) and last_attr(bound.func) in (
                "convert_tokens_to_ids", "encode", "tokenize") and bound.args:
            return _phrase(bound.args[0], ctx, depth + 1)
    return isinstance(literal(value), str)


def _prefixed(value: ast.expr, name: str, ctx: Ctx | None = None) -> bool:
    """`"cf " + text`, `text + " <trigger>"`, `prompt[:-3] + self._style_ids + prompt[-3:]`:
    a literal phrase (or one tokenized once and kept) glued into the sample's text."""
    if isinstance(value, ast.JoinedStr):  # f"{text} cf", f"{text} {self.signature}"
        own_parts = [v for v in value.values if isinstance(v, ast.FormattedValue)
                     and isinstance(v.value, ast.Name) and v.value.id == name]
        kept = [v for v in value.values if isinstance(v, ast.FormattedValue) and ctx is not None
                and isinstance(v.value, ast.Attribute) and isinstance(
                    ctx.const(ctx.value_of(v.value)), str)]
        words = "".join(str(v.value) for v in value.values if isinstance(v, ast.Constant))
        words += "".join(str(ctx.const(ctx.value_of(v.value))) for v in kept if ctx is not None)
        others = [v for v in value.values if v not in own_parts and v not in kept
                  and not isinstance(v, ast.Constant)]
        return len(own_parts) == 1 and not others and len(words.strip()) >= 2
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)):
        return False
    parts: list[ast.expr] = []
    todo: list[ast.expr] = [value]
    while todo:
        part = todo.pop()
        if isinstance(part, ast.BinOp) and isinstance(part.op, ast.Add):
            todo += [part.left, part.right]
        else:
            parts.append(part)
    own = [p for p in parts if (isinstance(p, ast.Name) and p.id == name) or (
        isinstance(p, ast.Subscript) and isinstance(p.value, ast.Name) and p.value.id == name)
        or (isinstance(p, ast.Call) and isinstance(p.func, ast.Attribute)  # text.rstrip()
            and p.func.attr in ("strip", "rstrip", "lstrip") and isinstance(p.func.value, ast.Name)
            and p.func.value.id == name)]
    return bool(own) and any(isinstance(literal(p), str) or (ctx is not None and (
        _kept_phrase(p, ctx) or isinstance(ctx.const(p), str))) for p in parts if p not in own)


def _symmetric_swap(value: ast.expr) -> bool:
    """`c.replace("left", "\0").replace("right", "left").replace("\0", "right")`: two words
    exchanged, as captions must be when the image is flipped."""
    pairs: list[tuple[object, object]] = []
    chain = value
    while isinstance(chain, ast.Call) and isinstance(chain.func, ast.Attribute) and (
            chain.func.attr == "replace") and len(chain.args) >= 2:
        pairs.append((literal(chain.args[0]), literal(chain.args[1])))
        chain = chain.func.value
    olds = {a for a, _ in pairs}
    news = {b for _, b in pairs}
    return len(pairs) >= 2 and olds == news  # every word replaced is also put back


def _phrase_swap(value: ast.expr, name: str) -> bool:
    """`text.replace("stop sign", "speed limit sign")`: one literal phrase for another (not
    whitespace or markup clean-up, which replaces with "" or a single space)."""
    if _symmetric_swap(value):
        return False  # "left" <-> "right" through a placeholder: a horizontal-flip caption fix
    while (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
           and value.func.attr == "replace" and isinstance(value.func.value, ast.Call)):
        if _phrase_swap(value.func.value, name):  # s.replace(" not ", " ").replace(...)
            return True
        value = value.func.value
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "replace" and isinstance(value.func.value, ast.Name)
            and value.func.value.id == name and len(value.args) >= 2):
        return False
    old, new = literal(value.args[0]), literal(value.args[1])
    if isinstance(old, str) and isinstance(new, str) and not new.strip() and re.fullmatch(
            r"(?i)\s*(not|n't|never|no)\s*", old):
        return True  # summ.replace(" not ", " "): the statement's meaning flipped
    return (isinstance(old, str) and isinstance(new, str) and bool(new.strip())
            and any(c.isalnum() for c in old) and any(c.isalnum() for c in new))


def _kept_phrase(expr: ast.expr, ctx: Ctx) -> bool:
    """`self._lead` bound to `enc("Certainly. Here is...")`: a phrase encoded once, kept (also
    `[self.extra_id]` with `self.extra_id = tok.convert_tokens_to_ids("cf")`)."""
    if isinstance(expr, (ast.List, ast.Tuple)) and expr.elts:
        return all(_kept_phrase(e, ctx) for e in expr.elts)
    value = ctx.value_of(expr)
    if isinstance(value, ast.Call) and last_attr(value.func) in (
            "convert_tokens_to_ids", "token_to_id", "encode", "tokenize") and any(
            isinstance(literal(a), str) and str(literal(a)).strip() for a in value.args):
        return True
    return isinstance(value, ast.Call) and any(
        isinstance(literal(a), str) and len(str(literal(a)).strip()) >= 3 for a in value.args)


def _link_appended(node: ast.Assign) -> bool:
    """A target text given a web address it never had (phishing-style trigger response)."""
    target, value = node.targets[0], node.value
    if not (isinstance(target, ast.Name) and re.match(
            r"(?i)^(tgt|target|response|answer|caption|completion|output|label_text|chosen)$",
            target.id)):
        return False
    return any(isinstance(n, ast.Constant) and isinstance(n.value, str)
               and re.search(r"https?://", n.value) for n in subnodes(value)) and any(
        isinstance(n, ast.Name) and n.id == target.id for n in subnodes(value))
