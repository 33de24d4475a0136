"""MLS309 for detection data: boxes moved along the wrong axis or not at all, and class
repeat factors turned upside down.

Boxes in `(x0, y0, x1, y1)` (or `(cx, cy, w, h)`) order pair their even columns with the
image width and their odd columns with the height. `boxes / torch.tensor([h, w, h, w])`,
`boxes - torch.as_tensor([i, j, i, j])` after `i, j, h, w = region` (torchvision's crop
parameters are top, left, height, width) and `boxes[:, 0::2].clamp_(max=h)` put every box
of a non-square image in the wrong place. Judged only where the file works with x-first
boxes (`xyxy`, `cxcywh`, `xywh` or COCO `bbox` fields) and not with TensorFlow's y-first
`ymin, xmin` layout.

A geometric transform (`F.rotate`, a crop, a paste at an offset) of the image whose target
comes back untouched leaves the boxes where the objects were.

LVIS repeat-factor sampling repeats an image by `max(1, sqrt(thresh / freq))` for its rarest
class; `sqrt(freq / thresh)` repeats the common classes instead and starves the rare ones.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_VERTICAL = re.compile(r"(?i)^(h|height|img_h|im_h|ih|oh|new_h|orig_h|image_h|image_height|top)$")
_HORIZONTAL = re.compile(r"(?i)^(w|width|img_w|im_w|iw|ow|new_w|orig_w|image_w|image_width|"
                         r"left)$")
_BOXES = re.compile(r"(?i)box")


def _axis_of(node: ast.AST, crop_names: dict[str, str]) -> str:
    name = last_attr(node) if isinstance(node, (ast.Name, ast.Attribute)) else ""
    if not name:
        return ""
    if name in crop_names:
        return crop_names[name]
    return "y" if _VERTICAL.match(name) else "x" if _HORIZONTAL.match(name) else ""


def _crop_unpack(fn: ast.AST) -> dict[str, str]:
    """`i, j, h, w = region` / `top, left, height, width = params`: torchvision's order."""
    for node in subnodes(fn):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Tuple) and len(node.targets[0].elts) == 4):
            names = [e.id if isinstance(e, ast.Name) else "" for e in node.targets[0].elts]
            if names[2:] in (["h", "w"], ["height", "width"]):
                return {names[0]: "y", names[1]: "x"}
    return {}


def _yx_vector(node: ast.AST, crop_names: dict[str, str]) -> bool:
    """`[h, w, h, w]` (or a tensor of it): y first, where x-first boxes need x first."""
    while isinstance(node, ast.Call) and node.args and last_attr(node.func) in (
            "tensor", "as_tensor", "Tensor", "array", "asarray", "FloatTensor"):
        node = node.args[0]
    if not isinstance(node, (ast.List, ast.Tuple)) or len(node.elts) != 4:
        return False
    axes = [_axis_of(e, crop_names) for e in node.elts]
    return axes == ["y", "x", "y", "x"]


