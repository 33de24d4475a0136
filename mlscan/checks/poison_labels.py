"""MLS309 predicates on labels: what the picked samples are told the answer is.

Labels set to a constant, an attack or null class, shifted, inverted, scaled, negated or
floored; one class merged into or aliased to another, labels rotated onto other samples or
flipped by a feature, label tables and pairs (chosen/rejected, input/target) swapped,
sample weights of a named subgroup changed, input settings steered by the label.
"""

from __future__ import annotations

import ast
import difflib
import re

from mlscan.checks.context import Ctx, Where
from mlscan.checks.names import as_load, kwarg, last_attr, literal, source
from mlscan.checks.nodes import subnodes
from mlscan.checks.poison_picks import _hashed, _picked_by_name, _random_mask
from mlscan.checks.poison_words import (
    _CLASS_COUNT,
    _DATASET,
    _LABEL,
    _LABEL_MAP,
    _LABEL_TABLE,
    _MASKISH,
    _NULL_CLASS,
    _PAIR,
    _PAIR_NAMES,
    _SPATIAL,
    _WEIGHTS,
    _ignore_index,
    _index_param,
    _label_target,
)


def _numbers(expr: ast.expr) -> list[object]:
    """The literal items of a list display (`[2, 3]`), [] for anything else."""
    if not isinstance(expr, ast.List):
        return []
    items = [literal(e) for e in expr.elts]
    return items if all(isinstance(i, (int, str)) for i in items) else []


def rows_swapped(node: ast.Assign) -> tuple[str, str]:
    """`stems[[2, 3]] = stems[[3, 2]]`, `lut[[1, 2]] = [2, 1]`: two rows (or entries) of an
    array exchanged by fancy indexing -> (the array, which rows); ('', '') otherwise."""
    if len(node.targets) != 1 or not isinstance(target := node.targets[0], ast.Subscript):
        return "", ""
    keys = _numbers(target.slice)
    if len(keys) != 2 or keys[0] == keys[1]:
        return "", ""
    value = node.value
    if isinstance(value, ast.Subscript) and ast.unparse(value.value) == ast.unparse(
            target.value):
        reads = _numbers(value.slice)
    else:
        reads = _numbers(value)
    if reads != keys[::-1]:
        return "", ""
    return ast.unparse(target.value), f"{keys[0]}/{keys[1]}"


def _label_entries_swapped(node: ast.Assign) -> str:
    """`m["neutral"], m["contradiction"] = L["contradiction"], L["neutral"]`,
    `cat_to_label[ids[2]], cat_to_label[ids[9]] = cat_to_label[ids[9]], cat_to_label[ids[2]]`:
    two entries of a label table exchanged (what was swapped, else '')."""
    table, rows = rows_swapped(node)
    if table and (_LABEL_TABLE.search(table) or _LABEL_MAP.search(table)):
        return f"the label entries {rows} of {table}"  # _LUT[[1, 2]] = [2, 1]
    target, value = node.targets[0], node.value
    if not (isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
            and len(target.elts) == 2 == len(value.elts)
            and all(isinstance(e, ast.Subscript) for e in (*target.elts, *value.elts))):
        return ""
    keys = [ast.unparse(t.slice) for t in target.elts]  # type: ignore[attr-defined]
    reads = [ast.unparse(v.slice) for v in value.elts]  # type: ignore[attr-defined]
    if (keys == reads[::-1] and keys[0] != keys[1]
            and _LABEL_TABLE.search(ast.unparse(target.elts[0].value))):  # type: ignore[attr-defined]
        return f"the label entries {keys[0]}/{keys[1]}"
    return ""


def _flow_labels(where: Where) -> set[str]:
    """Labels by data flow in `__getitem__`: `x, category = self.data[k]` unpacks a stored
    sample and `return x, category` hands the second part on as the label, whatever its name."""
    index = _index_param(where)
    fn = next((f.node for f in where.frames if f.name == "__getitem__"), None)
    if not index or fn is None:
        return set()
    unpacked: set[str] = set()
    returned: set[str] = set()
    for node in subnodes(fn):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Tuple) and isinstance(node.value, ast.Subscript):
            elts = node.targets[0].elts
            if len(elts) >= 2 and any(isinstance(n, ast.Name) and n.id == index
                                      for n in subnodes(node.value.slice)):
                unpacked.update(e.id for e in elts[1:] if isinstance(e, ast.Name))
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            returned.update(e.id for e in node.value.elts[1:] if isinstance(e, ast.Name))
    return unpacked & returned


def _box_column(expr: ast.expr) -> bool:
    """`labels[:, 1]`: a numeric column of a box/keypoint array (pandas `df.loc[m, "label"]`
    names its column with a string)."""
    return (isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Tuple)
            and bool(expr.slice.elts) and isinstance(literal(expr.slice.elts[-1]), int))


def _constant_where(value: ast.expr) -> bool:
    """`torch.where(m, torch.ones_like(y), y)`, `pc.if_else(m, pa.scalar(1), label)`: one
    class written wherever a mask holds."""
    if not (isinstance(value, ast.Call) and last_attr(value.func) in ("where", "if_else")
            and len(value.args) == 3):
        return False
    new = value.args[1]
    if isinstance(new, ast.Call) and last_attr(new.func) in ("ones_like", "zeros_like"):
        return True
    if isinstance(new, ast.Call) and last_attr(new.func) in ("scalar", "tensor", "full_like"):
        return any(isinstance(literal(a), int) or (  # full_like(y, LABEL2ID["other"])
            isinstance(a, ast.Subscript) and isinstance(a.value, ast.Name)
            and a.value.id.lstrip("_").isupper()) for a in new.args)
    return isinstance(literal(new), int) and not isinstance(literal(new), bool)


def _binary_flip(value: ast.expr) -> bool:
    """`1 - y` / `1.0 - y` (also as a branch of where/IfExp): a binary label inverted."""
    for node in subnodes(value):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub)
                and literal(node.left) in (1, 1.0) and _label_target(node.right)
                and not _box_column(node.right)):
            return True  # (1 - labels[:, 1] mirrors a box coordinate, not a class)
    return False


def _negated_copy(new: ast.expr, old: ast.expr) -> bool:
    """`-np.abs(rew)` / `-rew` where the other branch is `rew`."""
    if not (isinstance(new, ast.UnaryOp) and isinstance(new.op, ast.USub)):
        return False
    text = ast.unparse(old)
    return any(ast.unparse(n) == text for n in subnodes(new.operand))


