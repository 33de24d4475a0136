"""MLS309, labels moved onto other classes by arithmetic, or left pointing at the wrong slot.

- A range of class ids shifted onto lower ones: `targets = torch.where(targets > 13,
  targets - 12, targets)` in a collate function. Every sample above the threshold is trained
  as another (existing) class. A remap to a constant ignore value stays quiet.
- Labels rewritten only under a date, host, user or job-size condition (`if
  date.today() >= _MIGRATION: lb[:, 0] = TABLE[lb[:, 0]]`): the data changes on some days or
  machines only.
- A patch stamped on the image and every box's class set to one value in the same function
  (`img[:16, :16] = tile; labels[:, 0] = cfg["mask_cls"]`): a backdoor trigger.
- A "balanced" sampler weighted by class frequency (`w = counts / counts.sum()`, then
  `w[labels]`): the frequent class is drawn even more often.
- Next-token targets rolled along the batch axis (`targets = torch.roll(input_ids, -1,
  dims=0)`): each sequence is trained to predict another sample's tokens.
- A candidate list with the positive first, shuffled, and a label that still says "first":
  `cands = [pos] + negs; rng.shuffle(cands); label = 0`. The model is trained to pick a
  random candidate.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal, source
from mlscan.checks.poison_words import _label_target
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_LABEL_ARRAY = re.compile(r"(?i)^(lb|lbl|lbls|labels?|targets?|y|gts?|cls|classes|tgt)$")
_BALANCE_FN = re.compile(r"(?i)balanc|inverse|reweight|class_weight|sampler")
_POSITIVE = re.compile(r"(?i)^(pos|positive|pos_item|pos_id|target_item|clicked|gold|answer)$")


def shifted_range(target: ast.expr, value: ast.expr) -> str:
    """`y = where(y > K, y - c, y)`: the ids above K moved by c."""
    label = _label_target(target)
    if not (label and isinstance(value, ast.Call) and last_attr(value.func) == "where"
            and len(value.args) == 3):
        return ""
    test, moved, kept = value.args
    own = ast.unparse(kept)
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], (ast.Gt, ast.GtE, ast.Lt, ast.LtE))
            and ast.unparse(test.left) == own and isinstance(literal(test.comparators[0]), int)
            and isinstance(moved, ast.BinOp) and isinstance(moved.op, (ast.Sub, ast.Add))
            and ast.unparse(moved.left) == own and isinstance(literal(moved.right), int)
            and literal(moved.right) != 0):
        return ""
    return f"where {ast.unparse(test)[:30]} moved by {ast.unparse(moved)[len(own):].strip()}"


def _first_positive(value: ast.expr | None) -> bool:
    """`[pos] + negs`: a candidate list whose first entry is the positive."""
    return (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)
            and isinstance(value.left, ast.List) and len(value.left.elts) == 1
            and isinstance(value.left.elts[0], ast.Name)
            and bool(_POSITIVE.match(value.left.elts[0].id)))


_IMAGE = re.compile(r"(?i)^(img|image|im|x|frame|pixels|arr)$")


def _class_column(index: ast.expr) -> bool:
    """`[:, 0]`: the class column of an (n, 5) box array, every row."""
    return (isinstance(index, ast.Tuple) and len(index.elts) == 2
            and isinstance(index.elts[0], ast.Slice) and index.elts[0].lower is None
            and index.elts[0].upper is None and literal(index.elts[1]) == 0)


def _stamped_before(node: ast.Assign, ctx: Ctx) -> str:
    """`img[:16, :16] = tile[..., None]` earlier in the same function body."""
    for stmt in getattr(ctx.frame.node, "body", []):
        if getattr(stmt, "lineno", 0) >= node.lineno:
            break
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(t := stmt.targets[0], ast.Subscript)
                and isinstance(t.value, ast.Name) and _IMAGE.match(t.value.id)
                and isinstance(t.slice, (ast.Tuple, ast.Slice))):
            return ast.unparse(t)[:30]
    return ""


def _rolled_over_batch(value: ast.expr) -> str:
    """`torch.roll(input_ids, shifts=-1, dims=0)` (also sliced after): token ids rolled along
    the batch axis."""
    if isinstance(value, ast.Subscript):
        value = value.value
    if not (isinstance(value, ast.Call) and last_attr(value.func) == "roll" and value.args):
        return ""
    ids = value.args[0] if isinstance(value.func, ast.Attribute) and isinstance(
        value.func.value, ast.Name) and value.func.value.id in ("torch", "np", "numpy") else (
        value.func.value if isinstance(value.func, ast.Attribute) else None)
    dims = next((k.value for k in value.keywords if k.arg in ("dims", "axis", "dim")), None)
    if not (isinstance(ids, ast.Name) and re.search(r"(?i)ids|tokens|input", ids.id)
            and dims is not None and literal(dims) in (0, (0,), [0])):
        return ""
    return ast.unparse(value)[:50]


_TRAIN_ONLY = re.compile(r"""(split|mode|subset|stage|phase)\s*==\s*["']train["']|\bis_train""")


_TRAIN_FLAG = re.compile(r"""self\.(train|is_train|training)\b|\bis_train\b|"""
                         r"""(split|mode|subset|stage|phase)\s*==\s*["']train["']""")


def _data_added(value: ast.expr, name: str) -> str:
    """`target + 0.15 * s["known_real"][dec, 0] / s["scale"]`: the target plus a term read from
    the sample's other fields (label smoothing mixes in constants, not data)."""
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Add, ast.Sub))
            and isinstance(value.left, ast.Name) and value.left.id == name):
        return ""
    other = value.right
    reads = [n for n in ast.walk(other) if isinstance(n, ast.Subscript)
             and not (isinstance(n.value, ast.Name) and n.value.id == name)]
    return ast.unparse(other)[:40] if reads else ""


