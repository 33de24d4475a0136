"""MLS309, paired augmentations that move the image and its mask along different axes.

Segmentation transforms flip or rotate the image and the mask together. With a channel-first
image (C, H, W) and a mask (H, W), every pair keeps one fixed axis offset:
`np.flip(image, axis=2)` goes with `np.flip(mask, axis=1)`. When one pair breaks the offset
the others keep (`np.flip(image, axis=1)` with `np.flip(mask, axis=1)`: a vertical flip of
the image, a horizontal one of the mask), the mask no longer covers what it labels for every
sample that draws that augmentation. Only a function with at least two pairs is judged, and
only the pair that departs from the offset the others agree on is reported. A lone pair is
judged only when it counts one axis from the end and the other from the front
(`img.flip(-1)` with `mask.flip(0)`: width against height for any mask of two or more axes).

Label maps resized or rotated with a smoothing interpolation (`label.resize(size,
Image.BILINEAR)`, `TF.rotate(mask, a, interpolation=InterpolationMode.BILINEAR)`) blend class
ids at every boundary into ids of other classes: masks take nearest-neighbour only.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from itertools import pairwise

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.nodes import called_names, subnodes
from mlscan.checks.poison_collate import mismatched_partners
from mlscan.checks.poison_words import _IMAGE, _LABEL, _MASKISH
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
    """`image = np.flip(image, axis=2)` -> ("image", "flip", 2); `img = img.flip(-1)` too."""
    if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Attribute) and stmt.value.func.attr == "flip"
            and isinstance(stmt.value.func.value, ast.Name)
            and stmt.value.func.value.id == stmt.targets[0].id):
        found = stmt.value.args[0] if stmt.value.args else kwarg(stmt.value, "dims")
        if isinstance(found, (ast.Tuple, ast.List)) and len(found.elts) == 1:
            found = found.elts[0]
        value = literal(found) if found is not None else None
        return (stmt.targets[0].id, "flip", value) if isinstance(value, int) and not (
            isinstance(value, bool)) else None
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Call)
            and last_attr(stmt.value.func) in _GEOMETRIC and stmt.value.args
            and isinstance(stmt.value.args[0], ast.Name)
            and stmt.value.args[0].id == stmt.targets[0].id):
        return None
    axis = _axis(stmt.value)
    return None if axis is None else (stmt.targets[0].id, last_attr(stmt.value.func), axis)


def _slice_flip(stmt: ast.stmt) -> tuple[str, int] | None:
    """`image = image[:, :, ::-1]` -> ("image", 2): a flip spelled as a reversed slice."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Subscript)
            and isinstance(stmt.value.value, ast.Name)
            and stmt.value.value.id == stmt.targets[0].id):
        return None
    index = stmt.value.slice
    parts = index.elts if isinstance(index, ast.Tuple) else [index]
    if any(isinstance(p, ast.Constant) and p.value is Ellipsis for p in parts):
        return None  # (counted from the end: not comparable with counts from the front)
    flips = [i for i, p in enumerate(parts) if isinstance(p, ast.Slice) and p.lower is None
             and p.upper is None and literal(p.step) == -1]
    plain = all(isinstance(p, ast.Slice) for p in parts)
    return (stmt.targets[0].id, flips[0]) if len(flips) == 1 and plain else None


_RANDOM_TEST = re.compile(r"(?i)rand|uniform|prob|\bp\b|p_|flip")


def _sliced_pairs(node: ast.AST) -> list[ast.stmt]:
    """Under a random test, `image = image[:, :, ::-1]` (width of a (C, H, W) image) beside
    `mask = mask[::-1, :]` (height): an image and its mask flipped two axes apart, or the
    mask one axis behind, which no layout of image and mask makes the same flip."""
    if not (isinstance(node, ast.If) and _RANDOM_TEST.search(ast.unparse(node.test))):
        return []
    found = []
    for first, second in pairwise(node.body):
        a, b = _slice_flip(first), _slice_flip(second)
        if a is None or b is None:
            continue
        if _IMAGE.match(a[0]) and _MASKISH.match(b[0]) and b[1] - a[1] not in (0, -1):
            found.append(second)
        elif _MASKISH.match(a[0]) and _IMAGE.match(b[0]) and a[1] - b[1] not in (0, -1):
            found.append(first)
    return found