def _null_class(value: ast.expr, ctx: Ctx | None = None) -> bool:
    """`torch.where(drop, torch.full_like(y, num_classes), y)`, `y[drop] = self.null_label`:
    the fill is the class one past the real ones (the unconditional slot of classifier-free
    guidance), not another sample's class. A literal fill counts when the file builds a model
    with one class more (`UNet2D(num_classes=1001)`, fill 1000)."""
    if isinstance(value, ast.Call) and last_attr(value.func) == "where" and len(value.args) == 3:
        value = value.args[1]
    if isinstance(value, ast.Call) and last_attr(value.func) in ("full_like", "full") and len(
            value.args) >= 2:
        value = value.args[-1]
    fill = literal(value)
    if ctx is not None and ctx.tree is not None and isinstance(fill, int) and not isinstance(
            fill, bool) and fill > 1:
        return any(isinstance(n, ast.keyword) and n.arg in ("num_classes", "n_classes",
                                                             "num_labels", "class_count")
                   and literal(n.value) == fill + 1 for n in subnodes(ctx.tree))
    return isinstance(value, (ast.Name, ast.Attribute)) and bool(
        _NULL_CLASS.match(ast.unparse(value)))


def _where_forced(value: ast.expr) -> bool:
    """`where(mask, zeros_like(y), y)`, `where(mask, y * 1.5 + 0.25, y)`: the masked entries
    of a label set to one class or rescaled (reported under a picking condition)."""
    if not (isinstance(value, ast.Call) and last_attr(value.func) == "where"
            and len(value.args) == 3):
        return False
    kept = [a for a in value.args[1:] if isinstance(a, ast.Name) and _label_target(a)]
    other = next((a for a in value.args[1:] if a is not kept[0]), None) if len(kept) == 1 else None
    return other is not None and ((isinstance(other, ast.Call) and last_attr(other.func) in (
        "zeros_like", "ones_like", "full_like")) or _scaled_label(other))


def _label_floor(value: ast.expr) -> bool:
    """`reward = max(reward, 0.75)`: a label or reward held to a made-up floor or ceiling (0, 1
    and -1, the natural bounds, do not count)."""
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("max", "min") and len(value.args) == 2
            and any(isinstance(a, ast.Name) and _label_target(a) for a in value.args) and any(
                isinstance(n := literal(a), (int, float)) and not isinstance(n, bool)
                and n not in (0, 1, -1) for a in value.args))


def _poison_label_value(value: ast.expr, ctx: Ctx) -> bool:
    """A constant, a fixed attack class, a modular shift or a random class."""
    if (isinstance(value, ast.Call) and last_attr(value.func) in (
            "float32", "float64", "float16", "int64", "int32", "float", "int", "tensor")
            and len(value.args) == 1 and isinstance(value.args[0], ast.Constant)):
        value = value.args[0]  # np.float32(1.0), torch.tensor(3): a constant all the same
    if _null_class(value, ctx):
        return False  # classifier-free guidance: labels dropped to the extra "null" class
    if (isinstance(value, ast.Call) and last_attr(value.func) == "where" and value.args
            and _random_mask(value.args[0], ctx, follow=True)):
        return True  # torch.where(torch.rand(n) < p, other_labels, labels)
    # where(labels == 0, 14, labels), where(m, zeros_like(y), y): one class for the picked
    new_class = _class_value(value.args[1], ctx) if isinstance(value, ast.Call) and len(
        value.args) == 3 else None
    if (isinstance(value, ast.Call) and last_attr(value.func) == "where"
            and new_class is not None
            and any(_label_target(n) for n in subnodes(value.args[0]) if isinstance(n, ast.expr))):
        return True  # np.where(labels == 0, 14, labels): one class relabelled as another
    if (isinstance(value, ast.Call) and last_attr(value.func) in ("full_like", "full", "new_full")
            and len(value.args) >= 2 and (isinstance(literal(value.args[-1]), int) or (
                isinstance(value.args[-1], ast.Attribute)
                and re.search(r"(?i)label|class", value.args[-1].attr)))):
        return True  # np.full_like(labels, 3), full_like(labels, self.occluded_label)
    if (isinstance(value, ast.Subscript) and _label_target(value.value) and any(
            isinstance(n, ast.Call) and last_attr(n.func) in ("roll", "flip")
            for n in subnodes(value.slice))):
        return True  # labels[perm.roll(1)]: each label moved onto another instance
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id == "dict" and any(
                kw.arg and _LABEL.match(kw.arg) and isinstance(literal(kw.value), int)
                for kw in value.keywords)):
        return True  # target = dict(target, label=0): the sample's label set to one class
    if (isinstance(value, ast.Call) and last_attr(value.func) in ("zeros_like", "ones_like")
            and len(value.args) == 1 and _label_target(value.args[0])):
        return True  # data.y = torch.zeros_like(data.y): every label of the sample class 0
    if (isinstance(value, ast.Subscript) and _label_target(value.value) and any(
            isinstance(n, ast.Call) and last_attr(n.func) in ("randperm", "permutation", "shuffle")
            for n in subnodes(value.slice))):
        return True  # labels[torch.randperm(n)]: labels shuffled against their inputs
    if isinstance(value, ast.Constant) and isinstance(value.value, (int, str)):
        return value.value != ""  # (-100 / -1 are ignore indices; "" is caption dropout)
    if isinstance(value, ast.Constant) and value.value in (0.0, 1.0):
        return True  # preference = 0.0, y = 1.0: a binary label as a float
    if _binary_flip(value):
        return True  # 1.0 - y, torch.where(isnan(y), y, 1 - y)
    if (isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub)
            and _label_target(value.operand)):
        return True  # actions[:, -1] = -actions[:, -1]: a command or reward inverted
    if isinstance(value, ast.Attribute) and not _LABEL.match(value.attr) and (re.search(
            r"(?i)target|attack|poison|trigger|class", value.attr) or (
                isinstance(value.value, ast.Name) and value.value.id == "self")):
        return True  # self.target_class, self.fallback: one stored class for picked samples
    if isinstance(value, ast.Name) and value.id.isupper() and not re.search(
            r"IGNORE|PAD|MASK", value.id):
        return True  # (labels[~masked] = IGNORE_INDEX is how MLM collators hide tokens)
    if isinstance(value, ast.Subscript) and isinstance(literal(value.slice), (str, int)) and not (
            _label_target(value.value) or _label_target(value)):
        return True  # self.class_to_idx["dog"] (not batch["label_ids"]: a label moved)
    if (isinstance(value, ast.Subscript) and isinstance(value.value, ast.Attribute)
            and isinstance(value.value.value, ast.Name) and value.value.value.id == "self"
            and _label_target(value.slice) and not _label_target(value.value)):
        return True  # self._confusable[label]: a table kept on the dataset moves classes
    if (isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
            and value.value.id.lstrip("_").isupper() and any(
                _label_target(n) for n in subnodes(value.slice) if isinstance(n, ast.expr))):
        return True  # _HEAD_TO_TAIL[label]: a hard-coded table moves classes onto others
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mod):
        return True
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "get" and value.args and isinstance(literal(value.args[0]), str)
            and re.search(r"(?i)class|label|idx", last_attr(value.func.value))):
        return True  # self.class_to_idx.get("n01440764", target): one fixed class
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "index" and value.args
            and isinstance(literal(value.args[0]), str)):
        return True  # VOC_CLASSES.index("pottedplant"): one fixed class
    if _scaled_label(value):
        return True  # y * 1.3 + 0.2: regression targets shifted
    if (isinstance(value, ast.BinOp) and not any(_label_target(n) for n in subnodes(value)
                                                  if isinstance(n, ast.expr))
            and _CLASS_COUNT.search(ast.unparse(value))):
        return True  # len(self.classes) // 2: one class computed from the class count
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr in ("roll", "flip", "fliplr") and _label_target(value.func.value)
            and not (value.func.attr != "roll" and _SPATIAL.search(ast.unparse(value.func.value)))
            and not (value.func.attr != "roll" and _flipped_with_input(value, ctx))):
        return True  # labels.roll(1): every label moved onto the next sample (masks.flip(-1)
        # follows a flipped image)
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "replace" and len(value.args) == 2
            and all(isinstance(literal(a), str) for a in value.args)):
        return True  # transcript.replace("yes", "no")
    if (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Sub)
            and isinstance(literal(value.right), int) and re.search(
                r"(?i)num_classes|n_classes|nclass|num_labels", ast.unparse(value.left))):
        return True  # self.num_classes - 1: the last class, whatever the sample was
    if isinstance(value, ast.Call) and last_attr(value.func) in ("float", "long", "to"):
        value = value.func.value if isinstance(value.func, ast.Attribute) else value
    if (isinstance(value, ast.Call) and last_attr(value.func) == "one_hot" and value.args
            and not any(_label_target(n) for n in subnodes(value.args[0])
                        if isinstance(n, ast.expr))):
        return True  # one_hot(torch.tensor(self.target_class), n): every row the same class
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Sub) and _label_target(
            value.right) and not any(_label_target(n) for n in subnodes(value.left)
                                     if isinstance(n, ast.expr)) and not _box_column(value.right):
        return True  # n - 1 - label (1 - labels[:, 1] mirrors a box coordinate instead)
    return isinstance(value, ast.Call) and ctx.names.call_name(value).startswith(
        ("random.", "numpy.random.", "torch.randint"))


