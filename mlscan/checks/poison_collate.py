"""Collate functions that take a batch apart and put it back out of line: inputs and targets
built from the same samples in different orders, so every sample is trained with another
sample's target.

`misaligned(fn, batch)` returns (statement, description) pairs for:
- one output reordered along the batch axis alone (`future = torch.roll(future, 1, dims=0)`);
- the sample list reordered after some outputs were already gathered from it
  (`ys = cat([g.y ...]); graphs = sorted(graphs, ...); xs = [g.x for g in graphs]`);
- outputs gathered through an index order next to outputs gathered in the list's own order
  (`images = stack([batch[i]["image"] for i in order])`, `labels = stack([b["label"] for b in
  batch])`).
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.nodes import subnodes

COLLATE_NAME = re.compile(r"(?i)collate|collator")
_LABELISH = re.compile(r"(?i)label|target|tgt|^ys?$|future|answer|mask")
_REORDERS = frozenset({"sorted", "shuffle", "sort", "reverse", "reversed"})


def _batch_axis_reorder(value: ast.expr) -> str:
    """`torch.roll(x, 1, dims=0)`, `x.roll(1, 0)`, `np.roll(x, 1, axis=0)`, `x.flip(0)`,
    `torch.flip(x, [0])` -> the name reordered ('' otherwise)."""
    if not isinstance(value, ast.Call) or last_attr(value.func) not in ("roll", "flip", "flipud"):
        return ""
    func = value.func
    method = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and (
        func.value.id not in ("torch", "np", "numpy"))
    args = list(value.args)
    subject: ast.expr | None = None
    if isinstance(func, ast.Attribute) and method:
        subject = func.value
    elif args:
        subject = args.pop(0)
    if not isinstance(subject, ast.Name):
        return ""
    if last_attr(func) == "flipud":
        return subject.id
    axis = kwarg(value, "dims") or kwarg(value, "axis") or kwarg(value, "dim")
    if axis is None and last_attr(func) == "roll" and len(args) >= 2:
        axis = args[1]
    if axis is None and last_attr(func) == "flip" and args:
        axis = args[0]
    axes = literal(axis) if axis is not None else None
    if isinstance(axes, (list, tuple)) and len(axes) == 1:
        axes = axes[0]
    return subject.id if axes == 0 else ""


def _gathered_from(value: ast.AST) -> tuple[set[str], set[str]]:
    """Names iterated directly by comprehensions in `value` (`for b in batch`), and the index
    names they iterate (`for i in order`)."""
    direct: set[str] = set()
    through: set[str] = set()
    for node in subnodes(value):
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp)):
            for gen in node.generators:
                if isinstance(gen.iter, ast.Name):
                    (through if isinstance(gen.target, ast.Name) and any(
                        isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Name)
                        and n.slice.id == gen.target.id for n in subnodes(node))
                     else direct).add(gen.iter.id)
    return direct, through


def _is_order(value: ast.expr | None, batch: str) -> bool:
    """`sorted(range(len(batch)), key=...)`, `np.argsort(...)`, `torch.randperm(len(batch))`."""
    return isinstance(value, ast.Call) and last_attr(value.func) in (
        "sorted", "argsort", "randperm", "permutation") and batch in {
            n.id for n in subnodes(value) if isinstance(n, ast.Name)}


_IN_PLACE = frozenset({"zero_", "fill_", "mul_", "add_", "sub_", "masked_fill_", "copy_",
                       "index_fill_", "clamp_", "neg_"})


def aliased_target_writes(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[
        tuple[ast.stmt, str, str]]:
    """`dec_inp = ys; dec_inp[:, label_len:] = 0.0; return xs, ys, dec_inp`: a second name for
    the targets (not a copy) written in place, so the targets returned are overwritten too.
    Returns (write, alias, target) triples."""
    returned = {n.id for r in subnodes(fn) if isinstance(r, ast.Return) and r.value is not None
                for n in subnodes(r.value) if isinstance(n, ast.Name)}
    aliases: dict[str, str] = {}
    out: list[tuple[ast.stmt, str, str]] = []
    for stmt in sorted((s for s in subnodes(fn) if isinstance(s, (ast.Assign, ast.Expr))),
                       key=lambda s: s.lineno):
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:  # a rebinding ends the alias
                if isinstance(target, ast.Name):
                    aliases.pop(target.id, None)
                    for alias, source in list(aliases.items()):
                        if source == target.id:
                            del aliases[alias]
            first = stmt.targets[0] if len(stmt.targets) == 1 else None
            if (isinstance(first, ast.Name) and isinstance(stmt.value, ast.Name)
                    and _LABELISH.search(stmt.value.id)
                    and stmt.value.id in returned and first.id in returned):
                aliases[first.id] = stmt.value.id
                continue
            written = stmt.targets[0] if len(stmt.targets) == 1 else None
            if (isinstance(written, ast.Subscript) and isinstance(written.value, ast.Name)
                    and written.value.id in aliases):
                out.append((stmt, written.value.id, aliases[written.value.id]))
        elif (isinstance(call := stmt.value, ast.Call) and isinstance(call.func, ast.Attribute)
              and call.func.attr in _IN_PLACE and isinstance(call.func.value, ast.Name)
              and call.func.value.id in aliases):
            out.append((stmt, call.func.value.id, aliases[call.func.value.id]))
    return out


def _one_output_sorted(assigns: list[ast.Assign], statements: list[ast.Assign | ast.Expr]
                       ) -> list[tuple[ast.stmt, str]]:
    """`images, targets = zip(*batch)` then `images = sorted(images, key=...)` (or
    `images.sort(...)`) and the targets left in batch order."""
    unzipped: list[str] = []
    for assign in assigns:
        made = assign.value
        if (isinstance(assign.targets[0], ast.Tuple) and isinstance(made, ast.Call)
                and isinstance(made.func, ast.Name) and made.func.id == "zip"
                and len(made.args) == 1 and isinstance(made.args[0], ast.Starred)):
            unzipped = [e.id for e in assign.targets[0].elts if isinstance(e, ast.Name)]
            break
    if len(unzipped) < 2:
        return []
    sorted_names: list[tuple[ast.stmt, str]] = []
    for stmt in statements:
        value = stmt.value
        name = ""
        if (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
                and isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id in ("sorted", "reversed") and value.args
                and isinstance(value.args[0], ast.Name)
                and value.args[0].id == stmt.targets[0].id):
            name = stmt.targets[0].id
        elif (isinstance(stmt, ast.Expr) and isinstance(value, ast.Call)
              and isinstance(value.func, ast.Attribute) and value.func.attr in ("sort", "reverse")
              and isinstance(value.func.value, ast.Name)):
            name = value.func.value.id
        if name in unzipped:
            sorted_names.append((stmt, name))
    if len(sorted_names) != 1:
        return []  # (all outputs sorted alike, or none)
    moved, name = sorted_names[0]
    others = ", ".join(n for n in unzipped if n != name)
    return [(moved, f"{name} re-sorted on its own while {others} keep the batch order")]


def _reindexed_without_labels(fn: ast.AST, assigns: list[ast.Assign]
                              ) -> list[tuple[ast.stmt, str]]:
    """`order = torch.argsort(sparse[:, 0]); dense, sparse = dense[order], sparse[order]` and
    then `return {..., "label": labels}`: the features reordered, the labels not."""
    orders = {a.targets[0].id for a in assigns if isinstance(a.targets[0], ast.Name)
              and isinstance(a.value, ast.Call)
              and last_attr(a.value.func) in ("argsort", "randperm", "permutation")}
    if not orders:
        return []
    moved: dict[str, ast.stmt] = {}
    for a in assigns:
        pairs = list(zip(a.targets[0].elts, a.value.elts, strict=False)) if isinstance(
            a.targets[0], ast.Tuple) and isinstance(a.value, ast.Tuple) else [
            (a.targets[0], a.value)]
        for target, value in pairs:
            if (isinstance(target, ast.Name) and isinstance(value, ast.Subscript)
                    and isinstance(value.value, ast.Name) and value.value.id == target.id
                    and isinstance(value.slice, ast.Name) and value.slice.id in orders):
                moved[target.id] = a
    returned = {n.id for r in subnodes(fn) if isinstance(r, ast.Return) and r.value is not None
                for n in subnodes(r.value) if isinstance(n, ast.Name)}
    left = [n for n in returned if _LABELISH.search(n) and n not in moved]
    if not moved or not left or not any(n in returned for n in moved):
        return []
    stmt = next(iter(moved.values()))
    return [(stmt, f"{', '.join(sorted(moved))} reordered by an index order while "
                   f"{', '.join(sorted(left))} keep the batch order")]


def _opposite_concats(fn: ast.AST) -> list[tuple[ast.stmt, str]]:
    """`ids = ids + [e["class_ids"] for e in ex]` beside `pixels = [e["class_pixels"] for e in
    ex] + pixels`: two parallel lists extended at opposite ends, so the extra samples pair
    with the wrong rows."""
    out: list[tuple[ast.stmt, str]] = []
    for block in subnodes(fn):
        body = getattr(block, "body", None)
        if not isinstance(body, list):
            continue
        ends: list[tuple[ast.stmt, str, str]] = []  # (statement, name, "end"/"front")
        for stmt in body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)
                    and isinstance(stmt.value, ast.BinOp) and isinstance(stmt.value.op, ast.Add)):
                continue
            name = stmt.targets[0].id
            left, right = stmt.value.left, stmt.value.right
            if isinstance(left, ast.Name) and left.id == name and isinstance(right, ast.ListComp):
                ends.append((stmt, name, "end"))
            elif isinstance(right, ast.Name) and right.id == name and isinstance(
                    left, ast.ListComp):
                ends.append((stmt, name, "front"))
        sides = {side for _, _, side in ends}
        if len(ends) == 2 and sides == {"end", "front"}:
            stmt, name, _ = next(e for e in ends if e[2] == "front")
            other = next(e[1] for e in ends if e[2] == "end")
            out.append((stmt, f"{name} extended at the front while {other} is extended at the "
                              "end"))
    return out


def misaligned(fn: ast.FunctionDef | ast.AsyncFunctionDef,
               batch: str) -> list[tuple[ast.stmt, str]]:
    out: list[tuple[ast.stmt, str]] = []
    statements: list[ast.Assign | ast.Expr] = sorted(
        (s for s in subnodes(fn) if isinstance(s, (ast.Assign, ast.Expr))),
        key=lambda s: s.lineno)
    assigns = [s for s in statements if isinstance(s, ast.Assign) and len(s.targets) == 1]
    rolled = [(s, name) for s in assigns if (name := _batch_axis_reorder(s.value))]
    if len(rolled) == 1:
        stmt, name = rolled[0]
        target = stmt.targets[0]
        if isinstance(target, ast.Name) and target.id == name:
            out.append((stmt, f"{name} reordered along the batch axis while the other outputs "
                              "keep their order"))
    out.extend(_one_output_sorted(assigns, statements))
    out.extend(_opposite_concats(fn))
    out.extend(_reindexed_without_labels(fn, assigns))
    orders = {s.targets[0].id for s in assigns if isinstance(s.targets[0], ast.Name)
              and _is_order(s.value, batch)}
    gathered: list[tuple[ast.Assign, bool]] = []  # (statement, through an order)
    reorder_line = 0
    reorder_stmt: ast.stmt | None = None
    for item in statements:
        value = item.value
        reorders = (isinstance(value, ast.Call) and last_attr(value.func) in _REORDERS and (
            batch in {n.id for n in subnodes(value) if isinstance(n, ast.Name)}) and (
            not isinstance(item, ast.Assign) or (isinstance(item.targets[0], ast.Name)
                                                 and item.targets[0].id == batch)))
        if reorders and reorder_stmt is None:
            reorder_stmt, reorder_line = item, item.lineno
            continue
        if not isinstance(item, ast.Assign):
            continue
        direct, through = _gathered_from(value)
        if batch in direct:
            gathered.append((item, False))
        elif through & orders:
            gathered.append((item, True))
    if reorder_stmt is not None:
        before = [s for s, _ in gathered if s.lineno < reorder_line]
        after = [s for s, _ in gathered if s.lineno > reorder_line]
        if before and after:
            taken = ast.unparse(before[0].targets[0])[:20]
            out.append((reorder_stmt, f"{batch} reordered after {taken} was taken from it: "
                                      f"{taken} no longer lines up with what is gathered after"))
    out += _column_reordered(assigns)
    plain = [s for s, o in gathered if not o]
    ordered = [s for s, o in gathered if o]
    labelled = [[s for s in group if _LABELISH.search(ast.unparse(s.targets[0]))]
                for group in (plain, ordered)]
    if orders and plain and ordered and bool(labelled[0]) != bool(labelled[1]):
        # (inputs in one order, targets in the other; a group with both is self-consistent)
        stmt = (labelled[0] or plain)[0]
        out.append((stmt, f"{ast.unparse(stmt.targets[0])[:20]} gathered in the batch's own "
                          "order while other outputs follow an index order"))
    return out


def _column_reordered(assigns: list[ast.Assign]) -> list[tuple[ast.stmt, str]]:
    """`cols = list(zip(*batch)); cols[1] = tuple(sorted(cols[1], key=...))`: one column of
    the transposed batch (the targets) reordered while the others keep the samples' order."""
    columns = {s.targets[0].id for s in assigns if isinstance(s.targets[0], ast.Name) and any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "zip"
        and n.args and isinstance(n.args[0], ast.Starred) for n in subnodes(s.value))}
    reordered = []
    for stmt in assigns:
        target = stmt.targets[0]
        if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and target.value.id in columns and isinstance(literal(target.slice), int)):
            continue
        own = ast.unparse(target)
        if any(isinstance(n, ast.Call) and last_attr(n.func) in _REORDERS and any(
                ast.unparse(a) == own for a in n.args) for n in subnodes(stmt.value)):
            reordered.append(stmt)
    if len(reordered) != 1:
        return []  # (every column sorted by the same key stays aligned)
    stmt = reordered[0]
    return [(stmt, f"{ast.unparse(stmt.targets[0])} reordered on its own: the other columns of "
                   "the batch keep the samples' order")]