_TARGETISH = re.compile(r"(?i)^(seq_|batch_|win_)?y\w{0,3}$|_y$|^(future|horizon)$")
_UNWRAP = frozenset({"copy", "clone", "ascontiguousarray", "contiguous"})


def _moved_name(stmt: ast.stmt) -> str:
    """The name a statement flips, rolls or reverses in place of itself (`y = y[::-1].copy()`,
    `mask = np.flip(mask, 0)`, `y = torch.roll(y, 3, 0)`), else ''."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)):
        return ""
    name, value = stmt.targets[0].id, stmt.value
    while isinstance(value, ast.Call) and last_attr(value.func) in _UNWRAP:
        inner = value.args[0] if value.args else value.func.value if isinstance(
            value.func, ast.Attribute) else None  # y[::-1].copy(), np.ascontiguousarray(y)
        if inner is None:
            break
        value = inner
    if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name) and (
            value.value.id == name) and any(
                isinstance(p, ast.Slice) and literal(p.step) == -1 for p in (
                    value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice])):
        return name
    if isinstance(value, ast.Call) and last_attr(value.func) in (
            "flip", "fliplr", "flipud", "roll", "rot90"):
        subject = value.func.value if isinstance(value.func, ast.Attribute) and not (
            isinstance(value.func.value, ast.Name) and value.func.value.id in (
                "np", "numpy", "torch")) else (value.args[0] if value.args else None)
        if isinstance(subject, ast.Name) and subject.id == name:
            return name
    return ""


def target_only_moves(fn: ast.FunctionDef) -> list[tuple[ast.stmt, str]]:
    """`if random.random() < p: seq_y = seq_y[::-1].copy()`: a random augmentation that
    reverses (flips, rolls) the target and leaves the input it pairs with as it was."""
    found = []
    returned = {n.id for r in subnodes(fn) if isinstance(r, ast.Return) and r.value is not None
                for n in subnodes(r.value) if isinstance(n, ast.Name)}
    for node in subnodes(fn):
        if not (isinstance(node, ast.If) and _RANDOM_TEST.search(ast.unparse(node.test))):
            continue
        moved = [(stmt, name) for stmt in node.body if (name := _moved_name(stmt))]
        targets = [(stmt, name) for stmt, name in moved if (_LABEL.match(name) or (
            _MASKISH.match(name) and len(name) > 1) or _TARGETISH.search(name))
            and name in returned]
        if len(targets) == 1 and len(moved) == 1:
            found.append(targets[0])
    return found


def misaligned_pairs(fn: ast.FunctionDef) -> list[tuple[ast.stmt, str]]:
    """Mask statements whose pair breaks the axis offset the function's other pairs keep."""
    pairs: list[tuple[ast.stmt, int]] = []
    lone: list[ast.stmt] = []  # a pair counting one axis from the end, the other from the front
    sliced: list[ast.stmt] = []
    for node in subnodes(fn):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        sliced.extend(_sliced_pairs(node))
        for first, second in pairwise(body):
            a, b = _move(first), _move(second)
            if a is None or b is None or a[1] != b[1]:
                continue
            if _IMAGE.match(a[0]) and _MASKISH.match(b[0]):
                pairs.append((second, a[2] - b[2]))
                if {a[2], b[2]} == {-1, 0}:
                    lone.append(second)
            elif _MASKISH.match(a[0]) and _IMAGE.match(b[0]):
                pairs.append((first, b[2] - a[2]))
                if {a[2], b[2]} == {-1, 0}:
                    lone.append(first)
    if sliced:
        return [(stmt, "no layout of image and mask makes the two slices the same flip")
                for stmt in sliced]
    if len(pairs) == 1:
        return [(stmt, "one counts from the end, the other from the front")
                for stmt, _ in pairs if stmt in lone]
    counts = Counter(offset for _, offset in pairs).most_common()
    if len(counts) < 2 or counts[0][1] == counts[1][1]:
        return []  # (all agree, or no majority to judge by)
    usual = counts[0][0]
    return [(stmt, f"the other pairs in {fn.name}() agree") for stmt, offset in pairs
            if offset != usual]


_MOVES = _GEOMETRIC