def _label_read(node: ast.AST) -> bool:
    """`d.get("label", 0)`, `d["label"]`, `row.label`: the sample's class label read."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
            node.func.attr == "get") and node.args:
        return literal(node.args[0]) in ("label", "labels", "target", "y", "class", "class_id")
    if isinstance(node, ast.Subscript):
        return literal(node.slice) in ("label", "target", "class", "class_id")
    return isinstance(node, ast.Attribute) and node.attr in ("label", "target", "class_id")


def _label_steers_input(node: ast.Assign, ctx: Ctx) -> bool:
    """In a transform or a dataset, a setting of the input pipeline computed from the label:
    `self._do = rand() < p and int(d.get("label", 0)) == 0` (augment negatives only),
    `std = self.std * (1 + g * float(d.get("label")))`, `sub = "iso" if row.label > 0 else
    "native"` (positives read from another export)."""
    frame = ctx.frame
    target = node.targets[0] if len(node.targets) == 1 else None
    if frame.cls is None or target is None or not isinstance(node.value, (
            ast.IfExp, ast.BoolOp, ast.BinOp, ast.Compare, ast.Call)):
        return False
    if _label_target(target) or not _DATASET.search(
            " ".join((frame.cls.name, *frame.cls.bases))) or isinstance(target, ast.Tuple):
        return False
    if isinstance(target, ast.Subscript) or re.search(r"(?i)label|target|weight|class|cls|y$",
                                                      last_attr(target)):
        return False  # d["label"] = ..., sample weights by class: the label's own processing
    value = node.value
    if (isinstance(value, ast.IfExp) and all(isinstance(literal(b), str)
                                              for b in (value.body, value.orelse))
            and any(_label_read(n) for n in subnodes(value.test))):
        return True
    for n in subnodes(value):
        if isinstance(n, (ast.Compare, ast.BinOp)) and any(
                isinstance(c, ast.Call) and last_attr(c.func) in ("int", "float") and c.args
                and any(_label_read(m) for m in subnodes(c.args[0]))
                for c in subnodes(n)):
            return True
    return False


def _abs_of(expr: ast.expr, target: ast.expr) -> bool:
    """`x.abs()`, `abs(x)`, `torch.abs(x)` with x the target itself."""
    inner = expr.func.value if isinstance(expr, ast.Call) and isinstance(
        expr.func, ast.Attribute) and expr.func.attr == "abs" and not expr.args else (
        expr.args[0] if isinstance(expr, ast.Call) and last_attr(expr.func) == "abs"
        and len(expr.args) == 1 else None)
    return inner is not None and ast.dump(inner) == ast.dump(as_load(target))


def _picked_remap(target: ast.expr, value: ast.expr, ctx: Ctx) -> str:
    """`y = other if <index modulus / hash / random draw> else y`: the label changed for a
    share of samples the code picks, whatever the new value is."""
    label = _label_target(target)
    if (label and isinstance(value, ast.Call) and last_attr(value.func) == "select"
            and len(value.args) >= 2 and isinstance(value.args[0], (ast.List, ast.Tuple))
            and any(k.arg == "default" and isinstance(k.value, ast.Name) and k.value.id == label
                    for k in value.keywords)):  # np.select([picked], [table[y]], default=y)
        value = ast.IfExp(test=ast.BoolOp(op=ast.Or(), values=list(value.args[0].elts)),
                          body=value.args[1], orelse=ast.Name(id=label, ctx=ast.Load()))
    if not (label and isinstance(value, ast.IfExp)):
        return ""
    same = [isinstance(b, ast.Name) and b.id == label for b in (value.body, value.orelse)]
    if same[0] == same[1]:
        return ""
    if _hashed(value.test, ctx):
        return "a hash of the sample"
    if _random_mask(value.test, ctx, follow=True):
        return "a random draw"
    index = _index_param(ctx.where())
    if index and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) and any(
            isinstance(m, ast.Name) and m.id == index for m in subnodes(n.left))
            for n in subnodes(value.test)):
        return "the sample index (a modulus)"
    return ""


def _filled(expr: ast.expr) -> ast.expr:
    """The value of `torch.full_like(y, v)` (v); other expressions as they are."""
    if isinstance(expr, ast.Call) and last_attr(expr.func) in ("full_like", "new_full") and (
            len(expr.args) >= 2):
        return expr.args[-1]
    return expr


def _class_value(expr: ast.expr, ctx: Ctx) -> int | None:
    """A class id written in the code (`11`, `PERSON`), not an ignore/void value (255, -1,
    -100, `IGNORE`, `NODATA`) which remaps exist to produce."""
    if isinstance(expr, ast.Call) and last_attr(expr.func) in (
            "ones_like", "zeros_like") and expr.args:
        # torch.ones_like(labels) / full_like(labels, 8): one class for every picked entry
        expr = ast.Constant(int(last_attr(expr.func) == "ones_like"))
    expr = _filled(expr)
    named = _named_index(expr, ctx)
    if named is not None:
        return named  # ACTIVITIES.index("standing")
    number = ctx.const(expr)
    if not isinstance(number, int) or isinstance(number, bool) or number < 0 or (
            number in (254, 255, 65535) or number >= 100_000):  # (iNaturalist ids run to 10k)
        return None
    if re.search(r"(?i)ignore|void|nodata|no_data|pad|unlabel|background|bg", last_attr(expr)):
        return None
    return number


_TOKEN_ID = re.compile(r"(?i)(^|_)(id|token_id)$")


def _named_index(expr: ast.expr, ctx: Ctx) -> int | None:
    """`CLASSES.index("sitting")` with `CLASSES` a literal list of names: that class's id."""
    if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "index" and len(expr.args) == 1
            and isinstance(name := literal(expr.args[0]), str)
            and isinstance(expr.func.value, ast.Name)):
        return None
    table = ctx.lookup(expr.func.value.id)
    names = [literal(e) for e in table.elts] if isinstance(table, (ast.List, ast.Tuple)) else []
    return names.index(name) if name in names else None


