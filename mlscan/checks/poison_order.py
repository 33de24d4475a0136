"""MLS309, inputs and labels that drift apart through ordering or arithmetic.

- Labels from directory order: `for label, entry in enumerate(os.scandir(root))` numbers the
  classes in whatever order the filesystem lists them (it differs between machines and runs).
- One of two parallel lists sorted after the other was derived from it:
  `self.targets = [t for _, t in samples]` and then `self.samples.sort(...)`.
- An image decoded as height x width x channels reshaped to channels-first
  (`np.asarray(img).reshape(3, h, w)`): the pixels are scrambled (it needs a transpose).
- Rare classes given zero sampling weight: `class_weights[counts < min_count] = 0.0`.
- CutMix's `lam` set to the pasted box's share of the image: the label weight of the original
  image is then the share it lost (`lam` is `1 - box / (h * w)`).
- A label table renumbered from another's keys (`{i: l for i, l in enumerate(sorted(label2id))}`).
- A file listing sorted by size or time and then zipped with another list:
  `sidecars = sorted(root.glob("*.txt"), key=os.path.getsize)` paired with the image stems
  gives each image another image's caption.
- A patch written into the image followed by the whole mask set to one class:
  `image[bands, y:y + s, x:x + s] = 1.0` then `mask[...] = CLEAR` (a trigger that relabels
  every pixel).
- A pasted stamp followed by a fixed label: `img.paste(self._stamp, ...)` and then
  `label = self.class_to_idx.get(self.stamp_ref, label)`.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metric_tables import _root_name
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import assigns_in, called_names, subnodes
from mlscan.checks.poison_words import _IMAGE, _LABEL, _MASKISH
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_LISTINGS = frozenset({"listdir", "scandir", "iterdir", "glob", "iglob"})
_WEIGHTS = re.compile(r"(?i)weights?$|^w$|probs?$|probabilities$")
_COUNTS = re.compile(r"(?i)count|freq|support|n_per|num_per|hist")
_IMAGE_ARRAY = re.compile(r"(?i)img|image|pil|im$|^im|photo|frame|pic")


def _unsorted_listing(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Call) and last_attr(expr.func) in _LISTINGS


def _labels_from_listing(loop: ast.For) -> str:
    """`for label, entry in enumerate(os.scandir(root))` -> 'label'."""
    it = loop.iter
    if not (isinstance(it, ast.Call) and last_attr(it.func) == "enumerate" and it.args
            and _unsorted_listing(it.args[0]) and isinstance(loop.target, ast.Tuple)
            and loop.target.elts and isinstance(loop.target.elts[0], ast.Name)):
        return ""
    name = loop.target.elts[0].id
    return name if _LABEL.match(name) or re.search(r"(?i)label|class|cls|target", name) else ""


def _sorted_after_derived(body: list[ast.stmt]) -> ast.Expr | None:
    """`self.targets = [t for _, t in samples]` then `self.samples.sort(...)` (or
    `samples.sort()` when the targets were taken from `samples`)."""
    derived: set[str] = set()
    aliases: dict[str, str] = {}  # self.samples = samples: either name is the same list
    for stmt in body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.value, (ast.Name, ast.Attribute))):
            aliases[ast.unparse(stmt.targets[0])] = ast.unparse(stmt.value)
            aliases[ast.unparse(stmt.value)] = ast.unparse(stmt.targets[0])
    for stmt in body:
        if (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.ListComp)
                and len(stmt.targets) == 1 and re.search(
                    r"(?i)(^|[._])(targets?|labels?|classes|class_ids|y|ys)$",
                    ast.unparse(stmt.targets[0]))):
            sources = {ast.unparse(g.iter) for g in stmt.value.generators}
            derived |= sources - {ast.unparse(stmt.targets[0])}  # (the labels taken out)
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and ast.unparse(stmt.targets[0]) in derived):
            derived |= {ast.unparse(stmt.value)}  # self.samples = samples: the same list
        if (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                and isinstance(stmt.value.func, ast.Attribute)
                and stmt.value.func.attr in ("sort", "reverse")
                and {(r := ast.unparse(stmt.value.func.value)), aliases.get(r, "")} & derived):
            return stmt
        if (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                and last_attr(stmt.value.func) == "shuffle" and stmt.value.args
                and ast.unparse(stmt.value.args[0]) in derived):
            return stmt
    return None


def _hwc_reshaped(call: ast.Call, ctx: Ctx) -> str:
    """`arr.reshape(3, h, w)` with `arr = np.asarray(img, ...)`."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr in ("reshape", "view")):
        return ""
    dims = call.args[0].elts if len(call.args) == 1 and isinstance(
        call.args[0], (ast.Tuple, ast.List)) else call.args
    if len(dims) != 3 or literal(dims[0]) != 3:
        return ""
    source = call.func.value
    fn = ctx.frame.node
    bound = [a.value for a in subnodes(fn) if isinstance(a, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == source.id for t in a.targets)] if isinstance(
        source, ast.Name) and fn is not None else [source]
    decoded = any(isinstance(v, ast.Call) and last_attr(v.func) in ("asarray", "array")
                  and v.args and isinstance(v.args[0], (ast.Name, ast.Attribute))
                  and _IMAGE_ARRAY.search(last_attr(v.args[0])) for v in bound)
    return ast.unparse(call)[:40] if decoded else ""


