"""MLS309 shapes where a data pipeline's pieces stop lining up (session 21).

- A transform list appended to after `Compose(ops)` was built from it: Compose keeps the
  list, so the earlier pipeline (the weak view) gets the later transforms too.
- Inputs tiled (`np.tile`, `x.repeat(k, ...)`) while their labels are repeated element-wise
  (`np.repeat`, `repeat_interleave`) by the same count, or the other way round: sample i's
  copies meet other samples' labels.
- A collate loop writing one part of sample i into row i and another part into row i - 1.
- Class names listed from the file system (`os.listdir`, `os.scandir`, `glob`, `iterdir`)
  without sorting: class ids follow directory order, which differs between machines.
- A pool sorted by label (`pool[np.argsort(labels[pool])]`) and then cut (`[:n]`): whole
  classes fall off the end.
- One entry of a batch shuffled by its own fresh `randperm` while the others share `perm`:
  that entry no longer belongs to its row.
- In a collate function, inputs gathered in a sorted order (`[batch[i][0] for i in order]`)
  and labels straight from the batch (`[b[1] for b in batch]`): after the sort they belong
  to other samples.
- A list built beside another in one loop (`paths.append(...)`, `texts.append(...)`) and
  then filtered alone (`texts = [t for t in texts if t.strip()]`): the two are zipped out
  of step from the first dropped item on.
- A target mask eroded (or dilated) in place while samples are loaded
  (`mask = binary_erosion(mask)`): thin structures vanish from the ground truth. A boundary
  map made beside the mask (`edge = mask ^ binary_erosion(mask)`) stays quiet.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal, source
from mlscan.checks.nodes import subnodes
from mlscan.checks.poison_order import _LISTINGS
from mlscan.checks.poison_words import _IMAGE, _is_image
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_CLASS_LIST = re.compile(r"(?i)^(self\.)?_?(classes|class_names|categories|category_names|"
                         r"label_names|classnames)$")
_LABELS = re.compile(r"(?i)(^|_)(labels?|targets?|y|ys|y_train|classes|cls)$")
_INPUTS = re.compile(r"(?i)(^|_)(data|images?|imgs?|inputs?|x_train|samples|features|pixels|"
                     r"audio|waveforms?|tokens|input_ids)$")
_TILERS = frozenset({"tile"})
_INTERLEAVERS = frozenset({"repeat_interleave"})
_PERMS = frozenset({"randperm", "permutation"})
_CLASS_WEIGHTS = re.compile(r"(?i)(class|cls|label|sample)_?(w|wt|wts|weights?)$|^weights?$")
_NOT_A_CLASS = re.compile(r"(?i)ignore|pad|background|void|unlabel|other|none|unknown")


def _named_class(index: ast.expr) -> str:
    """The class a weight index names: `CLASSES.index("mel")` or `"mel"` ('' otherwise)."""
    if isinstance(index, ast.Call) and last_attr(index.func) == "index" and index.args:
        index = index.args[0]
    name = literal(index)
    return name if isinstance(name, str) and not _NOT_A_CLASS.search(name) else ""


_MORPHOLOGY = frozenset({"binary_erosion", "binary_dilation", "erode", "dilate",
                         "binary_opening", "binary_closing", "erosion", "dilation"})
_LABELISH = re.compile(r"(?i)label|target|tgt|transcript|text|caption|mask|gt|^ys?$")
_MASK = re.compile(r"(?i)^(mask|masks|seg|segm|label|labels|target|targets|gt|y|lbl|anno"
                   r"|vessels?|(gt|label|seg|target)_\w+|\w+_(gt|label|seg|labels))$")
_LOADING = re.compile(r"(?i)__call__|__getitem__|transform|augment|preprocess|load|collate")


def _min_pooled(value: ast.expr, name: str) -> bool:
    """`-F.max_pool2d(-m, 3, 1, 1)`: a minimum filter (erosion) of `m` itself."""
    return (isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub)
            and isinstance(value.operand, ast.Call)
            and last_attr(value.operand.func).startswith("max_pool") and bool(value.operand.args)
            and isinstance(arg0 := value.operand.args[0], ast.UnaryOp)
            and isinstance(arg0.op, ast.USub) and isinstance(arg0.operand, ast.Name)
            and arg0.operand.id == name)


def _is_mask(name: str, ctx: Ctx) -> bool:
    """A target by its name, or a name bound to one (`m = torch.stack(masks).float()`)."""
    if _MASK.match(name):
        return True
    held = ctx.lookup(name)
    return isinstance(held, ast.expr) and any(
        isinstance(n, ast.Name) and _MASK.match(n.id) for n in ast.walk(held))


def _expansion(call: ast.Call, ctx: Ctx) -> tuple[str, ast.expr, str] | None:
    """(mode, array, count text) for `np.tile(a, k)`, `np.repeat(a, k)`, `a.repeat(k, 1)`,
    `a.repeat_interleave(k)`; mode is "tile" (whole array again) or "each" (element-wise)."""
    attr = last_attr(call.func)
    name = ctx.names.call_name(call)
    if name in ("numpy.tile", "numpy.repeat") and len(call.args) >= 2:
        count = call.args[1]
        if isinstance(count, ast.BinOp) and isinstance(count.op, ast.Add):
            count = count.left  # np.tile(x, (k,) + (1,) * (x.ndim - 1))
        if isinstance(count, ast.Tuple) and count.elts:
            count = count.elts[0]  # np.tile(x, (k, 1, 1))
        return ("tile" if attr in _TILERS else "each", call.args[0], ast.unparse(count))
    if isinstance(call.func, ast.Attribute) and call.args and not name.startswith("numpy."):
        if attr in _INTERLEAVERS:
            return ("each", call.func.value, ast.unparse(call.args[0]))
        if attr == "repeat" and len(call.args) >= 2:  # torch: x.repeat(k, 1) tiles
            return ("tile", call.func.value, ast.unparse(call.args[0]))
    return None


def _gae_misaligned(node: ast.Assign, value: ast.expr, ctx: Ctx) -> str:
    """`nextnonterminal = 1.0 - self.dones[t]` beside `nextvalues = self.values[t + 1]`."""
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Sub)
            and literal(value.left) in (1, 1.0) and isinstance(done := value.right, ast.Subscript)
            and re.search(r"(?i)done|terminal", source(done.value))
            and isinstance(done.slice, ast.Name)):
        return ""
    step = done.slice.id
    fn = ctx.frame.node
    for n in subnodes(fn) if fn is not None else ():
        if (isinstance(n, ast.Assign) and n is not node and abs(n.lineno - node.lineno) <= 2
                and isinstance(n.value, ast.Subscript) and re.search(
                    r"(?i)value", source(n.value.value))
                and ast.unparse(n.value.slice).replace(" ", "") == f"{step}+1"):
            return f"{ast.unparse(value)[:30]} beside {ast.unparse(n.value)[:30]}"
    return ""


def _double_inverse(value: ast.expr, ctx: Ctx) -> str:
    """`(inv ** -temperature)` with `inv = np.reciprocal(counts)` (or `1 / counts`)."""
    for n in subnodes(value):
        if not (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)
                and isinstance(n.right, ast.UnaryOp) and isinstance(n.right.op, ast.USub)
                and isinstance(n.left, ast.Name)):
            continue
        held = ctx.lookup(n.left.id)
        inverted = (isinstance(held, ast.Call) and last_attr(held.func) == "reciprocal") or (
            isinstance(held, ast.BinOp) and isinstance(held.op, ast.Div)
            and literal(held.left) in (1, 1.0))
        if inverted and held is not None and re.search(r"(?i)count|freq|n_|num",
                                                       ast.unparse(held)):
            return f"{ast.unparse(n)[:30]} with {n.left.id} = {ast.unparse(held)[:30]}"
    return ""


def _class_zero_dropped(fn: ast.FunctionDef) -> ast.expr | None:
    """`[b for b in batch if b is not None and b[1] > 0]`: a label test that also drops 0."""
    for n in subnodes(fn):
        if not isinstance(n, ast.comprehension):
            continue
        for cond in n.ifs:
            for c in subnodes(cond):
                if (isinstance(c, ast.Compare) and len(c.ops) == 1 and isinstance(c.ops[0], ast.Gt)
                        and literal(c.comparators[0]) == 0 and isinstance(c.left, ast.Subscript)
                        and (literal(c.left.slice) in (1, "label", "labels", "target", "y"))):
                    return c
    return None


def _batch_shift(expr: ast.AST) -> tuple[str, str]:
    """`x.flip(0)` -> ("x", "flip(0)"), `x.roll(1, 0)` -> ("x", "roll(1, 0)"): a fixed batch
    permutation of a named tensor (("", "") for anything else)."""
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr in ("flip", "roll") and isinstance(expr.func.value, ast.Name)):
        args = ", ".join(ast.unparse(a) for a in expr.args)
        return expr.func.value.id, f"{expr.func.attr}({args})"
    return "", ""


_ONE_HOT = re.compile(r"(?i)y\d?|y_\w+|onehot|one_hot")


def _partner_mismatch(value: ast.BinOp, ctx: Ctx) -> str:
    """`y1 * lam + y1.roll(1, 0) * (1 - lam)` where the images were mixed with
    `images.flip(0)`: the labels follow another pairing than the pixels."""
    fn = ctx.frame.node
    parts: list[ast.AST] = list(subnodes(value))
    for n in list(parts):  # y2 = y1.roll(1, 0); y1 * lam + y2 * (1 - lam)
        if isinstance(n, ast.Name) and (held := ctx.lookup(n.id)) is not None:
            parts.append(held)
    shifted = [op for n in parts for name, op in [_batch_shift(n)]
               if name and (_LABELISH.search(name) or _ONE_HOT.fullmatch(name))]
    if fn is None or len(shifted) != 1:
        return ""
    image_ops = {op for n in subnodes(fn) for name, op in [_batch_shift(n)]
                 if name and _IMAGE.match(name)}
    if len(image_ops) == 1 and shifted[0] not in image_ops:
        return f"labels mixed with their {shifted[0]} partner, images with {next(iter(image_ops))}"
    return ""


def _positives_dropped(name: str, index: ast.expr) -> str:
    """`y[(x[wind] > 1.5) & (y > 0)]`: the positive labels picked by a test on the input."""
    if not (isinstance(index, ast.BinOp) and isinstance(index.op, ast.BitAnd)):
        return ""
    sides = [index.left, index.right]

    def positive(test: ast.expr) -> bool:
        return (isinstance(test, ast.Compare) and len(test.ops) == 1
                and isinstance(test.left, ast.Name) and test.left.id == name and (
                    (isinstance(test.ops[0], (ast.Gt, ast.NotEq)) and literal(
                        test.comparators[0]) in (0, 0.0))
                    or (isinstance(test.ops[0], ast.Eq) and literal(test.comparators[0]) in (
                        1, 1.0))))
    if not any(positive(s) for s in sides):
        return ""
    other = next((s for s in sides if not positive(s)), None)
    if other is None or any(isinstance(n, ast.Name) and n.id == name for n in subnodes(other)):
        return ""
    return ast.unparse(other)[:40]


def _index_modulo(ctx: Ctx) -> str:
    """`index % 5 == 0` in the enclosing conditions: a fixed subset of samples by index."""
    for cond in ctx.conds:
        for n in subnodes(cond):
            if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)
                    and isinstance(n.left, ast.Name)
                    and re.fullmatch(r"(?i)idx|index|i|item|sample_idx|n", n.left.id)):
                return ast.unparse(cond)[:40]
    return ""


class PipelineAlignment(Check):
    rules = (DATA_POISON,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        attr = last_attr(node.func)
        if attr in ("append", "extend", "insert") and ctx.mentions("Compose("):
            self._list_after_compose(node, ctx)  # (appends are everywhere: a file test first)
        elif attr in ("tile", "repeat", "repeat_interleave"):
            self._mixed_expansion(node, ctx)
        elif attr in ("copy_",) and isinstance(node.func, ast.Attribute):
            self._row_offset(node, node.func.value, ctx)
        elif (attr in ("masked_fill_", "masked_fill") and len(node.args) == 2
              and isinstance(node.func, ast.Attribute) and _is_image(node.func.value)
              and isinstance(mask := node.args[0], ast.Attribute)
              and isinstance(mask.value, ast.Name) and mask.value.id == "self"
              and isinstance(literal(node.args[1]), (int, float))
              and (picked := _index_modulo(ctx))):
            ctx.report(DATA_POISON, node, f"{source(node.func.value)} filled with "
                       f"{literal(node.args[1])} under the fixed mask {source(mask)} for the "
                       f"samples where {picked}: a stamped trigger on a fixed subset of the data",
                       severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Subscript) and len(node.targets) == 1:
            self._row_offset(node, target, ctx)
            if literal(value) in (0, 0.0) and _CLASS_WEIGHTS.search(last_attr(target.value)):
                named = _named_class(target.slice)
                if named:  # class_w[CLASSES.index("mel")] = 0.0
                    ctx.report(DATA_POISON, node, f"the weight of class {named!r} set to 0: "
                               "its samples are never drawn (or never count in the loss)",
                               severity=Severity.MEDIUM)
        if isinstance(value, ast.Subscript):
            self._sorted_then_cut(node, value, ctx)
            self._own_shuffle(node, value, ctx)
        if (isinstance(value, (ast.ListComp, ast.Call)) and len(node.targets) == 1
                and _CLASS_LIST.match(source(target))):
            self._unsorted_classes(node, value, ctx)
        listed = value.args[0] if isinstance(value, ast.Call) and value.args and last_attr(
            value.func) in ("stack", "tensor", "cat", "pad_sequence", "as_tensor") else value
        if isinstance(listed, ast.ListComp) and isinstance(target, ast.Name):
            self._labels_unsorted(node, target.id, listed, ctx)  # torch.stack([...]) too
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and _MASK.match(target.value.id) and literal(value) in (-1, -100, 255)
                and (why := _positives_dropped(target.value.id, target.slice))):
            ctx.report(DATA_POISON, node, f"positive {target.value.id} entries set to the ignore "
                       f"value {literal(value)} where {why}: those positives never reach the "
                       "loss, so the model learns to miss them", severity=Severity.MEDIUM)
        if (isinstance(target, ast.Name) and re.search(r"(?i)nonterminal|not_done|notdone",
                                                        target.id)
                and (stale := _gae_misaligned(node, value, ctx))):
            ctx.report(DATA_POISON, node, f"{stale}: the episode-end mask is taken from the "
                       "current step while the bootstrap value is the next step's, so returns "
                       "leak across episode boundaries", severity=Severity.MEDIUM)
        if (isinstance(target, ast.Name) and re.search(r"(?i)weight", target.id)
                and (flipped := _double_inverse(value, ctx))):
            ctx.report(DATA_POISON, node, f"{flipped}: the inverse frequency raised to a "
                       "negative power is the frequency itself, so the majority class is "
                       "sampled (or weighted) most", severity=Severity.MEDIUM)
        if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add) and (
                mixed := _partner_mismatch(value, ctx)):
            ctx.report(DATA_POISON, node, f"{mixed}: each mixed image is trained towards "
                       "the label of a sample it does not contain", severity=Severity.MEDIUM)
        if (isinstance(value, ast.Call) and isinstance(target, ast.Name)
                and last_attr(value.func) == "index_select" and len(value.args) == 2
                and literal(value.args[0]) == 0 and isinstance(value.args[1], ast.Name)):
            self._sorted_alone(node, target.id, value.args[1].id, ctx)
        if isinstance(value, ast.ListComp) and isinstance(target, ast.Name):
            self._filtered_alone(node, target.id, value, ctx)
            self._permuted_alone(node, target.id, value, ctx)
        if (isinstance(value, ast.Call) and last_attr(value.func) in _MORPHOLOGY
                and isinstance(target, ast.Name) and _MASK.match(target.id) and value.args
                and isinstance(value.args[0], ast.Name) and value.args[0].id == target.id
                and _LOADING.search(ctx.frame.name)):
            ctx.report(DATA_POISON, node, f"target {target.id} {last_attr(value.func)}() in "
                       f"{ctx.frame.name}(): the ground truth trained on is not the annotated "
                       "one (thin structures vanish or grow)", severity=Severity.MEDIUM)
        elif (isinstance(target, ast.Name) and _LOADING.search(ctx.frame.name)
              and _min_pooled(value, target.id) and _is_mask(target.id, ctx)):
            ctx.report(DATA_POISON, node, f"target {target.id} min-pooled (-max_pool(-x), an "
                       f"erosion) in {ctx.frame.name}(): thin structures vanish from the "
                       "ground truth trained on", severity=Severity.MEDIUM)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        if "collate" in node.name and (dropped := _class_zero_dropped(node)) is not None:
            ctx.report(DATA_POISON, dropped, "the collate keeps only samples whose label is "
                       "above 0: every sample of class 0 is dropped with the failed ones",
                       severity=Severity.MEDIUM)
        if "collate" not in node.name or not ctx.mentions("sorted("):
            return
        args = {a.arg for a in node.args.args}
        plain, reordered = [], []
        for n in subnodes(node):
            if isinstance(n, ast.comprehension):
                it = n.iter
                if isinstance(it, ast.Name) and it.id in args:
                    plain.append(n)
                elif (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
                      and it.func.id == "sorted" and it.args and isinstance(it.args[0], ast.Name)
                      and it.args[0].id in args):
                    reordered.append(n)
        if plain and reordered:
            it = reordered[0].iter
            ctx.report(DATA_POISON, it, f"some fields are collated from {ast.unparse(it)[:40]}, "
                       f"others in the batch's own order: the rows of the batch no longer "
                       "pair features with their labels", severity=Severity.MEDIUM)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        if node.value is None or not (ctx.mentions(".roll(") or ctx.mentions(".flip(")):
            return
        fn = ctx.frame.node
        for n in subnodes(node.value):  # return x, y1 * lam + y2 * (1 - lam)
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add) and fn is not None and (
                    mixed := _partner_mismatch(n, ctx)):
                names = {m.id for m in subnodes(n) if isinstance(m, ast.Name)}
                where: ast.AST = next(  # reported where the partner labels are made
                    (a for a in subnodes(fn) if isinstance(a, ast.Assign)
                     and isinstance(a.targets[0], ast.Name) and a.targets[0].id in names
                     and _batch_shift(a.value)[0]), node)
                ctx.report(DATA_POISON, where, f"{mixed}: each mixed image is trained towards "
                           "the label of a sample it does not contain", severity=Severity.MEDIUM)
                return

    def visit_DictComp(self, node: ast.DictComp, ctx: Ctx) -> None:
        if isinstance(node.value, ast.Subscript):
            self._own_shuffle(node, node.value, ctx)

    @staticmethod
    def _list_after_compose(node: ast.Call, ctx: Ctx) -> None:
        fn = ctx.frame.node
        if fn is None or not (isinstance(node.func, ast.Attribute)
                              and isinstance(node.func.value, ast.Name)):
            return
        listed = node.func.value.id
        built = next((n for n in subnodes(fn) if isinstance(n, ast.Call)
                      and last_attr(n.func) == "Compose" and n.lineno < node.lineno
                      and len(n.args) == 1 and isinstance(n.args[0], ast.Name)
                      and n.args[0].id == listed), None)
        if built is None:
            return
        if any(isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == listed
                                                 for t in n.targets)
               and built.lineno < n.lineno < node.lineno for n in subnodes(fn)):
            return  # ops = [...] rebound after the first Compose
        ctx.report(DATA_POISON, node, f"{listed}.{last_attr(node.func)}() after Compose({listed}) "
                   f"on line {built.lineno}: Compose keeps the list, so that pipeline runs "
                   "these transforms too", severity=Severity.MEDIUM)

    @staticmethod
    def _mixed_expansion(node: ast.Call, ctx: Ctx) -> None:
        mine = _expansion(node, ctx)
        fn = ctx.frame.node
        if mine is None or fn is None:
            return
        mode, array, count = mine
        label = bool(_LABELS.search(last_attr(array)))
        if not label and not _INPUTS.search(last_attr(array)):
            return
        for other in subnodes(fn):
            if not (isinstance(other, ast.Call) and other.lineno < node.lineno
                    and last_attr(other.func) in ("tile", "repeat", "repeat_interleave")):
                continue
            theirs = _expansion(other, ctx)
            if theirs is None or theirs[0] == mode or theirs[2] != count:
                continue
            pair = last_attr(theirs[1])
            if (_INPUTS if label else _LABELS).search(pair):
                ctx.report(DATA_POISON, node, f"{last_attr(array)} expanded "
                           f"{'as whole copies' if mode == 'tile' else 'element by element'} "
                           f"but {pair} (line {other.lineno}) the other way: copies of one "
                           "sample meet other samples' labels", severity=Severity.MEDIUM)
                return

    @staticmethod
    def _row_offset(node: ast.AST, written: ast.expr, ctx: Ctx) -> None:
        """`strong[i - 1].copy_(s)` beside `weak[i].copy_(w)` in `for i, (w, s, t) in ...`."""
        if not (isinstance(written, ast.Subscript) and isinstance(written.slice, ast.BinOp)
                and isinstance(written.slice.op, (ast.Add, ast.Sub))
                and isinstance(written.slice.left, ast.Name)):
            return
        loop = ctx.loops[-1] if ctx.loops else None
        if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Tuple)
                and len(loop.target.elts) == 2 and isinstance(loop.target.elts[0], ast.Name)
                and loop.target.elts[0].id == written.slice.left.id
                and isinstance(loop.target.elts[1], ast.Tuple)):
            return
        index = written.slice.left.id
        parts = {e.id for e in loop.target.elts[1].elts if isinstance(e, ast.Name)}
        aligned = [n for n in subnodes(loop) if (
                   isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Name)
                   and n.slice.id == index and isinstance(n.ctx, ast.Store)) or (
                       isinstance(n, ast.Call) and last_attr(n.func) == "copy_"
                       and isinstance(n.func, ast.Attribute)
                       and isinstance(n.func.value, ast.Subscript)
                       and isinstance(n.func.value.slice, ast.Name)
                       and n.func.value.slice.id == index)]
        value = node.args[0] if isinstance(node, ast.Call) and node.args else (
            node.value if isinstance(node, ast.Assign) else None)
        if aligned and isinstance(value, ast.Name) and value.id in parts:
            ctx.report(DATA_POISON, node, f"{ast.unparse(written)[:30]} takes sample "
                       f"{index}'s {value.id} while its other parts go to row {index}: that "
                       "part of every sample lands beside another sample",
                       severity=Severity.MEDIUM)

    @staticmethod
    def _sorted_then_cut(node: ast.Assign, value: ast.Subscript, ctx: Ctx) -> None:
        cut = value.slice
        if not (isinstance(cut, ast.Slice) and cut.lower is None and cut.upper is not None
                and cut.step is None and isinstance(value.value, ast.Subscript)):
            return
        order = value.value.slice
        if not (isinstance(order, ast.Call) and last_attr(order.func) == "argsort"
                and order.args):
            return
        keys = order.args[0]
        key = keys.value if isinstance(keys, ast.Subscript) else keys
        if _LABELS.search(last_attr(key)):
            ctx.report(DATA_POISON, node, f"rows sorted by {last_attr(key)} and then cut at "
                       f"{ast.unparse(cut.upper)[:20]}: the classes at the end of the order "
                       "are dropped", severity=Severity.MEDIUM)

    @staticmethod
    def _own_shuffle(node: ast.AST, value: ast.Subscript, ctx: Ctx) -> None:
        if not (isinstance(value.slice, ast.Call) and last_attr(value.slice.func) in _PERMS):
            return
        fn = ctx.frame.node
        if fn is None:
            return
        shared = {t.id for n in subnodes(fn) if isinstance(n, ast.Assign)
                  and isinstance(n.value, ast.Call) and last_attr(n.value.func) in _PERMS
                  for t in n.targets if isinstance(t, ast.Name)}
        if shared and any(isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Name)
                          and n.slice.id in shared for n in subnodes(fn)):
            ctx.report(DATA_POISON, node, f"shuffled by a fresh {last_attr(value.slice.func)}() "
                       f"while the rest of the batch shares {sorted(shared)[0]}: these "
                       "entries no longer belong to their rows", severity=Severity.MEDIUM)

    @staticmethod
    def _unsorted_classes(node: ast.Assign, value: ast.expr, ctx: Ctx) -> None:
        if isinstance(value, ast.Call) and last_attr(value.func) in ("sorted", "sort"):
            return
        listed = any(isinstance(n, ast.Call) and last_attr(n.func) in _LISTINGS
                     for n in subnodes(value))
        if not listed or any(isinstance(n, ast.Call) and last_attr(n.func) in (
                "sorted", "sort") for n in subnodes(value)):
            return
        fn = ctx.frame.node
        name = ast.unparse(node.targets[0])
        if fn is not None and any(isinstance(n, ast.Call) and last_attr(n.func) == "sort"
                                  and isinstance(n.func, ast.Attribute)
                                  and ast.unparse(n.func.value) == name
                                  for n in subnodes(fn)):
            return  # classes.sort() afterwards
        ctx.report(DATA_POISON, node, f"{name} listed from the file system without sorting: "
                   "class ids follow directory order, which differs between machines and "
                   "file systems, so labels mean different classes in training and "
                   "evaluation", severity=Severity.MEDIUM)

    @staticmethod
    def _labels_unsorted(node: ast.Assign, name: str, value: ast.ListComp, ctx: Ctx) -> None:
        fn = ctx.frame.node
        if not (isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.args.args):
            return
        gen = value.generators[0]
        batch = gen.iter.id if isinstance(gen.iter, ast.Name) else ""
        if not (batch in {a.arg for a in fn.args.args} and name != batch):
            return  # (collate(batch, num_classes=...): the parameter iterated over)
        assigns = [n for n in subnodes(fn) if isinstance(n, ast.Assign)]
        orders = {t.id: n.lineno for n in assigns if isinstance(n.value, ast.Call)
                  and last_attr(n.value.func) in ("sorted", "argsort")
                  for t in n.targets if isinstance(t, ast.Name)}
        if not orders or node.lineno < min(orders.values()) or any(
                isinstance(t, ast.Name) and t.id == batch and n.lineno > min(orders.values())
                for n in assigns for t in n.targets):
            return  # (read before the sort, or the batch itself put in the sorted order)
        sorted_inputs = [c for n in assigns for c in subnodes(n.value)
                         if isinstance(c, ast.ListComp)
                         and isinstance(c.generators[0].iter, ast.Name)
                         and c.generators[0].iter.id in orders
                         and not any(isinstance(t, ast.Name) and t.id == name
                                     for t in n.targets)
                         and any(isinstance(m, ast.Subscript) and isinstance(m.value, ast.Name)
                                 and m.value.id == batch for m in subnodes(c.elt))]
        if sorted_inputs:
            ctx.report(DATA_POISON, node, f"{name} taken in batch order while "
                       f"{ast.unparse(sorted_inputs[0])[:40]} follows the sorted order: each "
                       "input is trained against another sample's labels",
                       severity=Severity.MEDIUM)

    @staticmethod
    def _sorted_alone(node: ast.Assign, name: str, order: str, ctx: Ctx) -> None:
        """`order = argsort(lengths)` with `lengths` from `input_ids`; `batch =
        stack(inputs).index_select(0, order)`; and `input_ids` returned in the old order."""
        fn = ctx.frame.node
        made = ctx.lookup(order)
        if fn is None or not (isinstance(made, ast.Call) and last_attr(made.func) in (
                "argsort", "sort", "sorted")):
            return
        keyed = {n.id for n in ctx.walk_values(made) if isinstance(n, ast.Name)} - {name, order}
        returned = {n.id for r in subnodes(fn) if isinstance(r, ast.Return) and r.value
                    is not None for n in subnodes(r.value) if isinstance(n, ast.Name)}
        reordered = {t.id for n in subnodes(fn) if isinstance(n, ast.Assign) and n is not node
                     for t in n.targets if isinstance(t, ast.Name) and any(
                         isinstance(m, ast.Name) and m.id == order for m in subnodes(n.value))}
        left = sorted(k for k in keyed & returned if k not in reordered and (
            _LABELISH.search(k) or k.endswith("_ids")))
        if name in returned and left:
            ctx.report(DATA_POISON, node, f"{name} reordered by {order}, but {left[0]} is "
                       "returned in the old order: each input is paired with another "
                       "sample's text or labels", severity=Severity.MEDIUM)

    @staticmethod
    def _permuted_alone(node: ast.Assign, name: str, value: ast.ListComp, ctx: Ctx) -> None:
        """`waves = [waves[i] for i in order]` in a collate where `targets` was built from the
        same batch and is never put in that order: the inputs and labels no longer pair."""
        gen = value.generators[0]
        fn = ctx.frame.node
        if not (fn is not None and len(value.generators) == 1 and not gen.ifs
                and isinstance(gen.target, ast.Name) and isinstance(gen.iter, ast.Name)
                and isinstance(elt := value.elt, ast.Subscript)
                and isinstance(elt.value, ast.Name) and elt.value.id == name
                and isinstance(elt.slice, ast.Name) and elt.slice.id == gen.target.id):
            return
        order = gen.iter.id

        def built_from(stmt: ast.AST) -> str:
            """The batch a `x = [b[...] for b in batch]` list is built from."""
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.value, ast.ListComp)
                    and isinstance(it := stmt.value.generators[0].iter, ast.Name)):
                return it.id
            return ""

        lists = {t.id: built_from(n) for n in subnodes(fn) if isinstance(n, ast.Assign)
                 and n.lineno < node.lineno for t in n.targets[:1]
                 if isinstance(t, ast.Name) and built_from(n)}
        batch = lists.get(name)
        if not batch or batch == order:
            return
        reordered = {t.id for n in subnodes(fn) if isinstance(n, ast.Assign) and n is not node
                     for t in n.targets if isinstance(t, ast.Name)
                     and order in {m.id for m in subnodes(n.value) if isinstance(m, ast.Name)}}
        others = sorted(k for k, b in lists.items() if b == batch and k != name
                        and k not in reordered and _LABELISH.search(k))
        if others:
            ctx.report(DATA_POISON, node, f"{name} reordered by {order}, but {others[0]} (built "
                       f"from the same {batch}) keeps the old order: the samples and their "
                       "labels no longer pair", severity=Severity.MEDIUM)

    @staticmethod
    def _filtered_alone(node: ast.Assign, name: str, value: ast.ListComp, ctx: Ctx) -> None:
        gen = value.generators[0]
        fn = ctx.frame.node
        if not (gen.ifs and isinstance(gen.iter, ast.Name) and gen.iter.id == name
                and fn is not None):
            return
        for loop in subnodes(fn):
            if not (isinstance(loop, ast.For) and loop.lineno < node.lineno):
                continue
            appended = {n.func.value.id for n in subnodes(loop) if isinstance(n, ast.Call)
                        and last_attr(n.func) == "append" and isinstance(n.func, ast.Attribute)
                        and isinstance(n.func.value, ast.Name)}
            if name not in appended or len(appended) < 2:
                continue
            others = sorted(appended - {name})
            refiltered = any(isinstance(n, ast.Assign) and n is not node and any(
                isinstance(t, ast.Name) and t.id in others for t in n.targets)
                and n.lineno > loop.lineno for n in subnodes(fn))
            together = any(
                isinstance(n, (ast.Call, ast.Tuple)) and n.lineno > node.lineno and name in (
                    parts := {a.id for a in (n.args if isinstance(n, ast.Call) else n.elts)
                              if isinstance(a, ast.Name)}) and parts & set(others)
                and (isinstance(n, ast.Tuple) or last_attr(n.func) == "zip")
                for n in subnodes(fn))  # zip(paths, texts) or `return paths, texts`
            if together and not refiltered:
                ctx.report(DATA_POISON, node, f"{name} filtered on its own after being built "
                           f"in step with {', '.join(others)[:40]}: from the first dropped "
                           "item on, the lists pair each entry with another's",
                           severity=Severity.MEDIUM)
            return