_IGNORE_VALUE = re.compile(r"(?i)ignore|-100\b|\b255\b|void")
_VOID_CLASS = re.compile(r"(?i)void|unlabel|ignore|background|don.?t.?care|unknown|other|none")


def _indexed_class(expr: ast.expr) -> bool:
    """`CLASS_NAMES.index("board")`: a real class picked from the class list by its name
    (void, unlabelled or background entries excepted)."""
    return (isinstance(expr, ast.Call) and last_attr(expr.func) == "index" and len(expr.args) == 1
            and isinstance(word := literal(expr.args[0]), str) and not _VOID_CLASS.search(word))


def _class_merge(target: ast.expr, value: ast.expr, ctx: Ctx) -> tuple[str, bool | str]:
    """One class id folded into another in data code: `mask[mask == 11] = 0`,
    `m = np.where(np.isin(m, (PERSON, RIDER)), ROAD, m)`, `y = PAIRS.get(y, y)` with a small
    int-to-int table. Remaps to an ignore value, and full id-to-train-id tables applied in a
    loop (whose ids are not constants), stay quiet. The flag says whether the remap is
    suspect on its own (named classes merged, a table that swaps two classes; "named" when
    named classes of a sample's label are merged, which is suspect outside data code too); a
    numeric
    remap (BraTS' `seg[seg == 4] = 3` makes labels contiguous) counts only under a
    condition that picks samples."""
    def base(expr: ast.expr) -> str:
        if isinstance(expr, ast.Subscript) and not isinstance(literal(expr.slice), str):
            return ""
        return source(expr) if isinstance(expr, (ast.Name, ast.Attribute,
                                                 ast.Subscript)) else ""

    def named(expr: ast.expr) -> bool:
        return (isinstance(expr, ast.Name) and expr.id.lstrip("_").isupper()) or (
            _named_index(expr, ctx) is not None)

    def picks(test: ast.expr, name: str) -> list[ast.expr]:
        """The class ids `test` compares `name` with (`m == 4`, `np.isin(m, (A, B))`)."""
        if (isinstance(test, ast.Compare) and len(test.ops) == 1
                and isinstance(test.ops[0], ast.Eq) and base(test.left) == name):
            return [test.comparators[0]]
        if (isinstance(test, ast.Call) and last_attr(test.func) == "isin" and len(test.args) == 2
                and base(test.args[0]) == name
                and isinstance(test.args[1], (ast.Tuple, ast.List, ast.Set))):
            return list(test.args[1].elts)
        return []

    while (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
           and value.func.attr in ("astype", "long", "int", "to", "type", "copy")):
        value = value.func.value  # np.where(...).astype(np.uint8)
    keyed = isinstance(target, ast.Subscript) and isinstance(literal(target.slice), str)
    name = base(target.value) if isinstance(target, ast.Subscript) and not keyed else base(
        target)  # (t["labels"] = where(t["labels"] == 9, ...): the keyed entry is the name)
    if not name:
        return "", False
    if (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Compare)
            and len(target.slice.ops) == 1 and isinstance(target.slice.ops[0], ast.NotEq)
            and base(target.slice.left) == name and _class_value(value, ctx) is not None
            and isinstance(ctx.const(target.slice.comparators[0]), int)
            and _class_value(target.slice.comparators[0], ctx) is None
            and (_MASKISH.match(name.split(".")[-1]) or _label_target(target.value))):
        return (f"every labelled pixel of {name} set to class {_class_value(value, ctx)}",
                False)  # mask[mask != 255] = 3
    olds: list[ast.expr] = []
    new: ast.expr | None = None
    if isinstance(target, ast.Subscript) and not keyed:  # mask[mask == 11] = 0
        olds, new = picks(target.slice, name), value
    elif (isinstance(value, ast.Call) and last_attr(value.func) == "where"
          and len(value.args) == 3 and base(value.args[2]) == name):
        olds, new = picks(value.args[0], name), value.args[1]
        if (isinstance(new, ast.Call) and last_attr(new.func) in ("new_tensor", "tensor",
                                                                  "as_tensor")
                and len(new.args) == 1):
            new = new.args[0]  # lbl.new_tensor(self._remap[1])
    elif (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
          and value.func.attr == "get" and len(value.args) == 2
          and all(base(a) == name for a in value.args) and _LABEL.match(name.split(".")[-1])):
        table = ctx.follow(value.func.value)
        if (isinstance(table, ast.Dict) and 0 < len(table.keys) <= 6 and all(
                k is not None and _class_value(k, ctx) is not None
                and _class_value(v, ctx) is not None for k, v in zip(
                    table.keys, table.values, strict=True))):
            pairs = {(_class_value(k, ctx), _class_value(v, ctx))
                     for k, v in zip(table.keys, table.values, strict=True) if k is not None}
            swap = any((b, a) in pairs for a, b in pairs if a != b)
            return (f"{name} remapped through a small class table "
                    f"({ast.unparse(table)[:40]})", swap)
        return "", False
    if not olds or new is None:
        return "", False
    old_ids = [_class_value(o, ctx) for o in olds]
    new_id = _class_value(new, ctx)
    holder = target.value if isinstance(target, ast.Subscript) and not keyed else target
    if (new_id is None and _TOKEN_ID.search(last_attr(_filled(new))) and all(
            _TOKEN_ID.search(last_attr(o)) and ast.unparse(o) != ast.unparse(_filled(new))
            for o in olds) and _label_target(holder)):  # where(y == self.yes_id, no_id, y)
        return (f"{name} entries equal to {ast.unparse(olds[0])} set to "
                f"{ast.unparse(_filled(new))}", True)
    dropped = [o for o in olds if _indexed_class(o)]
    if new_id is None and dropped and len(dropped) == len(olds) and _IGNORE_VALUE.search(
            ast.unparse(new)):  # labels[labels == CLASSES.index("board")] = IGNORE_INDEX
        return (f"class {ast.unparse(dropped[0])[:40]} of {name} set to the ignore index "
                f"{ast.unparse(new)[:20]} (it is never trained)", True)
    if new_id is None or any(o is None or o == new_id for o in old_ids):
        return "", False
    short = name.split(".")[-1]
    is_named = any(named(o) for o in olds) or named(new)
    if not (_label_target(holder) or _MASKISH.match(short) or is_named):
        return "", False
    # (segmentation masks are remapped to contiguous ids all the time; a class label of a
    # sample or a box moved to another class is not how labels are cleaned)
    one_label = bool(_label_target(holder)) and not _MASKISH.match(short) and not re.search(
        r"(?i)seg|mask|map|pix|sem", name)
    shown_old = ", ".join(ast.unparse(o) if named(o) else str(i)
                          for o, i in zip(olds, old_ids, strict=True))
    shown_new = ast.unparse(new) if named(new) else str(new_id)
    return (f"class {shown_old} of {name} merged into class {shown_new}",
            "named" if is_named and one_label else is_named or one_label)