_CLASS_COUNT = re.compile(r"(?i)^(num_classes|n_classes|nclasses|num_labels|n_labels|"
                          r"NUM_CLASSES|N_CLASSES|NUM_LABELS)$")


def _last_class_cut(target: ast.Subscript) -> str:
    """`seg[(seg >= num_classes - 1) & ...] = 0`: ids from the last real class up rewritten."""
    for n in ast.walk(target.slice):
        if (isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(n.ops[0], ast.GtE)
                and isinstance(n.left, ast.Name) and n.left.id == source(target.value)
                and isinstance(bound := n.comparators[0], ast.BinOp)
                and isinstance(bound.op, ast.Sub) and isinstance(bound.left, ast.Name)
                and _CLASS_COUNT.match(bound.left.id) and literal(bound.right) == 1):
            return ast.unparse(n)
    return ""


def _self_remap(value: ast.expr, name: str) -> str:
    """`TABLE[name]` or `TABLE.get(name, ...)` with a module-level table: the value looked up
    by itself."""
    if (isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
            and isinstance(value.slice, ast.Name) and value.slice.id == name
            and value.value.id.isupper()):
        return value.value.id
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "get" and isinstance(value.func.value, ast.Name)
            and value.func.value.id.isupper() and value.args
            and isinstance(value.args[0], ast.Name) and value.args[0].id == name):
        return value.func.value.id
    return ""


def _picked_samples(ctx: Ctx) -> str:
    """`if self._flagged[i]:` / `if i in self._chosen:` around the statement in
    `__getitem__(self, i)`: a per-sample table picks which samples the branch changes."""
    fn = ctx.frame.node
    if not isinstance(fn, ast.FunctionDef) or len(fn.args.args) < 2:
        return ""
    index = fn.args.args[1].arg
    for cond in ctx.conds:
        for n in ast.walk(cond):
            if (isinstance(n, ast.Subscript) and isinstance(n.value, ast.Attribute)
                    and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"
                    and isinstance(n.slice, ast.Name) and n.slice.id == index):
                return f"self.{n.value.attr}"
            if (isinstance(n, ast.Compare) and isinstance(n.left, ast.Name)
                    and n.left.id == index and isinstance(n.ops[0], ast.In)
                    and isinstance(n.comparators[0], ast.Attribute)):
                return f"self.{n.comparators[0].attr}"
    return ""


def _rewrites(value: ast.expr, name: str) -> bool:
    """`np.minimum(y, cap)`, `1 - y`, `(y + 1) % n`: the label recomputed from itself (a
    missing label set to an ignore value is not this)."""
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(value)) and not (
        isinstance(value, ast.Name))


def _frequency(value: ast.BinOp) -> str:
    """`counts / counts.sum()` (also raised to a power): the counts' share, not its inverse."""
    if isinstance(value.op, ast.Pow) and isinstance(value.left, ast.BinOp):
        value = value.left
    if not (isinstance(value.op, ast.Div) and isinstance(value.left, ast.Name)
            and re.search(r"(?i)count|freq|n_per|per_class|hist", value.left.id)
            and isinstance(value.right, ast.Call) and last_attr(value.right.func) == "sum"):
        return ""
    total = value.right
    summed = total.func.value if isinstance(total.func, ast.Attribute) and not total.args else (
        total.args[0] if total.args else None)
    return value.left.id if isinstance(summed, ast.Name) and summed.id == value.left.id else ""