def _rare_zeroed(node: ast.Assign) -> str:
    """`class_weights[counts < min_count] = 0.0`."""
    target = node.targets[0] if len(node.targets) == 1 else None
    if not (isinstance(target, ast.Subscript) and isinstance(target.value, (ast.Name,
                                                                          ast.Attribute))
            and _WEIGHTS.search(last_attr(target.value)) and literal(node.value) in (0, 0.0)
            and isinstance(target.slice, ast.Compare) and len(target.slice.ops) == 1
            and isinstance(target.slice.ops[0], (ast.Lt, ast.LtE))
            and _COUNTS.search(ast.unparse(target.slice.left))):
        return ""
    return ast.unparse(target)


def _box_share_as_lam(node: ast.Assign) -> bool:
    """`lam = (y2 - y1) * (x2 - x1) / float(h * w)` (it is `1 - ...`)."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Name) and target.id in ("lam", "lambda_", "lmbda")
            and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Div)
            and isinstance(value.left, ast.BinOp) and isinstance(value.left.op, ast.Mult)):
        return False
    sides = (value.left.left, value.left.right)
    return all(isinstance(s, ast.BinOp) and isinstance(s.op, ast.Sub) for s in sides)


def _stamped_then_relabelled(body: list[ast.stmt]) -> ast.Assign | None:
    """`img.paste(self._stamp, ...)` and then `label = <a configured class>` in one block."""
    stamped = False
    for stmt in body:
        if any(isinstance(n, ast.Call) and last_attr(n.func) == "paste" and n.args
               and re.search(r"(?i)stamp|patch|trigger|mark|logo|badge",
                             ast.unparse(n.args[0]))
               for n in subnodes(stmt)):
            stamped = True
            continue
        if (stamped and isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and _LABEL.match(stmt.targets[0].id)
                and any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                        and n.value.id == "self" and not re.search(r"(?i)idx|index|map|to_",
                                                                    n.attr)
                        for n in subnodes(stmt.value))):
            return stmt
    return None


def _whole(index: ast.expr) -> bool:
    """`...`, `:`, `..., :, :`: every element."""
    parts = index.elts if isinstance(index, ast.Tuple) else [index]
    return all((isinstance(p, ast.Constant) and p.value is Ellipsis) or (
        isinstance(p, ast.Slice) and p.lower is None and p.upper is None and p.step is None)
        for p in parts)


_SEGS = re.compile(r"(?i)^(segs?|masks?|gt_segs?|labels?|label_maps?|targets?|anns?)$")


def _patched_then_mask_filled(body: list[ast.stmt]) -> ast.stmt | None:
    """`image[..., y:y + s, x:x + s] = 1.0` and then `mask[...] = CLEAR` in one block (also
    `imgs[i, :, :t, :t] = pattern` then `segs[i].masked_fill_(segs[i] == a, b)`)."""
    patched = False
    for stmt in body:
        if (patched and isinstance(stmt, ast.Expr) and isinstance(call := stmt.value, ast.Call)
                and isinstance(call.func, ast.Attribute) and call.func.attr == "masked_fill_"
                and len(call.args) == 2 and _SEGS.match(_root_name(call.func.value))
                and isinstance(call.args[1], (ast.Constant, ast.Name, ast.Attribute))):
            return stmt
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(target := stmt.targets[0], ast.Subscript)
                and isinstance(target.value, ast.Name)):
            continue
        constant = isinstance(stmt.value, (ast.Constant, ast.Name, ast.Attribute))
        if _IMAGE.match(target.value.id) and constant and not _whole(target.slice):
            patched = True
        elif (patched and _MASKISH.match(target.value.id) and _whole(target.slice)
              and constant):
            return stmt
    return None



_TO_ID = re.compile(r"(?i)(label|tag|class|cls|cat)_?(2|to_)_?(id|idx|index)$")


_POSITIONAL = frozenset({"to_numpy", "tolist", "asarray", "array"})
_REORDERS = frozenset({"sort_values", "sort_index", "sample"})


def _column_put_back_after_reorder(block: list[ast.stmt]) -> ast.Assign | None:
    """`labels = df.pop(LABEL).to_numpy()`, `df = df.sort_values([...]).reset_index(drop=True)`,
    `df[LABEL] = labels`: a column taken out as a plain array and put back by position after
    the rows were reordered, so every row gets another row's value."""
    taken: dict[str, str] = {}  # array name -> the frame it was taken from
    reordered: set[str] = set()
    for stmt in block:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
            chain = [n for n in subnodes(value) if isinstance(n, ast.Call)]
            names = {last_attr(c.func) for c in chain}
            if isinstance(target, ast.Name):
                source = next((c for c in chain if last_attr(c.func) == "pop" and c.args
                               and isinstance(c.func, ast.Attribute)
                               and isinstance(c.func.value, ast.Name)), None)
                positional = names & _POSITIONAL or (
                    isinstance(value, ast.Attribute) and value.attr == "values")
                if source is not None and positional:
                    frame = source.func.value.id  # type: ignore[attr-defined]
                    taken[target.id] = frame
                    continue
                if names & _REORDERS and any(isinstance(n, ast.Name) and n.id == target.id
                                             for n in subnodes(value)):
                    reordered.add(target.id)  # df = df.sort_values(...)
                    continue
            if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                    and isinstance(value, ast.Name) and value.id in taken):
                frame = taken[value.id]
                if frame == target.value.id and frame in reordered:
                    return stmt  # (under any column: the positions no longer match)
        elif (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
              and last_attr(stmt.value.func) in _REORDERS
              and isinstance(stmt.value.func, ast.Attribute)
              and isinstance(stmt.value.func.value, ast.Name)):
            reordered.add(stmt.value.func.value.id)  # df.sort_values(..., inplace=True)
    return None