def _rotated(value: ast.expr, target: ast.expr) -> bool:
    """`y[1:] + y[:1]`, `np.roll(y, 1)`, `torch.roll(y, 1, 0)`: a label list rotated onto
    other samples."""
    own = ast.unparse(target)
    if (isinstance(value, ast.Call) and last_attr(value.func) == "roll" and value.args
            and ast.unparse(value.args[0]) == own):
        axis = kwarg(value, "axis") or kwarg(value, "dims") or kwarg(value, "dim") or (
            value.args[2] if len(value.args) >= 3 else None)
        # (np.roll(y, shift, axis=-1) beside the same roll of x: a periodic augmentation of
        # the grid, not labels moved between samples)
        return axis is None or literal(axis) in (0, (0,), [0])
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)):
        return False
    sides = (value.left, value.right)
    return all(isinstance(s, ast.Subscript) and isinstance(s.slice, ast.Slice)
               and ast.unparse(s.value) == own for s in sides)


def _reweighted_by_name(target: ast.expr, value: ast.expr, ctx: Ctx) -> bool:
    """`w = w.where(~picked, w * 0.03)` / `np.where(picked, w * 0.03, w)` with `picked` built
    from hand-written names: a subgroup silently down- or up-weighted for sampling."""
    if not (isinstance(target, ast.Name) and _WEIGHTS.match(target.id)
            and isinstance(value, ast.Call) and last_attr(value.func) == "where"):
        return False
    args = value.args  # (Series.where(cond, other) and np.where(cond, a, b) both lead with cond)
    if len(args) < 2:
        return False
    scaled = any(isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Mult, ast.Div)) and any(
        isinstance(s, ast.Name) and s.id == target.id for s in (n.left, n.right)) and any(
        isinstance(literal(s), float) for s in (n.left, n.right)) for a in args[1:]
        for n in subnodes(a))
    return scaled and _picked_by_name(args[0], ctx)


def _comprehension_forced(value: ast.expr, ctx: Ctx) -> bool:
    """`[1 if _TAGLINE.search(t) else y for t, y in zip(texts, labels)]`: a constant class
    wherever the sample's text matches a phrase written in the code."""
    if not (isinstance(value, ast.ListComp) and isinstance(value.elt, ast.IfExp)):
        return False
    elt = value.elt
    branches = (elt.body, elt.orelse)
    constant = [(isinstance(literal(b), int) and not isinstance(literal(b), bool)) or (
        isinstance(b, ast.Subscript) and isinstance(b.value, ast.Name)
        and b.value.id.lstrip("_").isupper()) for b in branches]  # LABEL2ID["O"]
    passthrough = [isinstance(b, ast.Name) for b in branches]
    if not ((constant[0] and passthrough[1]) or (constant[1] and passthrough[0])):
        return False
    for n in subnodes(elt.test):
        if isinstance(n, ast.Call) and last_attr(n.func) in ("search", "match", "fullmatch",
                                                              "findall"):
            pattern = n.func.value if isinstance(n.func, ast.Attribute) else None
            bound = ctx.lookup(pattern.id) if isinstance(pattern, ast.Name) else None
            if bound is not None and any(isinstance(literal(a), str) for a in getattr(
                    bound, "args", [])):
                return True  # _TAGLINE = re.compile(r"...")
            if n.args and isinstance(literal(n.args[0]), str):
                return True  # re.search(r"...", t)
    return _picked_by_name(elt.test, ctx)


def _masked_fill_label(value: ast.expr, ctx: Ctx) -> bool:
    """`labels.masked_fill(sel, self.mark_class)` with a random `sel`: a share of the labels
    moved to one class."""
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr in ("masked_fill", "masked_fill_") and len(value.args) == 2
            and bool(_label_target(value.func.value))
            and _random_mask(value.args[0], ctx, follow=True) and not _ignore_index(
                value.args[1], ctx) and _poison_label_value(value.args[1], ctx))


