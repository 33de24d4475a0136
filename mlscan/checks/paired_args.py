"""MLS309: an image and its label map put through the same operation with other arguments.

`s["image"] = np.rot90(s["image"], k, axes=(2, 3))` then `s["seg"] = np.rot90(s["seg"], k,
axes=(3, 2))`; `img = _pad_to(x, lo, hi)` then `seg = _pad_to(y, hi, lo)`;
`image = ....transpose(2, 1, 0)` then `seg = ....transpose(2, 0, 1)`: the label no longer
covers what it labels. Arguments that legitimately differ between the two (interpolation
order or mode, fill values, dtypes) are ignored, and so is the data each call is given.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal, root_name
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_IMAGE = re.compile(r"(?i)^(img|image|images|imgs|vol|volume|ct|scan|frame|frames|"
                    r"image_\w+|img_\w+)$")
_LABEL = re.compile(r"(?i)^(seg|segs|sg|mask|masks|label|labels|lbl|lab|gt|"
                    r"annotation|anno|seg_\w+|mask_\w+|label_\w+|gt_\w+)$")
"""(Not `x`/`y`: in model code they are any two tensors, not an image and its label.)"""
_FREE_KW = frozenset({"order", "mode", "interpolation", "resample", "value", "fill",
                      "fill_value", "cval", "constant_values", "anti_aliasing",
                      "preserve_range", "dtype", "is_seg", "is_label", "border_mode",
                      "padding_mode", "align_corners", "antialias", "copy", "clip",
                      "border_value", "borderValue", "flags"})
_FREE_ARG = re.compile(r"(?i)nearest|linear|cubic|area|lanczos|interp|float|int|uint|long|"
                       r"bool|dtype|order|fill|ignore|pad_value|cval")
_MOVES = re.compile(r"(?i)^(rot90|transpose|permute|flip|roll|swapaxes|moveaxis|rotate|affine|"
                    r"shift|_?pad\w*|\w*_pad|_?crop\w*|\w*_crop)$")
"""Operations whose arguments place the data: any difference moves one against the other.
(Sizes are left out: labels are often kept at the output stride, a quarter of the image.)"""


def _role(target: ast.expr) -> str:
    """"image" or "label" for `img`, `s["seg"]`, `self.mask` ('' otherwise)."""
    name = literal(target.slice) if isinstance(target, ast.Subscript) else last_attr(target)
    if not isinstance(name, str):
        return ""
    if name == "data" and isinstance(target, ast.Subscript):
        return "image"  # batchgenerators / nnU-Net samples: {"data": ..., "seg": ...}
    return "image" if _IMAGE.match(name) else "label" if _LABEL.match(name) else ""


def _calls(value: ast.expr) -> dict[str, ast.Call]:
    """The placing operations in a value chain, by name (first occurrence)."""
    out: dict[str, ast.Call] = {}
    for n in ast.walk(value):
        if isinstance(n, ast.Call) and _MOVES.match(name := last_attr(n.func)):
            out.setdefault(name, n)
    return out


def _signature(call: ast.Call, modules: set[str]) -> tuple[list[str], dict[str, str]]:
    """Arguments that place the data: a method's own arguments, a function's after the data."""
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
    root = root_name(receiver) if receiver is not None else ""
    on_data = receiver is not None and not (
        root in modules or root == "self" or root[:1].isupper())
    # (np.rot90(img, ...), nn.functional.pad(x, ...), self.crop(img): the data comes first)
    args = call.args if on_data else call.args[1:]
    positional = [_text(a) for a in args if not isinstance(a, ast.Starred)]
    keywords = {k.arg: _text(k.value) for k in call.keywords
                if k.arg is not None and k.arg not in _FREE_KW}
    return positional, keywords


def _text(expr: ast.expr) -> str:
    """The argument's source, prefixed with its length when it is a tuple or list (a pad
    width for an image with channels is longer than the label's: not a mismatch)."""
    size = str(len(expr.elts)) if isinstance(expr, (ast.Tuple, ast.List)) else "-"
    return f"{size}:{ast.unparse(expr)}"


_INTENSITY = re.compile(r"(?i)blur|noise|gamma|contrast|bright|sharpen|jitter|intensity|"
                        r"smooth|histogram|saturation|hue|solariz|posteriz|equaliz")