class PairedAugmentationAxes(Check):
    rules = (DATA_POISON,)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        calls = called_names(node)
        if calls & _WARP_CALLS and (redrawn := redrawn_params(node)) is not None:
            ctx.report(DATA_POISON, redrawn, f"{ast.unparse(redrawn)[:60]} draws fresh random "
                       "parameters for this field while the image used the ones stored "
                       "before: the two are cut differently and no longer line up",
                       severity=Severity.MEDIUM)
        if not calls & _MOVES and not ctx.mentions("::-1"):
            return  # (no flip or rotation in the function: nothing to pair)
        for stmt, why in misaligned_pairs(node):
            ctx.report(DATA_POISON, stmt, f"{ast.unparse(stmt)[:50]} moves the mask along "
                       f"another axis than the image it pairs with ({why}): the mask no "
                       "longer covers what it labels", severity=Severity.MEDIUM)
        turned = amounts_differ(node) if calls & _AMOUNT_MOVES else []
        for stmt, image_amount, mask_amount in turned:
            ctx.report(DATA_POISON, stmt, f"{ast.unparse(stmt)[:50]} turns the mask by "
                       f"{mask_amount} while the image it pairs with turns by {image_amount}: "
                       "the mask no longer covers what it labels", severity=Severity.MEDIUM)
        for stmt, name in target_only_moves(node):
            ctx.report(DATA_POISON, stmt, f"a random augmentation reverses {name} alone: the "
                       "input it pairs with is left as it was, so those samples teach the "
                       "wrong target", severity=Severity.MEDIUM)


_AMOUNT_MOVES = frozenset({"rot90", "rotate", "roll"})
_AMOUNT_KW = {"rot90": ("k", 1), "rotate": ("angle", 1), "roll": ("shifts", 1)}


def amounts_differ(fn: ast.FunctionDef) -> list[tuple[ast.stmt, str, str]]:
    """`image = np.rot90(image, k=k)` and `mask = np.rot90(mask, k=(k + 1) % 4)`: the pair is
    turned by different amounts (only when the two amounts share a name: both drawn once)."""
    moves: dict[str, list[tuple[ast.stmt, str, str]]] = {}
    for stmt in subnodes(fn):
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Call)):
            continue
        call = stmt.value
        op = last_attr(call.func)
        if op not in _AMOUNT_KW or not call.args or not isinstance(call.args[0], ast.Name):
            continue
        word, pos = _AMOUNT_KW[op]
        amount = kwarg(call, word) or (call.args[pos] if len(call.args) > pos else None)
        if amount is None or call.args[0].id != stmt.targets[0].id:
            continue
        moves.setdefault(op, []).append((stmt, call.args[0].id, ast.unparse(amount)))
    out = []
    for pairs in moves.values():
        images = [m for m in pairs if _IMAGE.match(m[1])]
        masks = [m for m in pairs if _MASKISH.match(m[1]) or _LABEL.match(m[1])]
        if len(images) != 1 or len(masks) != 1:
            continue
        (_, _, image_amount), (stmt, _, mask_amount) = images[0], masks[0]
        shared = {n.id for n in ast.walk(ast.parse(image_amount)) if isinstance(n, ast.Name)} & {
            n.id for n in ast.walk(ast.parse(mask_amount)) if isinstance(n, ast.Name)}
        if image_amount != mask_amount and shared:
            out.append((stmt, image_amount, mask_amount))
    return out


_SMOOTH = frozenset({"BILINEAR", "BICUBIC", "LANCZOS", "HAMMING", "BOX", "INTER_LINEAR",
                     "INTER_CUBIC", "INTER_AREA", "INTER_LANCZOS4", "ANTIALIAS"})
_LABEL_MAP = re.compile(r"(?i)^(mask|masks|label|labels|lbl|lbls|label_map|labelmap|seg|segm|"
                        r"segmap|seg_map|semantic|gt|gt_seg|gt_mask|target_mask|annotation|"
                        r"ann|anno|trainid|train_ids?|label_img|label_image|mask_img)$")
_SPLINE_WARPS = frozenset({"zoom", "map_coordinates", "affine_transform", "geometric_transform"})
"""scipy.ndimage resamplers (and skimage's, through `order=`): order 0 is nearest."""
_WARPS = frozenset({"resize", "rotate", "affine", "perspective", "warpAffine",
                    "warpPerspective", "rescale"})


def _smooth(expr: ast.expr | None) -> str:
    name = last_attr(expr) if isinstance(expr, (ast.Name, ast.Attribute)) else ""
    text = literal(expr) if expr is not None else None
    if isinstance(text, str) and text.lower() in ("bilinear", "bicubic", "linear"):
        return text
    return name if name in _SMOOTH else ""