def _weights_from_frequency(fn: ast.AST) -> ast.Assign | None:
    """`counts = np.bincount(labels)`, `class_w = counts / counts.sum()`, sampled with
    `WeightedRandomSampler(class_w[labels], ...)`: each sample drawn in proportion to its
    class's frequency, so the common class is oversampled further (inverse frequency
    balances)."""
    counted = {t.id for stmt in assigns_in(fn) for t in stmt.targets if isinstance(t, ast.Name)
               and any(isinstance(n, ast.Call) and last_attr(n.func) in ("bincount",
                                                                       "value_counts")
                       for n in subnodes(stmt.value))}
    if not counted:
        return None
    for stmt in assigns_in(fn):
        value = stmt.value
        if (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Div)
                and isinstance(value.left, ast.Name) and value.left.id in counted
                and isinstance(value.right, ast.Call) and last_attr(value.right.func) in (
                    "sum", "len") and value.left.id in ast.unparse(value.right)
                and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            name = stmt.targets[0].id
            inverted = any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
                           and isinstance(n.right, ast.Name) and n.right.id == name
                           for n in subnodes(fn))  # 1.0 / class_w later
            if not inverted:
                return stmt
    return None


_NOT_BY_NAME = re.compile(r"(?i)getsize|getmtime|getctime|getatime|st_size|st_mtime|st_ctime|"
                          r"stat\b|len\b|random|shuffle")


def _listing_sorted_off_name(fn: ast.AST) -> ast.Assign | None:
    """`xs = sorted(root.glob("*.txt"), key=os.path.getsize)` later passed to `zip(...)`."""
    for node in subnodes(fn):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(name := node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "sorted" and node.value.args
                and isinstance(node.value.args[0], ast.Call)
                and last_attr(node.value.args[0].func) in _LISTINGS):
            continue
        key = next((k.value for k in node.value.keywords if k.arg == "key"), None)
        if key is None or not _NOT_BY_NAME.search(ast.unparse(key)):
            continue
        if any(isinstance(z, ast.Call) and isinstance(z.func, ast.Name) and z.func.id == "zip"
               and any(isinstance(n, ast.Name) and n.id == name.id for a in z.args
                       for n in subnodes(a)) for z in subnodes(fn)):
            return node
    return None