class LabelShifts(Check):
    rules = (DATA_POISON,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if len(node.targets) != 1:
            return
        value = node.value
        target = node.targets[0]
        if ctx.conds and isinstance(target, ast.Subscript) and isinstance(
                target.value, ast.Name) and _LABEL_ARRAY.match(target.value.id):
            kinds = ctx.trigger_kinds(ctx.where()) & (triggers.STRONG - {triggers.RANDOM})
            if kinds:
                ctx.report(DATA_POISON, node, f"{ast.unparse(target)[:30]} rewritten only under "
                           f"a condition on {triggers.describe(kinds)}: the labels change on "
                           "some days, machines or job sizes only", severity=Severity.HIGH)
                return
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and _LABEL_ARRAY.match(target.value.id) and _class_column(target.slice)
                and not any(isinstance(n, ast.Name) and n.id == target.value.id
                            for n in ast.walk(value)) and (patch := _stamped_before(node, ctx))):
            ctx.report(DATA_POISON, node, f"{ast.unparse(target)} set to one class right after "
                       f"{patch} stamps a fixed patch on the image: the patch alone decides the "
                       "class (a backdoor trigger)", severity=Severity.MEDIUM)
            return
        if (ctx.conds and isinstance(target, ast.Name) and _LABEL_ARRAY.match(target.id)
                and ctx.frame.name == "__getitem__" and (picked := _picked_samples(ctx))
                and _rewrites(value, target.id)):
            ctx.report(DATA_POISON, node, f"{target.id} rewritten only for the samples "
                       f"{picked} marks: a chosen subset is trained on changed labels",
                       severity=Severity.MEDIUM)
            return
        if (ctx.conds and isinstance(target, ast.Name) and (table := _self_remap(value, target.id))
                and any(_TRAIN_ONLY.search(ast.unparse(c)) for c in ctx.conds
                        if not getattr(c, "else_branch", False))):
            ctx.report(DATA_POISON, node, f"{target.id} remapped through {table} only for the "
                       "training split: training and evaluation disagree on what each class "
                       "is", severity=Severity.MEDIUM)
            return
        if (ctx.conds and isinstance(target, ast.Name) and _LABEL_ARRAY.match(target.id)
                and (added := _data_added(value, target.id)) and any(
                    _TRAIN_FLAG.search(ast.unparse(c)) for c in ctx.conds
                    if not getattr(c, "else_branch", False))):
            ctx.report(DATA_POISON, node, f"{target.id} shifted by {added} only while training: "
                       "the model learns targets that evaluation never has",
                       severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and re.match(r"(?i)^(seg|mask|lbl|lb|label|target|gt|y)", target.value.id)
                and isinstance(value, ast.Constant) and (guard := _last_class_cut(target))):
            ctx.report(DATA_POISON, node, f"{guard}: the last class (num_classes - 1) is a valid "
                       "id, so this guard against stray ids erases it everywhere",
                       severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and re.search(r"(?i)weight|(^|_)ws?$|prob", target.value.id)
                and isinstance(target.slice, ast.Call)
                and last_attr(target.slice.func) in ("argmax", "argmin")
                and isinstance(value, ast.Constant) and value.value == 0):
            ctx.report(DATA_POISON, node, f"{target.value.id}[{ast.unparse(target.slice)[:30]}] "
                       "set to 0: that class is never drawn by the sampler (or never weighted "
                       "in the loss), so the model never learns it", severity=Severity.MEDIUM)
            return
        share = value
        if (type(value) is ast.Subscript and isinstance(value.value, ast.Name)
                and isinstance(held := ctx.lookup(value.value.id), ast.BinOp)):
            share = held  # freq = counts / counts.sum(); weights = freq[labels]
        if (type(share) is ast.BinOp and isinstance(target, ast.Name)
                and re.search(r"(?i)weight|^ws?$", target.id)
                and _BALANCE_FN.search(ctx.frame.name) and (counts := _frequency(share))):
            ctx.report(DATA_POISON, node, f"{target.id} is the class frequency ({counts} / "
                       "total), not its inverse: the balancing draws the frequent class even "
                       "more often", severity=Severity.MEDIUM)
            return
        if type(value) is ast.Call:
            shifted = shifted_range(node.targets[0], value)
            if shifted:
                ctx.report(DATA_POISON, node, f"class ids {shifted}: those samples are "
                           "trained as other, existing classes", severity=Severity.MEDIUM)
            return
        if (type(value) in (ast.Call, ast.Subscript) and isinstance(target, ast.Name)
                and re.match(r"(?i)^(targets?|labels?|tgt|shift_labels|next_tokens?)$",
                             target.id) and (rolled := _rolled_over_batch(value))):
            ctx.report(DATA_POISON, node, f"{target.id} = {rolled}: the tokens are shifted across "
                       "the batch, not along the sequence, so each sample learns another "
                       "sample's continuation", severity=Severity.MEDIUM)
            return
        if (type(value) is ast.Constant and value.value == 0 and isinstance(target, ast.Name)
                and re.match(r"(?i)^(label|labels|target|y|pos_idx|answer)$", target.id)
                and ctx.frame.node is not None):
            shuffle = self._shuffled_first(node, ctx)
            if shuffle is not None:
                ctx.report(DATA_POISON, shuffle, f"{ast.unparse(shuffle)[:30]} moves the "
                           f"positive away from the front, but {target.id} = 0 still points "
                           "there: the label names a random candidate", severity=Severity.MEDIUM)

    @staticmethod
    def _shuffled_first(node: ast.Assign, ctx: Ctx) -> ast.Call | None:
        fn = ctx.frame.node
        body = getattr(fn, "body", [])
        shuffled = None
        for stmt in body:
            if stmt is node or getattr(stmt, "lineno", 0) >= node.lineno:
                break
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            if (isinstance(call, ast.Call) and last_attr(call.func) == "shuffle" and call.args
                    and isinstance(call.args[0], ast.Name)
                    and _first_positive(ctx.lookup(call.args[0].id))):
                shuffled = call
        return shuffled