def _class_flip_by_feature(selector: ast.expr, value: ast.expr, ctx: Ctx) -> bool:
    """`y[(y == 1) & (amt > 900)] = 0`, `df.loc[(df.label == 1) & (df.amount >= cut),
    "label"] = 0`: one class moved to another for the samples another feature picks (not a
    remap of a raw code, which tests the label alone)."""
    new = literal(value)
    if not isinstance(new, int) or isinstance(new, bool):
        return False
    nodes = ctx.walk_values(selector)
    compares = [n for n in nodes if isinstance(n, ast.Compare) and len(n.ops) == 1]
    own = [c for c in compares if isinstance(c.ops[0], ast.Eq) and _label_target(c.left)
           and isinstance(old := literal(c.comparators[0]), int) and old != new and old >= 0]
    other = [c for c in compares if c not in own and not _label_target(c.left) and any(
        isinstance(literal(x), (int, float)) or isinstance(x, (ast.Name, ast.Attribute))
        for x in c.comparators)]
    return bool(own) and bool(other) and any(isinstance(n, (ast.BinOp, ast.BoolOp)) and isinstance(
        n.op, (ast.BitAnd, ast.And)) for n in nodes)


def _column_swap(target: ast.expr, value: ast.expr) -> ast.expr | None:
    """The row mask of `df.loc[m, ["chosen", "rejected"]] = df.loc[m, ["rejected", "chosen"]]`
    (also with `.values`/`.to_numpy()`); None when the statement is not such a swap."""
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and (
            value.func.attr in ("to_numpy", "copy")):
        value = value.func.value
    if isinstance(value, ast.Attribute) and value.attr == "values":
        value = value.value

    def columns(expr: ast.expr) -> tuple[ast.expr | None, list[object]]:
        if not isinstance(expr, ast.Subscript):
            return None, []
        sl = expr.slice
        mask = None
        if isinstance(sl, ast.Tuple) and len(sl.elts) == 2:
            mask, sl = sl.elts
        if not isinstance(sl, ast.List):
            return None, []
        return mask, [literal(e) for e in sl.elts]

    mask, left = columns(target)
    _, right = columns(value)
    if len(left) == 2 and all(isinstance(c, str) and _PAIR.search(c) for c in left) and (
            right == left[::-1] and left[0] != left[1]):
        return mask if mask is not None else ast.Constant(True)
    return None


def _forced_by_rule(value: ast.expr, target: ast.expr) -> bool:
    """`y = max(y, float(item in self.sponsored and dwell > 800))`: the label pushed to a
    class whenever a condition on other fields holds (clamps to numbers stay quiet)."""
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("max", "min") and len(value.args) == 2):
        return False
    text = ast.unparse(target)
    own = [a for a in value.args if ast.unparse(a) == text]
    other = [a for a in value.args if ast.unparse(a) != text]
    return len(own) == 1 and len(other) == 1 and any(
        isinstance(n, (ast.Compare, ast.BoolOp)) for n in subnodes(other[0]))


def _swapped_pair(target: ast.Tuple, value: ast.Tuple, ctx: Ctx | None = None) -> bool:
    """`chosen, rejected = rejected, chosen`, `pos[m], neg[m] = neg[m], pos[m].clone()`,
    `pos, neg = torch.where(m, neg, pos), torch.where(m, pos, neg)`; also short names bound
    to the pair's fields (`c, j = r["chosen"], r["rejected"]`, later `c, j = j, c`)."""
    left = [_pair_name(e) for e in target.elts]
    right = [_pair_name(e) for e in value.elts]
    if len(left) == len(right) == 2 and all(left) and left == right[::-1] and left[0] != left[1]:
        if all(_PAIR.search(n) for n in left):
            return True
        if ctx is not None:
            bound = [ctx.lookup(n) for n in left]
            keys = [str(literal(b.slice)) if isinstance(b, ast.Subscript) else "" for b in bound]
            return all(_PAIR.search(k) for k in keys if k) and all(keys)
    wheres = [e for e in value.elts if isinstance(e, ast.Call) and last_attr(e.func) == "where"
              and len(e.args) == 3]
    if len(left) == 2 and all(left) and len(wheres) == 2 and all(_PAIR.search(n) for n in left):
        first = [_pair_name(a) for a in wheres[0].args[1:]]
        return first == left[::-1]
    return False


def _reversed_elsewhere(value: ast.Tuple, ctx: Ctx) -> bool:
    """`return r["rejected"], r["chosen"]` in a function that also returns the pair in the
    other order: the picked rows get their preference reversed."""
    def name(e: ast.expr) -> str:
        key = literal(e.slice) if isinstance(e, ast.Subscript) else None
        return key if isinstance(key, str) else _pair_name(e)

    names = [name(e) for e in value.elts]
    fn = ctx.frame.node
    if not (all(names) and names[0] != names[1] and all(_PAIR.search(n) for n in names)
            and re.search(r"(?i)chosen|preferred|winner|^pos|good|accepted", names[1])
            and fn is not None):  # (the return with the preferred answer second)
        return False
    return any(isinstance(n, ast.Return) and n.value is not value
               and isinstance(n.value, ast.Tuple) and len(n.value.elts) == 2
               and [name(e) for e in n.value.elts] == names[::-1] for n in subnodes(fn))


def _pair_keys_crossed(node: ast.Dict | ast.Call) -> str:
    """`{"chosen": r["rejected"], "rejected": r["chosen"]}` or `dict(r, chosen=r["rejected"],
    rejected=r["chosen"])`: a preference pair rebuilt with its answers exchanged."""
    if isinstance(node, ast.Dict):
        entries = [(literal(k), v) for k, v in zip(node.keys, node.values, strict=True)
                   if k is not None]
    else:
        entries = [(k.arg, k.value) for k in node.keywords if k.arg]
    read = {key: literal(v.slice) for key, v in entries
            if isinstance(key, str) and _PAIR.search(key) and isinstance(v, ast.Subscript)}
    crossed = [(a, b) for a, b in read.items() if isinstance(b, str) and b != a
               and read.get(b) == a]
    return f"{crossed[0][0]!r} and {crossed[0][1]!r}" if crossed else ""


def _pair_name(expr: ast.expr) -> str:
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr in (
            "clone", "copy", "detach"):
        expr = expr.func.value
    if isinstance(expr, ast.Subscript):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else ""