def mismatched_partners(tree: ast.AST) -> list[tuple[ast.AST, str, str]]:
    """Mixup partners drawn by two different batch permutations: images mixed with
    `x.flip(0)`, targets with `target.roll(1, 0)`. Returns (target call, its way, the inputs'
    way) for each target reordered unlike every input."""
    inputs: set[str] = set()
    labels: list[tuple[ast.AST, str]] = []
    every = list(subnodes(tree))
    perms = {n.targets[0].id for n in every if isinstance(n, ast.Assign) and isinstance(
        n.targets[0], ast.Name) and isinstance(n.value, ast.Call) and last_attr(
        n.value.func) in ("randperm", "permutation")}  # perm = torch.randperm(b)
    for node in every:
        name, kind = "", ""
        if isinstance(node, ast.Call) and (name := _batch_axis_reorder(node)):
            kind = last_attr(node.func) + "()"
        elif (perms and isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
              and isinstance(node.slice, ast.Name) and node.slice.id in perms
              and isinstance(node.ctx, ast.Load)):
            name, kind = node.value.id, "an index permutation"  # clips[perm]
        if not name:
            continue
        if _LABELISH.search(name):
            labels.append((node, kind))
        else:
            inputs.add(kind)
    return [(call, kind, "/".join(sorted(inputs))) for call, kind in labels
            if inputs and kind not in inputs]