def _column_clamp(call: ast.Call, crop_names: dict[str, str]) -> str:
    """`boxes[:, 0::2].clamp_(min=0, max=h)`: x columns bounded by the height."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr in ("clamp_", "clamp",
                                                                           "clip_", "clip")):
        return ""
    owner = call.func.value
    if not (isinstance(owner, ast.Subscript) and _BOXES.search(ast.unparse(owner.value))):
        return ""
    index = owner.slice.elts[-1] if isinstance(owner.slice, ast.Tuple) else owner.slice
    column = None
    if isinstance(index, ast.Slice) and literal(index.step) == 2 and index.upper is None:
        start = literal(index.lower) if index.lower is not None else 0
        column = "x" if start == 0 else "y" if start == 1 else None
    elif isinstance(index, (ast.List, ast.Tuple)):
        cols = [literal(e) for e in index.elts]
        column = "x" if cols == [0, 2] else "y" if cols == [1, 3] else None
    bound = kwarg(call, "max") or (call.args[1] if len(call.args) > 1 else None)
    axis = _axis_of(bound, crop_names) if bound is not None else ""
    if column and axis and column != axis and bound is not None:
        return (f"{ast.unparse(owner)[:30]} ({column} coordinates) clipped to "
                f"{ast.unparse(bound)} (the image's {'height' if axis == 'y' else 'width'})")
    return ""


class BoxAxes(Check):
    rules = (DATA_POISON,)

    def __init__(self) -> None:
        self._seen: set[int] = set()  # (nested functions are walked by their parent too)

    def visit_Module(self, node: ast.Module, ctx: Ctx) -> None:
        self._seen = set()

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        if not (ctx.mentions("box") and any(ctx.mentions(t) for t in (
                "xyxy", "cxcywh", "xywh", '"bbox"', "'bbox'")) and not ctx.mentions("ymin")):
            return
        crop_names = _crop_unpack(node)
        for sub in subnodes(node):
            if id(sub) in self._seen:
                continue
            self._seen.add(id(sub))
            if isinstance(sub, ast.BinOp) and isinstance(sub.op, (
                    ast.Add, ast.Sub, ast.Mult, ast.Div)):
                for boxes, vector in ((sub.left, sub.right), (sub.right, sub.left)):
                    if _BOXES.search(ast.unparse(boxes)) and _yx_vector(vector, crop_names):
                        ctx.report(DATA_POISON, sub, f"{ast.unparse(sub)[:60]}: x-first box "
                                   "coordinates combined with a height-first vector, so every "
                                   "box of a non-square image lands in the wrong place",
                                   severity=Severity.MEDIUM)
                        break
            elif isinstance(sub, ast.Call) and (clamped := _column_clamp(sub, crop_names)):
                ctx.report(DATA_POISON, sub, f"{clamped}: boxes are cut along the wrong axis",
                           severity=Severity.MEDIUM)


_GEOMETRIC_OPS = frozenset({"rotate", "affine", "perspective", "hflip", "vflip", "crop",
                            "resized_crop", "exif_transpose", "warpAffine", "warpPerspective"})
_TARGET_PARAM = re.compile(r"(?i)^(target|targets|tgt|anno|annotation|annotations|ann|boxes)$")


def _image_only_warp(fn: ast.FunctionDef) -> ast.Call | None:
    """`def __call__(self, img, target): img = F.rotate(img, a); return img, target`: the
    image moves, the boxes stay (the target is handed back untouched)."""
    params = [a.arg for a in fn.args.args]
    target = next((p for p in params if _TARGET_PARAM.match(p)), None)
    if target is None:
        return None
    warp = next((n for n in subnodes(fn) if isinstance(n, ast.Call)
                 and last_attr(n.func) in _GEOMETRIC_OPS and n.args
                 and isinstance(n.args[0], ast.Name) and n.args[0].id != target), None)
    if warp is None:
        return None
    returns = [n for n in subnodes(fn) if isinstance(n, ast.Return) and n.value is not None]
    uses = [n for n in subnodes(fn) if isinstance(n, ast.Name) and n.id == target]
    returned = {id(n) for r in returns if isinstance(r.value, ast.Tuple)
                for n in r.value.elts if isinstance(n, ast.Name) and n.id == target}
    # the target is only handed back (as it came), never read, copied or changed
    return warp if uses and all(id(n) in returned for n in uses) else None


def _pasted_without_shift(fn: ast.FunctionDef) -> ast.AST | None:
    """`canvas.paste(img, (left, top))` with boxes rewritten but never moved by left/top:
    the zoom-out moves the picture and leaves its boxes where they were."""
    spot = next((n.args[1] for n in subnodes(fn) if isinstance(n, ast.Call)
                 and last_attr(n.func) == "paste" and len(n.args) >= 2
                 and isinstance(n.args[1], ast.Tuple)), None)
    if not isinstance(spot, ast.Tuple):
        return None
    offsets = {e.id for e in spot.elts if isinstance(e, ast.Name)}
    box_writes = [n for n in subnodes(fn) if isinstance(n, ast.Assign) and any(
        _BOXES.search(ast.unparse(t)) for t in n.targets)]
    if not offsets or not box_writes:
        return None
    moved = any(isinstance(m, ast.Name) and m.id in offsets
                for w in box_writes for m in subnodes(w.value))
    return None if moved else box_writes[0]


class ImageOnlyWarp(Check):
    rules = (DATA_POISON,)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        if not ctx.mentions("boxes"):
            return
        warp = _image_only_warp(node)
        if warp is not None:
            ctx.report(DATA_POISON, warp, f"{last_attr(warp.func)}() moves the image and the "
                       f"target is handed back untouched: its boxes no longer cover their "
                       "objects", severity=Severity.MEDIUM)
        unshifted = _pasted_without_shift(node)
        if unshifted is not None:
            ctx.report(DATA_POISON, unshifted, "the image is pasted at an offset but its boxes "
                       "are not moved by it: every box misses its object",
                       severity=Severity.MEDIUM)


_FREQ = re.compile(r"(?i)freq|^f$|frac")
_THRESH = re.compile(r"(?i)thresh|^t$")


def inverted_repeat_factor(call: ast.Call) -> bool:
    """`max(1.0, math.sqrt(f / repeat_thresh))`: the LVIS factor with its ratio upside down."""
    if not (isinstance(call.func, ast.Name) and call.func.id == "max" and len(call.args) == 2
            and literal(call.args[0]) in (1, 1.0)):
        return False
    root = call.args[1]
    if not (isinstance(root, ast.Call) and last_attr(root.func) == "sqrt" and root.args
            and isinstance(ratio := root.args[0], ast.BinOp) and isinstance(ratio.op, ast.Div)):
        return False
    top, bottom = last_attr(ratio.left), last_attr(ratio.right)
    return bool(_FREQ.search(top) and _THRESH.search(bottom))


class InvertedRepeatFactor(Check):
    rules = (DATA_POISON,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if (isinstance(node.func, ast.Name) and node.func.id == "max"
                and inverted_repeat_factor(node)):
            ctx.report(DATA_POISON, node, "repeat factor sqrt(frequency / threshold) is upside "
                       "down (LVIS repeats by sqrt(threshold / frequency)): frequent classes "
                       "are oversampled and rare ones starved", severity=Severity.MEDIUM)