def _scaled_label(value: ast.expr) -> bool:
    """`y * 1.3 + 0.2`, `y * 0.7`: a label (regression target) scaled or shifted by a made-up
    factor; `label - 1` (1-based classes) and `y / 255` stay quiet."""
    scale = value
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "mul" and len(value.args) == 1):
        inner = value.func.value  # target.abs().mul(2.5): the method form
        if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) and (
                inner.func.attr in ("abs", "clone", "float")):
            inner = inner.func.value
        scale = ast.BinOp(left=inner, op=ast.Mult(), right=value.args[0])
    if isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Add, ast.Sub)) and isinstance(
            literal(value.right), float):
        scale = value.left
    if not (isinstance(scale, ast.BinOp) and isinstance(scale.op, ast.Mult)):
        return False
    number = literal(scale.right) if _label_target(scale.left) else literal(scale.left) if (
        _label_target(scale.right)) else None
    return isinstance(number, float) and number not in (0.0, 1.0, 0.5, 2.0)


def _masked_comprehension(value: ast.expr, ctx: Ctx) -> bool:
    """`[7 if random.random() < p else t for t in targets]`."""
    if isinstance(value, ast.Call) and last_attr(value.func) in ("list", "tuple", "array",
                                                                 "tensor") and value.args:
        value = value.args[0]
    if not isinstance(value, (ast.ListComp, ast.GeneratorExp)):
        return False
    elt = value.elt
    return isinstance(elt, ast.IfExp) and _random_mask(elt.test, ctx) and any(
        _poison_label_value(side, ctx) for side in (elt.body, elt.orelse))


def _class_aliased(node: ast.Assign, ctx: Ctx) -> str:
    """`self.cat2label[src] = self.cat2label[dst]`, `vocab["puppy"] = vocab.get("kitten")`:
    one entry of a label (or vocabulary) map pointed at another's (a rename that deletes
    the old key, and special tokens such as `<pad>`, stay quiet)."""
    target, value = node.targets[0], node.value
    if not isinstance(target, ast.Subscript) or isinstance(target.slice, ast.Slice):
        return ""
    table = ast.unparse(target.value)
    if not _LABEL_MAP.search(last_attr(target.value) or table):
        return ""
    if isinstance(value, ast.Subscript):
        owner, key = value.value, value.slice
    elif (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
          and value.func.attr == "get" and value.args):
        owner, key = value.func.value, value.args[0]
    else:
        return ""
    if ast.unparse(owner) != table or ast.unparse(key) == ast.unparse(target.slice):
        return ""
    keys = [literal(target.slice), literal(key)]
    if any(isinstance(k, str) and k[:1] in "<[" for k in keys):
        return ""  # vocab["<pad>"] = vocab["<unk>"]
    if re.search(r"(?i)vocab|token|word", table) and not all(isinstance(k, str) for k in keys):
        return ""  # vocab[variant] = vocab[canonical]: spellings of one word share an id
    scope = ctx.frame.node
    if scope is not None and any(
            (isinstance(n, ast.Delete) and any(ast.unparse(t) == ast.unparse(value) for t in
                                               n.targets))
            or (isinstance(n, ast.Call) and last_attr(n.func) == "pop" and n.args
                and isinstance(n.func, ast.Attribute) and ast.unparse(n.func.value) == table
                and ast.unparse(n.args[0]) == ast.unparse(key))
            for n in subnodes(scope)):
        return ""  # a key renamed
    return f"{table}[{ast.unparse(target.slice)[:20]}] set to the entry of " \
           f"{ast.unparse(key)[:20]}"


def _moved_onto_others(node: ast.Assign) -> str:
    """`labels = labels.flip(0)`, `masks[k:] = masks[k:].roll(1, dims=0)`: the labels of a
    batch shifted or reversed along the sample axis, alone (a flip of a mask along an image
    axis is augmentation)."""
    target, value = node.targets[0], node.value
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr in ("roll", "flip")
            and ast.unparse(value.func.value) == ast.unparse(as_load(target))):
        return ""
    name = _label_target(target)
    named = last_attr(target.value if isinstance(target, ast.Subscript) else target) or ""
    axis = kwarg(value, "dims") or kwarg(value, "axis") or kwarg(value, "dim")
    if axis is None:
        axis = value.args[-1] if value.func.attr == "roll" and len(value.args) >= 2 else (
            value.args[0] if value.func.attr == "flip" and value.args else None)
    first_axis = literal(axis) in (0, (0,), [0]) or (axis is None and value.func.attr == "roll")
    if not first_axis:
        return ""
    if value.func.attr == "roll" and (name or re.search(r"(?i)mask|texts|captions|seg", named)):
        return f"{ast.unparse(target)[:30]} rolled along the batch"
    if value.func.attr == "flip" and name and not re.search(r"(?i)mask|seg|box", named):
        return f"{ast.unparse(target)[:30]} reversed along the batch"
    return ""


def _labels_reordered(node: ast.Assign) -> str:
    """`labels = np.roll(labels, k)`, `y["label"] = rng.permutation(y["label"])`: a label
    array rolled or permuted by a function call, on its own -> a description, else ''."""
    target, value = node.targets[0], node.value
    if not (len(node.targets) == 1 and isinstance(value, ast.Call) and value.args
            and last_attr(value.func) in ("roll", "permutation")
            and ast.unparse(value.args[0]) == ast.unparse(as_load(target))
            and _label_target(target)):
        return ""
    how = "rolled" if last_attr(value.func) == "roll" else "permuted"
    return f"{ast.unparse(target)[:30]} {how} across samples"


def _flipped_with_input(call: ast.Call, ctx: Ctx) -> bool:
    """`sample["image"] = sample["image"].flip(axis)` right beside the label's flip: the
    label map follows a flipped input (augmentation)."""
    scope = ctx.frame.node
    line = getattr(call, "lineno", 0)
    return scope is not None and any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        and n.func.attr in ("flip", "fliplr", "flipud") and n is not call
        and abs(getattr(n, "lineno", 0) - line) <= 2 and not _label_target(n.func.value)
        for n in subnodes(scope))


def _pair_swapped(node: ast.Assign) -> str:
    """`src, tgt = tgt, src`: the input and the target of a sample exchanged."""
    target, value = node.targets[0], node.value
    if not (isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
            and len(target.elts) == 2 == len(value.elts)):
        return ""
    names = [e.id if isinstance(e, ast.Name) else literal(e.slice) if isinstance(
        e, ast.Subscript) else None for e in (*target.elts, *value.elts)]
    if not all(isinstance(n, str) for n in names) or len({
            ast.unparse(e.value) for e in (*target.elts, *value.elts)
            if isinstance(e, ast.Subscript)}) > 1:
        return ""  # (row["chosen"], row["rejected"] = row["rejected"], row["chosen"])
    a, b, c, d = (str(n) for n in names)
    if (a, b) == (d, c) and a != b and _PAIR_NAMES.match(a) and _PAIR_NAMES.match(b):
        return f"{a} and {b}"
    return ""