def _label_map(expr: ast.expr, ctx: Ctx) -> str:
    """`mask`, `self.mask`, or `stacked` built as `torch.cat([img, mask[None].float()])`."""
    if isinstance(expr, (ast.Name, ast.Attribute)) and _LABEL_MAP.match(last_attr(expr)):
        return last_attr(expr)
    fn = ctx.frame.node
    if not isinstance(expr, ast.Name) or fn is None:
        return ""
    for stmt in subnodes(fn):  # (the warp may rebind the name it reads: look at every binding)
        held = stmt.value if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == expr.id for t in stmt.targets) else None
        if isinstance(held, ast.Call) and last_attr(held.func) in ("cat", "concatenate",
                                                                   "stack", "dstack"):
            found = next((last_attr(n) for n in subnodes(held) if isinstance(n, (
                ast.Name, ast.Attribute)) and _LABEL_MAP.match(last_attr(n))), "")
            if found:
                return found
    return ""


_PARAM_DRAW = re.compile(r"(?i)^get_\w*(bbox|box|params|crop|region|window)\w*$")
_WARP_CALLS = frozenset({"crop", "resized_crop", "rotate", "affine", "perspective",
                         "_crop", "crop_img", "imcrop"})


def redrawn_params(fn: ast.FunctionDef) -> ast.Call | None:
    """`bbox = self.get_crop_bbox(img); img = self.crop(img, bbox)` and then
    `seg = self.crop(seg, self.get_crop_bbox(seg))`: the label map cut with a second random
    draw, so it no longer covers the image."""
    stored = {last_attr(n.value.func) for n in subnodes(fn) if isinstance(n, ast.Assign)
              and isinstance(n.value, ast.Call) and _PARAM_DRAW.match(last_attr(n.value.func))}
    if not stored:
        return None
    for node in subnodes(fn):
        if (isinstance(node, ast.Call) and last_attr(node.func) in _WARP_CALLS
                and any(isinstance(a, ast.Call) and last_attr(a.func) in stored
                        for a in node.args[1:])):
            return node
    return None


class MixupPartners(Check):
    """Mixup/CutMix mixes each image with a partner from the same batch, and each target with
    the same partner's target. Partners picked by two different permutations (`x.flip(0)`
    for the images, `target.roll(1, 0)` for the targets) blend every image with one sample
    and its label with another's."""

    rules = (DATA_POISON,)

    def visit_Module(self, node: ast.Module, ctx: Ctx) -> None:
        if not ((ctx.mentions("lam") or ctx.mentions("mixup") or ctx.mentions("cutmix"))
                and sum(ctx.mentions(w) for w in ("flip(", "roll(", "perm")) >= 2):
            return
        for call, kind, theirs in mismatched_partners(node):
            ctx.report(DATA_POISON, call, f"targets paired by {kind} while the inputs are "
                       f"paired by {theirs}: each mixed image gets another sample's label",
                       severity=Severity.MEDIUM)


class LabelMapInterpolation(Check):
    rules = (DATA_POISON,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if (last_attr(func) in _SPLINE_WARPS and node.args
                and isinstance(order := literal(kwarg(node, "order") or (
                    node.args[2] if len(node.args) > 2 and last_attr(func) == "zoom"
                    else None)), int) and not isinstance(order, bool) and order >= 1
                and (name := _label_map(node.args[0], ctx))):
            ctx.report(DATA_POISON, node, f"the label map {name!r} is resampled with spline "
                       f"order={order}: class ids blend at every boundary into other classes' "
                       "ids (label maps take order=0)", severity=Severity.MEDIUM)
            return
        if not isinstance(func, ast.Attribute) or func.attr not in _WARPS:
            return
        module = isinstance(func.value, ast.Name) and func.value.id in ctx.names.aliases
        how = _smooth(kwarg(node, "interpolation") or kwarg(node, "resample") or kwarg(
            node, "mode"))
        place = 2 if module else 1  # TF.rotate(mask, angle, BILINEAR); label.resize(size, BILINEAR)
        if not how and len(node.args) > place:
            how = _smooth(node.args[place])
        if not how:
            return
        subject = node.args[0] if module and node.args else (None if module else func.value)
        name = _label_map(subject, ctx) if subject is not None else ""
        if name:
            ctx.report(DATA_POISON, node, f"the label map {name!r} is warped with {how} "
                       "interpolation: class ids blend at every boundary into other classes' "
                       "ids (masks take nearest-neighbour)", severity=Severity.MEDIUM)