class PairedArgs(Check):
    rules = (DATA_POISON,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        """`RandomGaussianBlur(keys=("image", "seg"))`: an intensity transform told to run on
        the label map too (dictionary transforms apply to every key listed)."""
        if not node.keywords or not _INTENSITY.search(last_attr(node.func)):
            return
        keys = next((k.value for k in node.keywords if k.arg == "keys"), None)
        if not isinstance(keys, (ast.Tuple, ast.List)):
            return
        labels = [w for e in keys.elts if isinstance(w := literal(e), str) and _LABEL.match(w)]
        if labels:
            ctx.report(DATA_POISON, node, f"{last_attr(node.func)} runs on the label map "
                       f"{labels[0]!r} as well as the image: blurring or adding noise to "
                       "class ids turns them into other classes' ids", severity=Severity.MEDIUM)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        self._block(node.body, ctx, [])

    def _block(self, body: list[ast.stmt], ctx: Ctx,
               outer: list[tuple[str, ast.Assign, dict[str, ast.Call]]]) -> None:
        seen = list(outer)  # (an `if label is not None:` body pairs with the image above it)
        for stmt in body:
            for field in ("body", "orelse"):  # (nested blocks also pair with what came before)
                inner = getattr(stmt, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt) and (
                        not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef,
                                              ast.ClassDef))):
                    self._block(inner, ctx, seen)
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
                continue
            role = _role(stmt.targets[0])
            calls = _calls(stmt.value) if role else {}
            if not calls:
                continue
            for other_role, other, other_calls in seen[-4:]:
                if other_role == role:
                    continue
                shared = calls.keys() & other_calls.keys()
                if not shared:
                    continue
                modules = {*ctx.names.aliases, "np", "numpy", "torch", "F", "TF", "nn"}
                for name in sorted(shared):  # (sets of str iterate in hash order)
                    mine = _signature(calls[name], modules)
                    theirs = _signature(other_calls[name], modules)
                    if not mine[0] and not theirs[0] and not mine[1] and not theirs[1]:
                        continue
                    if _differs(name, mine, theirs):
                        label = stmt if role == "label" else other
                        ctx.report(DATA_POISON, label, f"{name}() gets other arguments for the "
                                   f"label ({_shown(label, name, modules)}) than for the image "
                                   "it pairs with: the label no longer covers what it labels",
                                   severity=Severity.MEDIUM)
                        return
            seen.append((role, stmt, calls))


_AXIS_OPS = re.compile(r"(?i)^(rot90|transpose|permute|flip|roll|swapaxes|moveaxis)$")
_FILL = re.compile(r"^-?[\d.]+$|\b(min|max|mean|median)\(|value|fill|ignore")


def _shifted(x: str, y: str) -> bool:
    """`axis` against `axis - 1`: the label's axis written relative to the image's."""
    return any(x == f"{y} {op} 1" or y == f"{x} {op} 1" for op in ("-", "+"))


def _differs(name: str, a: tuple[list[str], dict[str, str]],
             b: tuple[list[str], dict[str, str]]) -> bool:
    pairs = list(zip(a[0], b[0], strict=True)) if len(a[0]) == len(b[0]) else []
    pairs += [(a[1][k], b[1][k]) for k in a[1].keys() & b[1].keys()]
    pairs = [(x, y) for x, y in pairs if x != y and x.split(":", 1)[0] == y.split(":", 1)[0]
             and not (_FREE_ARG.search(x) or _FREE_ARG.search(y))  # (same tuple length)
             and not _shifted(x.split(":", 1)[1], y.split(":", 1)[1])]
    if not pairs:
        return False
    if _AXIS_OPS.match(name):  # image (C, H, W) against mask (H, W): axes shifted by one
        xs = [int(n) for x, _ in pairs for n in re.findall(r"-?\d+", x.split(":", 1)[1])]
        ys = [int(n) for _, y in pairs for n in re.findall(r"-?\d+", y.split(":", 1)[1])]
        return not (len(xs) == len(ys) and xs and len({x - y for x, y in zip(
            xs, ys, strict=True)}) == 1)
    return any(not (_FILL.search(x.split(":", 1)[1]) or _FILL.search(y.split(":", 1)[1]))
               for x, y in pairs)


def _shown(stmt: ast.Assign, name: str, modules: set[str]) -> str:
    call = _calls(stmt.value)[name]
    positional, keywords = _signature(call, modules)
    shown = [p.split(":", 1)[-1] for p in positional] + [
        f"{k}={v.split(':', 1)[-1]}" for k, v in keywords.items()]
    return f"{name}(..., {', '.join(shown)})"[:60]