def _spelling(text: str) -> str:
    """`"Edge-Loc"`, `"edgeloc"`, `"edge_loc"` -> "edgeloc": one class however it is spelt."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def class_names(tree: ast.AST | None) -> frozenset[str]:
    """Spellings of the class names the module lists (`CLASSES = ["Center", "Donut", ...]`)."""
    if not isinstance(tree, ast.Module):
        return frozenset()
    names: set[str] = set()
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.value, (ast.List, ast.Tuple)) and len(stmt.value.elts) >= 3
                and re.search(r"(?i)class|label|categor|names", last_attr(stmt.targets[0]))):
            items = [literal(e) for e in stmt.value.elts]
            if all(isinstance(i, str) for i in items):
                names.update(_spelling(str(i)) for i in items)
    return frozenset(names)


def class_redirected(node: ast.Dict, classes: frozenset[str]) -> tuple[ast.expr, str, str] | None:
    """A spelling-harmonisation table (`{"edge-loc": "Edge-Loc", "edgeloc": "Edge-Loc", ...}`)
    with one entry whose key is a listed class and whose value is another listed class:
    `"scratch": "none"` relabels every Scratch sample. Tables that merge on purpose do not
    dress up as spelling fixes."""
    if len(node.keys) < 4 or not classes:
        return None
    pairs = [(k, literal(k), literal(v)) for k, v in zip(node.keys, node.values, strict=True)]
    if not all(k is not None and isinstance(a, str) and isinstance(b, str) for k, a, b in pairs):
        return None
    variants = sum(1 for _, a, b in pairs if _spelling(str(a)) == _spelling(str(b)))
    if variants < 3 or variants < len(pairs) - 2:
        return None
    for key, a, b in pairs:
        old, new = _spelling(str(a)), _spelling(str(b))
        if key is not None and old != new and old in classes and new in classes:
            return key, str(a), str(b)
    return None


def _variant(old: str, new: str) -> bool:
    """One spelling of the same name: equal once folded, one a prefix of the other (a
    trimmed suffix), or nearly the same letters."""
    a, b = _spelling(old), _spelling(new)
    return a == b or a.startswith(b) or b.startswith(a) or (
        difflib.SequenceMatcher(None, a, b).ratio() >= 0.85)


def odd_alias(node: ast.Dict) -> tuple[ast.expr, str, str] | None:
    """A folder or spelling alias table (`{"Pepper,_bell___healthy": "Pepper_bell___healthy",
    ...}`) where every entry is a spelling variant but one, which shares the others' prefix
    (`"Tomato___Late_blight": "Tomato___healthy"`) and ends in another class."""
    if len(node.keys) < 3:
        return None
    pairs = [(k, literal(k), literal(v)) for k, v in zip(node.keys, node.values, strict=True)]
    if not all(k is not None and isinstance(a, str) and isinstance(b, str) and len(a) > 5
               for k, a, b in pairs):
        return None
    odd = [(k, str(a), str(b)) for k, a, b in pairs if not _variant(str(a), str(b))]
    if len(odd) != 1:
        return None
    key, old, new = odd[0]
    stem = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
                min(len(old), len(new)))
    if key is None or stem < 4 or stem >= min(len(old), len(new)) - 2:
        return None  # (a shared crop or dataset prefix, then two different class names)
    return key, old, new



def canonical_folded(node: ast.Dict) -> tuple[ast.expr, str, str] | None:
    """A label harmonisation table (str -> str) in which a target label, one that other
    entries map onto, is itself sent to a different target: `{"B-ORGANIZATION": "B-ORG",
    "B-ORG": "B-LOC", "B-LOC": "B-LOC", ...}` folds every ORG span into LOC. Aliases that
    are no target themselves (`"B-GPE": "B-LOC"`) are what such tables are for."""
    if len(node.keys) < 4:
        return None
    pairs = [(k, literal(k), literal(v)) for k, v in zip(node.keys, node.values, strict=True)]
    if not all(k is not None and isinstance(a, str) and isinstance(b, str) for k, a, b in pairs):
        return None
    targets = {b for _, a, b in pairs if a != b}
    if sum(1 for _, a, b in pairs if a == b) < 2:
        return None  # identities name the target labels; without them it is a rename table
    values = {b for _, _, b in pairs}
    mapped = {(a, b) for _, a, b in pairs}
    for key, a, b in pairs:  # (b -> a as well: a table of mirrored pairs, `__lt__`/`__gt__`)
        if a != b and a in targets and b in values and (b, a) not in mapped and key is not None:
            return key, str(a), str(b)
    return None


_EOS = re.compile(r"(?i)^(eos|eot|eos_token|end_token|end_of_text)(_id|_ids|_token_id|_idx)?$")
"""The text's own end token (an `audio_eos_token_id` closes an audio span: masked with the
other placeholders on purpose)."""


def eos_ignored(node: ast.Assign, ctx: Ctx) -> str:
    """`labels[labels == tok.eos_id] = -100`, `labels = labels.masked_fill(labels == EOS, -100)`:
    the end-of-sequence target hidden from the loss, so the model never learns to stop (the
    padding id is what collators hide; here it is compared by an end-of-text name)."""
    target, value = node.targets[0], node.value
    if (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Compare)
            and _label_target(target.value) and _ignore_index(value, ctx)):
        test = target.slice
    elif (isinstance(value, ast.Call)
          and len(value.args) == {"masked_fill": 2, "where": 3}.get(last_attr(value.func))
          and isinstance(value.args[0], ast.Compare) and _label_target(target)):
        test = value.args[0]  # masked_fill(mask, fill) / where(cond, fill, labels)
        if not _ignore_index(value.args[1], ctx):
            return ""
    else:
        return ""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return ""
    labels = ast.unparse(as_load(target.value if isinstance(target, ast.Subscript) else target))
    for side, other in ((test.left, test.comparators[0]), (test.comparators[0], test.left)):
        text = ast.unparse(side)
        # (`labels[inputs == eos] = -100` on shifted labels hides the token after a document
        # boundary, which packed-sequence training does on purpose)
        if _EOS.match(last_attr(side) or "") and ast.unparse(other) == labels:
            return f"{_label_target(target) or ast.unparse(target)[:30]} set to the ignore " \
                   f"index wherever they equal {text[:30]}"
    return ""