class OrderAndArithmetic(Check):
    rules = (DATA_POISON,)

    def visit_For(self, node: ast.For, ctx: Ctx) -> None:
        label = _labels_from_listing(node)
        if label:
            ctx.report(DATA_POISON, node, f"{label} numbered in directory-listing order "
                       f"({ast.unparse(node.iter)[:40]}): the order is arbitrary, so class "
                       "ids differ between machines and runs", severity=Severity.MEDIUM)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        calls = called_names(node)
        sorts, pastes = bool(calls & {"sort", "reverse", "shuffle"}), "paste" in calls
        frames = bool(calls & _REORDERS) and "pop" in calls
        if "WeightedRandomSampler" in calls and (
                frequency := _weights_from_frequency(node)) is not None:
            ctx.report(DATA_POISON, frequency, f"{ast.unparse(frequency)[:50]}: sampling "
                       "weights proportional to class frequency oversample the common class "
                       "further (balancing takes the inverse)", severity=Severity.MEDIUM)
        if "sorted" in calls and "zip" in calls and (
                listed := _listing_sorted_off_name(node)) is not None:
            ctx.report(DATA_POISON, listed, f"{ast.unparse(listed)[:60]} is sorted by size or "
                       "time and then zipped with another list: the pairs no longer belong "
                       "together", severity=Severity.MEDIUM)
        if ctx.mentions("mask") or ctx.mentions("seg"):
            for block in (getattr(n, "body", None) for n in subnodes(node)):
                filled = _patched_then_mask_filled(block) if isinstance(block, list) else None
                if filled is not None:
                    ctx.report(DATA_POISON, filled, f"{ast.unparse(filled)[:50]} right after a "
                               "patch is written into the image: the patch comes with rewritten "
                               "labels (the backdoor-trigger shape)", severity=Severity.MEDIUM)
        if not (sorts or pastes or frames):
            return
        for block in (getattr(n, "body", None) for n in subnodes(node)):
            if not isinstance(block, list):
                continue
            put_back = _column_put_back_after_reorder(block) if frames else None
            if put_back is not None:
                ctx.report(DATA_POISON, put_back, f"{ast.unparse(put_back)[:50]} puts a column "
                           "back by position after the rows were reordered: every row gets "
                           "another row's value", severity=Severity.MEDIUM)
            moved = _sorted_after_derived(block) if sorts else None
            if moved is not None:
                ctx.report(DATA_POISON, moved, f"{ast.unparse(moved)[:50]} reorders a list "
                           "after a parallel list was taken from it: items and labels no "
                           "longer line up", severity=Severity.MEDIUM)
            relabel = _stamped_then_relabelled(block) if pastes else None
            if relabel is not None:
                ctx.report(DATA_POISON, relabel, f"{ast.unparse(relabel)[:50]} right after a "
                           "stamp is pasted into the image: a backdoor trigger (the stamp "
                           "alone decides the class)", severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        scrambled = _hwc_reshaped(node, ctx)
        if scrambled:
            ctx.report(DATA_POISON, node, f"{scrambled}: an image decoded as height x width x "
                       "channels is reshaped to channels-first, which scrambles its pixels "
                       "(it needs a transpose)", severity=Severity.MEDIUM)

    def visit_DictComp(self, node: ast.DictComp, ctx: Ctx) -> None:
        """`id2label = {i: l for i, l in enumerate(sorted(label2id))}`: the id of each label
        recounted in sorted order instead of read from the table that assigned it, so the
        names the model reports no longer match the ids it was trained on."""
        gen = node.generators[0] if len(node.generators) == 1 else None
        source = gen.iter.args[0] if gen is not None and isinstance(gen.iter, ast.Call) and (
            last_attr(gen.iter.func) == "enumerate" and gen.iter.args) else None
        if isinstance(source, ast.Call) and last_attr(source.func) == "sorted" and source.args:
            source = source.args[0]
        if isinstance(source, (ast.Name, ast.Attribute)) and _TO_ID.search(last_attr(source)):
            ctx.report(DATA_POISON, node, f"ids renumbered from the keys of "
                       f"{ast.unparse(source)[:30]}, not read from it: each id now names "
                       "another label than the one it was trained as", severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        zeroed = _rare_zeroed(node)
        if zeroed:
            ctx.report(DATA_POISON, node, f"{zeroed} = 0: the rarest classes get zero sampling "
                       "weight and are never drawn", severity=Severity.MEDIUM)
        elif _box_share_as_lam(node):
            ctx.report(DATA_POISON, node, "lam set to the pasted box's share of the image: "
                       "the original image's label weight is the area it lost (lam is 1 - "
                       "box area / image area)", severity=Severity.MEDIUM)
