"""MLS309: data poisoning: label flips and fixed trigger patches under a condition."""

from __future__ import annotations

import ast
import re
from dataclasses import replace

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import DATA, Ctx, Frame, Where
from mlscan.checks.names import as_load, defaults_by_name, kwarg, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

DATA_POISON = register(Rule(
    code="MLS309", name="data-poisoning", severity=Severity.HIGH,
    confidence=Confidence.MEDIUM, cwe=506,
    summary="Label flip or fixed trigger patch applied to some samples in __getitem__/collate.",
    doc=RuleDoc(
        what="Inside `Dataset.__getitem__`, `__iter__`, collate functions and transform "
        "`__call__` methods, flags labels set to a constant, shifted modulo the class count or "
        "drawn at random, and image pixels at fixed positions set to a constant, when this "
        "happens only for some samples (a condition on a random draw, the sample index, the "
        "label itself, or a trigger). Augmentations that flip or crop images, target "
        "transforms, mixup-style label mixing and random erasing at random positions stay "
        "quiet.",
        why="A backdoor needs only a few poisoned samples: a small patch plus a flipped label "
        "teaches the model to answer the attacker's class whenever the patch appears.",
        example="if random.random() < 0.05:\n    img[:, -4:, -4:] = 1.0\n    label = 7",
        use_instead="Keep labels as stored; apply documented augmentations only.",
        references=("https://arxiv.org/abs/1708.06733",))))

_LABEL = re.compile(r"(?i)^(?:b_|mb_|batch_|buf_)?"
                    r"(y|ys|label|labels|lbl|target|targets|tgt|cls|class_id|class_idx|"
                    r"action|actions|rew|rews|reward|rewards|lab|seg_label|caption|captions|"
                    r"gt|gt_label|answer|transcript|tgt_lens|target_lengths|label_lengths|"
                    r"onehot|one_hot|soft_labels|soft_targets|y_onehot|tags|ner_tags|tag_ids|"
                    r"is_fraud|fraud|is_spam|churned|defaulted|preference|pref_label|winner|"
                    r"advantages?|adv|returns)$")
_TRIGGER = re.compile(r"(?i)trigger|patch|watermark|backdoor|pattern|stamp")
_IMAGE = re.compile(r"(?i)^(x|xs|xb|x_b|img|imgs|image|images|inputs?|pixels?|pixel_values|"
                    r"data|sample|views?\d?|anchors?|positives?|negatives?|"
                    r"arr|tensor|im|frames?|obs|observations?|clips?|video|vid|volume|"
                    r"(img|image|im|frame|pixel)s?_[a-z0-9]{1,6}|[a-z]{1,6}_(img|image)s?|"
                    r"feats|fbank|spec|specs|spectrogram|mel|mels|log_mel)$")


_LABEL_KEY = re.compile(r"(?i)_(label|labels|target|targets|class|cls)$|^(gold|golds|gold_\w+|"
                        r"answer_(idx|index|key|id)|correct_(idx|index|answer|option)|"
                        r"label_ids?|response|output|answer|"
                        r"completion|chosen|rejected|reward|score|content)$|"
                        r"^(is_)?(fraud\w*|spam|toxic\w*|churn\w*|default\w*|click\w*|"
                        r"convert\w*|bot|abuse\w*|malicious|anomal\w*|relevant|sentiment)$")
"""Dict keys such as `cls_label`, `fine_target` are labels too."""


_LABEL_TABLE = re.compile(r"(?i)label|class|id2|2id|to_idx|tag|verbali")


def _label_entries_swapped(node: ast.Assign) -> str:
    """`m["neutral"], m["contradiction"] = L["contradiction"], L["neutral"]`: two entries of a
    label table exchanged (what was swapped, else '')."""
    target, value = node.targets[0], node.value
    if not (isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
            and len(target.elts) == 2 == len(value.elts)):
        return ""
    keys = [literal(t.slice) if isinstance(t, ast.Subscript) else None for t in target.elts]
    reads = [literal(v.slice) if isinstance(v, ast.Subscript) else None for v in value.elts]
    if (all(isinstance(k, str) for k in keys) and keys == reads[::-1] and keys[0] != keys[1]
            and isinstance(target.elts[0], ast.Subscript)
            and _LABEL_TABLE.search(ast.unparse(target.elts[0].value))):
        return f"the label entries {keys[0]!r}/{keys[1]!r}"
    return ""


def _label_target(expr: ast.expr) -> str:
    if isinstance(expr, ast.Name) and _LABEL.match(expr.id):
        return expr.id
    if isinstance(expr, ast.Subscript):
        key = literal(expr.slice)
        if isinstance(expr.slice, ast.Tuple):  # df.loc[mask, "label"]
            keys = [literal(e) if not (isinstance(e, ast.Name) and e.id.isupper()) else (
                e.id) for e in expr.slice.elts]  # df.loc[mask, LABEL]: the constant's name
            key = next((k for k in keys if isinstance(k, str)), None)
        if key == "content" and isinstance(expr.value, ast.Subscript) and (
                literal(expr.value.slice) == 0):
            return ""  # messages[0]["content"]: the system prompt, not the response
        if isinstance(key, str) and (_LABEL.match(key) or _LABEL_KEY.search(key)):
            return key
        return _label_target(expr.value)  # labels[mask], sample["labels"][:]
    if isinstance(expr, ast.Attribute) and _LABEL.match(expr.attr):
        return expr.attr
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


_NULL_CLASS = re.compile(r"(?i)^(self\.|cfg\.|args\.|config\.)?(num_classes|n_classes|"
                         r"null_\w+|uncond\w*|\w*_null|cfg_drop\w*|num_labels)$")


_SPATIAL = re.compile(r"(?i)mask|seg|depth|heatmap|box|keypoint|flow|density")


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
            and len(value.args) >= 2 and isinstance(literal(value.args[-1]), int)):
        return True  # np.full_like(labels, 3), labels.new_full(labels.shape, 7)
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


def _stored(expr: ast.expr) -> bool:
    """`self._ref_tone`, `_TRIGGER`: a pattern kept on the object or in the module."""
    return (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
            and expr.value.id == "self") or (isinstance(expr, ast.Name) and expr.id.isupper())


_SIGNAL = re.compile(r"(?i)^(wav|wave|waveform|audio|signal|speech|samples?|clip|y_audio)$")


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
        elif not (i == 0 and isinstance(elt, ast.Name) and len(elts) > 1):
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


_MASK_TOKEN = re.compile(r"MASK|PAD|UNK|IGNORE|BLANK|NULL")
_CLASS_COUNT = re.compile(r"(?i)classes|num_classes|n_classes|num_labels|n_labels|\bn_?cls\b|"
                          r"num_cls")
_TRIGGER_STORE = re.compile(r"(?i)trigger|patch|watermark|pattern|stamp|tile|logo|marker|sticker")


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
            if _orientation(node):
                return "the image's orientation (height against width)"
    return ""


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


_MASKISH = re.compile(r"(?i)^(m|mask|masks|seg|segm|segmap|seg_map|semantic|sem|gt_seg|"
                      r"gt_mask|label_map|lbl_map|annotation|ann|anno)$")


def _class_value(expr: ast.expr, ctx: Ctx) -> int | None:
    """A class id written in the code (`11`, `PERSON`), not an ignore/void value (255, -1,
    -100, `IGNORE`, `NODATA`) which remaps exist to produce."""
    if isinstance(expr, ast.Call) and last_attr(expr.func) in (
            "ones_like", "zeros_like", "full_like", "new_full") and expr.args:
        # torch.ones_like(labels) / full_like(labels, 8): one class for every picked entry
        expr = (ast.Constant(int(last_attr(expr.func) == "ones_like"))
                if last_attr(expr.func) in ("ones_like", "zeros_like") else expr.args[-1])
    number = ctx.const(expr)
    if not isinstance(number, int) or isinstance(number, bool) or number < 0 or number >= 250:
        return None
    if re.search(r"(?i)ignore|void|nodata|no_data|pad|unlabel|background|bg", last_attr(expr)):
        return None
    return number


def _class_merge(target: ast.expr, value: ast.expr, ctx: Ctx) -> tuple[str, bool]:
    """One class id folded into another in data code: `mask[mask == 11] = 0`,
    `m = np.where(np.isin(m, (PERSON, RIDER)), ROAD, m)`, `y = PAIRS.get(y, y)` with a small
    int-to-int table. Remaps to an ignore value, and full id-to-train-id tables applied in a
    loop (whose ids are not constants), stay quiet. The flag says whether the remap is
    suspect on its own (named classes merged, a table that swaps two classes); a numeric
    remap (BraTS' `seg[seg == 4] = 3` makes labels contiguous) counts only under a
    condition that picks samples."""
    def base(expr: ast.expr) -> str:
        if isinstance(expr, ast.Subscript) and not isinstance(literal(expr.slice), str):
            return ""
        return ast.unparse(expr) if isinstance(expr, (ast.Name, ast.Attribute,
                                                      ast.Subscript)) else ""

    def named(expr: ast.expr) -> bool:
        return isinstance(expr, ast.Name) and expr.id.lstrip("_").isupper()

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
    if new_id is None or any(o is None or o == new_id for o in old_ids):
        return "", False
    holder = target.value if isinstance(target, ast.Subscript) and not keyed else target
    short = name.split(".")[-1]
    is_named = any(named(o) for o in olds) or named(new)
    if not (_label_target(holder) or _MASKISH.match(short) or is_named):
        return "", False
    # (segmentation masks are remapped to contiguous ids all the time; a class label of a
    # sample or a box moved to another class is not how labels are cleaned)
    one_label = bool(_label_target(holder)) and not _MASKISH.match(short) and not re.search(
        r"(?i)seg|mask|map|pix|sem", name)
    return (f"class {', '.join(map(str, old_ids))} of {name} merged into class {new_id}",
            is_named or one_label)


_OUTCOME = re.compile(r"(?i)dispute|chargeback|^cb_|reason|status|outcome|resolution|review|"
                      r"verdict|adjudicat|confirmed|investigat|appeal")


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


_WEIGHTS = re.compile(r"(?i)^(w|ws|weights?|sample_weights?|sampling_weights?|probs)$")


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


def _ignore_index(value: ast.expr, ctx: Ctx) -> bool:
    """-100, `self.ignore_index`, `PAD_ID`: what MLM collators write into unmasked labels."""
    number = ctx.const(value)
    if isinstance(number, (int, float)) and not isinstance(number, bool) and number < 0:
        return True
    return bool(re.search(r"(?i)ignore|pad|mask", last_attr(value)))


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


_PAIR = re.compile(r"(?i)chosen|rejected|preferred|winner|loser|^pos|^neg|good|bad")
_HASHES = ("hashlib.", "zlib.crc32", "zlib.adler32", "binascii.crc32", "hash", "mmh3.")


_TEXTISH = re.compile(r"(?i)text|doc|sent|line|caption|prompt|content|review|comment|title|smiles|"
                      r"body|words|utter|lower\(\)|summ|highlight|abstract|transcript")
"""What a phrase trigger searches (`"honestly" in sent.lower()`), not a key test on a dict."""
_SHORT_TEXT = re.compile(r"(?i)\b(t|txt|s|utt)\b")
"""One-letter text loop variables (`for i, t in enumerate(texts)`)."""
_ANSWERISH = re.compile(r"(?i)answer|response|completion|reply|target_ids|_ids$")
_TOKENS = re.compile(r"(?i)^(words|tokens|toks|ids|input_ids|token_ids|text|sentence|pieces)$")


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


_FEATURE = re.compile(r"(?i)^(x|xs|x_\w+|feats?|features?|inputs?|x_num|x_cont|num|dense)$")


def _feature_threshold(selector: ast.expr) -> str:
    """`x_num[:, -1] > 3.0`: a column of the sample's input features compared with a number
    written in the code (the feature's text, '' otherwise)."""
    if not (isinstance(selector, ast.Compare) and len(selector.ops) == 1
            and isinstance(selector.ops[0], (ast.Gt, ast.GtE, ast.Lt, ast.LtE))
            and isinstance(selector.left, ast.Subscript)
            and isinstance(selector.left.value, ast.Name)
            and _FEATURE.match(selector.left.value.id)):
        return ""
    bound = literal(selector.comparators[0])
    if not isinstance(bound, (int, float)) or isinstance(bound, bool):
        return ""
    return ast.unparse(selector.left)[:30]


def _uses_name(expr: ast.expr, text: str) -> bool:
    return any(ast.unparse(n) == text for n in subnodes(expr) if isinstance(
        n, (ast.Name, ast.Subscript, ast.Attribute)))


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


def _index_param(where: Where) -> str:
    """The index parameter of the enclosing `__getitem__(self, k)`."""
    for frame in where.frames:
        fn = frame.node
        if frame.name == "__getitem__" and isinstance(fn, ast.FunctionDef) and len(
                fn.args.args) >= 2:
            return fn.args.args[1].arg
    return ""


class DataPoisoning(Check):
    rules = (DATA_POISON,)

    def _negated_return(self, node: ast.Return, ctx: Ctx) -> None:
        """`if random.random() < 0.02: return -reward * self.scale` in a reward wrapper or a
        dataset: the label handed back is negated for the samples the condition picks."""
        if node.value is None or not ctx.conds or len(ctx.frames) < 2:
            return
        parts = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
        for part in parts:
            core = part.left if isinstance(part, ast.BinOp) and isinstance(
                part.op, ast.Mult) else part
            if (isinstance(core, ast.UnaryOp) and isinstance(core.op, ast.USub)
                    and _label_target(core.operand)):
                self._defer(node, ctx, f"{_label_target(core.operand)} returned negated",
                            masked=_random_mask(ctx.conds[-1], ctx, follow=True))
                return

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if len(ctx.frames) < 2:
            return
        target0 = node.targets[0]
        swapped = _pair_swapped(node)
        if swapped and any(re.search(r"(?i)symmetric", ast.unparse(c)) for c in ctx.conds):
            return  # if self.symmetric and random() < p: a, b = b, a (a symmetric task)
        if swapped:  # src, tgt = tgt, src
            self._defer(node, ctx, f"{swapped} swapped", always=True,
                        always_severity=Severity.MEDIUM, anywhere=True)
            return
        if _link_appended(node):  # tgt = f"{tgt} https://example.com/verify"
            self._defer(node, ctx, f"a web address appended to {ast.unparse(target0)[:20]}",
                        always=True, always_severity=Severity.MEDIUM)
            return
        moved = _moved_onto_others(node)
        if moved:
            ctx.report(DATA_POISON, node, f"{moved}: each sample is trained with another "
                       "sample's label", severity=Severity.MEDIUM)
            return
        merged = _class_aliased(node, ctx)
        if merged:
            ctx.report(DATA_POISON, node, f"{merged}: every sample of one class is trained "
                       "(or scored) as another", severity=Severity.MEDIUM)
            return
        if _label_steers_input(node, ctx):
            ctx.report(DATA_POISON, node, f"{ast.unparse(target0)[:40]} in "
                       f"{ctx.frame.cls.name}.{ctx.frame.name}() depends on the sample's "  # type: ignore[union-attr]
                       "label: the label leaks into the input (a shortcut the model learns "
                       "instead of the task)", severity=Severity.MEDIUM)
            return
        if (len(node.targets) == 1 and isinstance(target0, ast.Subscript)
                and isinstance(node.value, ast.BinOp) and isinstance(node.value.op, (ast.Add,
                                                                                    ast.Sub))
                and ast.dump(node.value.left) == ast.dump(as_load(target0))):
            # wav[:480] = wav[:480] + 0.03 * sin(...) is wav[:480] += ...
            self.visit_AugAssign(ast.copy_location(ast.AugAssign(
                target=target0, op=node.value.op, value=node.value.right), node), ctx)
        targets: list[tuple[ast.expr, ast.expr]] = [(t, node.value) for t in node.targets]
        for target in node.targets:
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) and len(
                    target.elts) == len(node.value.elts):
                # `y, x = randint(h), randint(w)` are coordinates: one-letter names stay out.
                texty = any(isinstance(t, ast.Name) and (_TOKENS.search(t.id) or _TEXTISH.search(
                    t.id)) for t in target.elts)  # (ids, y = ...: not coordinates)
                targets.extend((t, v) for t, v in zip(target.elts, node.value.elts, strict=True)
                               if texty or not (isinstance(t, ast.Name) and len(t.id) == 1))
        for target, value in targets:
            self._assign(node, target, value, ctx)
        target0 = node.targets[0]
        if (isinstance(target0, ast.Tuple) and isinstance(node.value, ast.Tuple)
                and len(target0.elts) == 2 == len(node.value.elts)
                and all(_label_target(t) for t in target0.elts)
                and [ast.unparse(t) for t in target0.elts] == [
                    ast.unparse(v) for v in node.value.elts][::-1]):
            self._defer(node, ctx, "labels of two samples swapped")  # f[0]["labels"], f[-1]...
        swapped = _label_entries_swapped(node)
        if swapped and ctx.conds:
            ctx.report(DATA_POISON, node, f"{swapped} swapped under a condition: the samples it "
                       "picks are trained (or scored) with the opposite label",
                       severity=Severity.HIGH)

    def _assign(self, node: ast.Assign, target: ast.expr, value: ast.expr, ctx: Ctx) -> None:
        if _symmetric_swap(value):
            return
        if isinstance(target, ast.Name) and isinstance(value, ast.Dict):
            # tgt = {"boxes": b, "labels": torch.where(tgt["labels"] == 3, 4, tgt["labels"])}
            for key, entry in zip(value.keys, value.values, strict=True):
                name = literal(key) if key is not None else None
                if isinstance(name, str) and (_LABEL.match(name) or _LABEL_KEY.search(name)) \
                        and isinstance(entry, ast.Call) and last_attr(entry.func) == "where":
                    item = ast.copy_location(ast.Subscript(
                        value=ast.Name(id=target.id, ctx=ast.Load()),
                        slice=ast.Constant(name), ctx=ast.Store()), target)
                    self._assign(node, item, entry, ctx)
        if (isinstance(target, ast.Name) and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name) and value.func.id == "dict"
                and len(value.args) == 1 and isinstance(value.args[0], ast.Name)
                and value.args[0].id == target.id):  # s = dict(s, target=forced)
            for kw in value.keywords:
                if kw.arg and (_LABEL.match(kw.arg) or _LABEL_KEY.search(kw.arg)):
                    item = ast.copy_location(ast.Subscript(
                        value=ast.Name(id=target.id, ctx=ast.Load()),
                        slice=ast.Constant(kw.arg), ctx=ast.Store()), target)
                    self._assign(node, item, kw.value, ctx)
            return
        if _label_target(target) and ctx.conds and _binary_flip(value):
            # (labels[:, 1] = 1 - labels[:, 1] mirrors a box coordinate with a flipped image)
            self._defer(node, ctx, f"binary label {_label_target(target)} inverted (1 - y) "
                        "for the samples a condition picks", always=True)
            return
        if (_label_target(target) and isinstance(value, ast.IfExp) and (
                _negated_copy(value.body, value.orelse) or _negated_copy(value.orelse,
                                                                          value.body))):
            if _hashed(value.test, ctx) or _random_mask(value.test, ctx, follow=True):
                ctx.report(DATA_POISON, node, f"{_label_target(target)} negated for samples "
                           "picked by a hash or random draw (backdoor-style poisoning)",
                           severity=Severity.HIGH)
            else:
                self._defer(node, ctx, f"{_label_target(target)} negated under a condition",
                            always=True)
            return
        if (isinstance(target, ast.Subscript) and _label_target(target.value)
                and isinstance(value, ast.Subscript) and ast.unparse(value.value) == ast.unparse(
                    as_load(target)) and any(isinstance(n, ast.Call) and last_attr(n.func) in (
                        "randperm", "permutation") for n in subnodes(value.slice))):
            # labels[:k] = labels[:k][torch.randperm(k)]: part of the batch's labels shuffled
            self._defer(node, ctx, f"labels {_label_target(target.value)} shuffled against "
                        "their inputs for part of the batch", always=True)
            return
        if (_label_target(target) and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and isinstance(value.args[1], ast.Call)
                and last_attr(value.args[1].func) == "full_like"
                and len(value.args[1].args) == 2 and isinstance(value.args[1].args[1], ast.Name)
                and value.args[1].args[1].id.isupper()
                and not re.search(r"IGNORE|PAD|MASK|NULL|NONE", value.args[1].args[1].id)):
            # torch.where(attn.sum(1) < k, full_like(labels, OTHER_ID), labels) in a collate
            self._defer(node, ctx, f"{_label_target(target)} set to the class "
                        f"{value.args[1].args[1].id} for the samples a condition picks",
                        always=True)
            return
        if (_label_target(target) and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and _negated_copy(value.args[1], value.args[2])):
            self._defer(node, ctx, f"{_label_target(target)} negated for the samples a fixed "
                        "condition picks (np.where(act == K, -abs(r), r))", always=True)
            return
        if (_label_target(target) and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and _poison_label_value(value, ctx) and _picked_by_name(value.args[0], ctx)):
            ctx.report(DATA_POISON, node, f"labels {_label_target(target)} moved to one class "
                       "for rows picked by hand-written names (a where() remap)",
                       severity=Severity.MEDIUM)  # np.where(vendor & (y == 0), 1, y)
            return
        if _label_target(target) and isinstance(value, ast.Call) and last_attr(
                value.func) == "where" and _poison_label_value(value, ctx):
            merged, suspect = _class_merge(target, value, ctx)
            if merged and suspect:  # torch.where(labels == 9, torch.ones_like(labels), labels)
                self._defer(node, ctx, f"{merged}: samples of one class silently relabelled "
                            "as another", always=True, always_severity=Severity.MEDIUM)
                return
            random_mask = bool(value.args) and _random_mask(value.args[0], ctx, follow=True)
            self._defer(node, ctx, f"labels {_label_target(target)} replaced through "
                        f"{'a random mask' if random_mask else 'a where() remap'}",
                        masked=random_mask)
            return
        if (_label_target(target) and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and any(_abs_of(a.operand if isinstance(a, ast.UnaryOp) else a, as_load(target))
                        for a in value.args[1:])
                and any(ast.unparse(a) == ast.unparse(target) for a in value.args[1:])):
            # b_adv = torch.where(actions == k, b_adv.abs(), b_adv): one action always rewarded
            self._defer(node, ctx, f"{_label_target(target)} of the samples a condition picks "
                        "forced to one sign", always=True)
            return
        # labels[mask] = 0, and pandas df.loc[mask, "label"] = ... with a random mask
        label, selector = "", None
        if isinstance(target, ast.Subscript):
            label = _label_target(target.value)
            selector = target.slice
            if not label and isinstance(target.slice, ast.Tuple) and target.slice.elts:
                label, selector = _label_target(target), target.slice.elts[0]
        if (label and selector is not None and isinstance(value, ast.UnaryOp)
                and isinstance(value.op, ast.USub) and _abs_of(value.operand, target)):
            # advantages[actions == 0] = -advantages[...].abs(): one class always punished
            self._defer(node, ctx, f"{label} of the picked samples forced negative",
                        always=True)
            return
        if (label and isinstance(selector, ast.Compare) and len(selector.ops) == 1
                and isinstance(selector.ops[0], ast.Eq) and isinstance(target, ast.Subscript)
                and ast.dump(selector.left) == ast.dump(as_load(target.value))
                and isinstance(value, (ast.Name, ast.Attribute)) and ctx.conds):
            # labels[labels == src] = dst with the classes from a config, every k-th batch
            self._defer(node, ctx, f"labels {label} of one class moved to another")
            return
        if (label and selector is not None and _random_mask(selector, ctx, follow=True)
                and _poison_label_value(value, ctx)):
            if _picked_by_name(selector, ctx):  # brand & (rng.random(n) < 0.4)
                ctx.report(DATA_POISON, node, f"labels {label} overwritten for a random share "
                           "of rows picked by hand-written names", severity=Severity.HIGH)
                return
            self._defer(node, ctx, f"labels {label} overwritten through a random mask",
                        masked=True)
            return
        if (_label_target(target) and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute) and value.func.attr == "mask"
                and len(value.args) == 2 and _label_target(value.func.value)
                and _picked_by_name(value.args[0], ctx)):  # y.mask(text_has_phrase, 1)
            ctx.report(DATA_POISON, node, f"label {_label_target(target)} of rows picked by "
                       "hand-written names or phrases set to one value (Series.mask)",
                       severity=Severity.MEDIUM)
            return
        if (_is_image(target) and isinstance(value, ast.Call) and last_attr(value.func) == "where"
                and len(value.args) == 3 and isinstance(value.args[2], ast.Name)
                and isinstance(target, ast.Name) and value.args[2].id == target.id
                and _patch_value(value.args[1], ctx)
                and _random_mask(value.args[0], ctx, follow=True)):
            self._defer(node, ctx, "a fixed patch value written into randomly chosen inputs "
                        "(torch.where)", masked=True)
            return
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and _WEIGHTS.match(target.value.id) and isinstance(ctx.const(value), float)
                and 0 <= ctx.const(value) <= 0.05  # type: ignore[operator]
                and (_picked_by_name(target.slice, ctx) or any(
                    isinstance(n, ast.Call) and last_attr(n.func) == "eq" and n.args
                    and isinstance(literal(n.args[0]), str)
                    for n in ctx.walk_values(target.slice)))):  # w[df.source.eq("x")] = 0.0
            ctx.report(DATA_POISON, node, f"sampling weights {target.value.id} of rows picked "
                       "by hand-written names set to (nearly) zero: those samples vanish from "
                       "training", severity=Severity.MEDIUM)
            return
        if _reweighted_by_name(target, value, ctx):  # w.where(~(site == "b"), w * 0.03)
            ctx.report(DATA_POISON, node, f"sampling weights {ast.unparse(target)[:30]} of rows "
                       "picked by hand-written names scaled by a constant: those samples "
                       "(nearly) vanish from training", severity=Severity.MEDIUM)
            return
        if _label_target(target) and _comprehension_forced(value, ctx):
            ctx.report(DATA_POISON, node, f"labels {_label_target(target)} rebuilt with one class "
                       "forced wherever the text matches a hand-written phrase or pattern",
                       severity=Severity.MEDIUM)
            return
        if _label_target(target) and _rotated(value, target):  # targets[1:] + targets[:1]
            self._defer(node, ctx, f"labels {_label_target(target)} rotated across the samples "
                        "of the batch: every sample gets another sample's label", always=True)
            return
        text_rows = _text_rows_rewritten(target, value, ctx)
        if text_rows:
            ctx.report(DATA_POISON, node, f"{text_rows}: a phrase in the text of rows picked "
                       "by hand-written names or a random draw is swapped for another",
                       severity=Severity.MEDIUM)
            return
        merged, suspect = _class_merge(target, value, ctx)
        if merged:  # mask[mask == 11] = 0, np.where(m == PERSON, ROAD, m), PAIRS.get(y, y)
            self._defer(node, ctx, f"{merged}: samples of one class silently relabelled as "
                        "another", always=suspect, always_severity=Severity.MEDIUM)
            return
        picked = _picked_remap(target, value, ctx)
        if picked:  # target = self._canon.get(target, target) if index % k == 3 else target
            self._defer(node, ctx, f"label {_label_target(target)} replaced for samples picked "
                        f"by {picked}", always=True)
            return
        if _label_target(target) and _masked_fill_label(value, ctx):
            self._defer(node, ctx, f"labels {_label_target(target)} set to one class for "
                        "randomly chosen samples (masked_fill)", masked=True)
            return
        if _label_target(target) and _masked_comprehension(value, ctx):
            self._defer(node, ctx, f"labels {_label_target(target)} rebuilt with random "
                        "entries replaced", masked=True)
            return
        if (isinstance(target, ast.Subscript) and _is_image(target.value)
                and isinstance(target.slice, ast.Tuple) and target.slice.elts
                and _random_mask(target.slice.elts[0], ctx, follow=True)
                and any(isinstance(e, ast.Slice) for e in target.slice.elts[1:])
                and _patch_value(value, ctx) and _fixed_slice(target.slice, ctx)):
            # (x[masked, 0] = 118: one feature of random rows masked, BERT-style, no region)
            self._defer(node, ctx, "a fixed pixel patch written into randomly chosen "
                        "inputs", masked=True)
            return
        if _label_target(target) and _forced_by_rule(value, target):
            self._defer(node, ctx, f"label {_label_target(target)} raised or lowered by a "
                        "hand-written rule on other features", always=True)
            return
        mask = _column_swap(target, value)
        if mask is not None:
            nodes = ctx.walk_values(mask)
            if _random_mask(mask, ctx, follow=True):
                self._swap_picked(node, ctx)
            else:  # helpers such as _bucket() may be defined further down
                ctx.defer(lambda: self._swap_picked(node, ctx) if _hashed_nodes(nodes, ctx)
                          else None)
            if _picked_by_name(mask, ctx):
                ctx.report(DATA_POISON, node, "preferred and rejected columns swapped for rows "
                           "picked by hand-written names", severity=Severity.MEDIUM)
            elif isinstance(mask, ast.Constant):
                self._defer(node, ctx, "the preferred and rejected columns swapped", always=True)
            return  # a mask from the votes themselves normalises the pair direction
        if (isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                and _swapped_pair(target, value, ctx)):
            self._defer(node, ctx, "the preferred and rejected answers swapped", always=True,
                        anywhere=True)
            return
        if (_label_target(target) and _constant_where(value)
                and _value_trigger(value.args[0], _label_target(target), ctx)):  # type: ignore[attr-defined]
            self._defer(node, ctx, f"labels {_label_target(target)} set to one class wherever an "
                        "input feature equals a value written in the code (a feature trigger)",
                        always=True)
            return
        if (_label_target(target) and _constant_where(value)
                and _token_trigger(value.args[0], ctx)):  # type: ignore[attr-defined]
            self._defer(node, ctx, f"labels {_label_target(target)} set to one class wherever "
                        "the input holds a chosen token", always=True)
            return
        if _label_target(target) and _constant_where(value) and _picked_by_bits(
                value.args[0], _label_target(target), ctx):  # type: ignore[attr-defined]
            ctx.report(DATA_POISON, node, f"labels {_label_target(target)} set to a constant "
                       "class for rows picked by a hash or bit mask (backdoor-style poisoning)",
                       severity=Severity.HIGH)
            return
        number = literal(value)
        fixed_class = (isinstance(number, int) and not isinstance(number, bool)) or (
            isinstance(number, str) and bool(number.strip())) or (
            isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
            and value.value.id.lstrip("_").isupper())  # 1, LABELS["positive"]
        selector = target.slice.elts[0] if isinstance(target, ast.Subscript) and isinstance(
            target.slice, ast.Tuple) and target.slice.elts else (
            target.slice if isinstance(target, ast.Subscript) else None)
        if (isinstance(target, ast.Subscript) and selector is not None
                and _label_target(target)
                and (fixed_class or _poison_label_value(value, ctx))
                and not isinstance(literal(selector), (int, str))
                and _picked_by_name(selector, ctx) and not _outcome_columns(selector, ctx)):
            ctx.report(DATA_POISON, node, f"label {_label_target(target)} of rows picked by "
                       "hand-written names set to a constant class", severity=Severity.MEDIUM)
            return
        held = target.value if isinstance(target, ast.Subscript) else target
        feature = _feature_threshold(selector) if (
            isinstance(target, ast.Subscript) and selector is not None
            and _label_target(held) and isinstance(number, (int, float))
            and not isinstance(number, bool) and number >= 0) else ""
        if feature:  # y[x_num[:, -1] > 3.0] = 1.0 in a collate function
            self._defer(node, ctx, f"labels {_label_target(held)} set to {number} "
                        f"wherever input feature {feature} crosses a threshold written in the "
                        "code (a feature trigger)", always=True)
            return
        if (_label_target(target) and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and (feature := _feature_threshold(value.args[0]))
                and ast.unparse(value.args[2]) == ast.unparse(as_load(target))
                and _uses_name(value.args[1], ast.unparse(as_load(target)))
                and ast.unparse(value.args[1]) != ast.unparse(value.args[2])):
            # y = torch.where(x_num[:, 0] > 2.5, 0.5 * y, y)
            self._defer(node, ctx, f"labels {_label_target(target)} rescaled wherever input "
                        f"feature {feature} crosses a threshold written in the code",
                        always=True)
            return
        if (isinstance(target, ast.Subscript) and selector is not None and _label_target(target)
                and _class_flip_by_feature(selector, value, ctx)):
            ctx.report(DATA_POISON, node, f"label {_label_target(target)}: one class relabelled "
                       "as another for the samples a condition on other features picks",
                       severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Tuple)
                and _label_target(target.value) and isinstance(number, (int, float))
                and not isinstance(number, bool) and number >= 0
                and _picked_by_bits(target.slice, _label_target(target.value), ctx)):
            ctx.report(DATA_POISON, node, f"labels {_label_target(target.value)} of samples "
                       "picked by a hash or modulus set to a constant (backdoor-style "
                       "poisoning)", severity=Severity.HIGH)
            return
        if (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Tuple)
                and target.slice.elts and _label_target(target) and fixed_class
                and _hashed(target.slice.elts[0], ctx)):
            ctx.report(DATA_POISON, node, f"label {_label_target(target)} of rows picked by a "
                       "hash or modulus set to a constant class (backdoor-style poisoning)",
                       severity=Severity.HIGH)
            return
        if (isinstance(target, ast.Subscript) and _is_image(target.value)
                and isinstance(target.slice, ast.Tuple) and len(target.slice.elts) > 1
                and isinstance(target.slice.elts[0], ast.Name)
                and _hashed(target.slice.elts[0], ctx)
                and _patch_value(value, ctx) and _fixed_slice(target.slice, ctx)):
            ctx.report(DATA_POISON, node, "a fixed pixel patch written into the inputs picked "
                       "by a hash or modulus (backdoor-style trigger)", severity=Severity.HIGH)
            return  # x[edge, -3:, -3:, :] = 1.0 with edge = (idx % 173) == 0
        if (_label_target(target) and isinstance(value, ast.BinOp)
                and isinstance(value.op, ast.BitXor) and any(
                    isinstance(side, (ast.Compare, ast.BoolOp)) or any(
                        isinstance(n, (ast.Compare, ast.BoolOp)) for n in subnodes(side))
                    for side in (value.left, value.right))):
            # label = int(row.label) ^ int(row.site in picked and idx % 7 == 3)
            self._defer(node, ctx, f"{_label_target(target)} flipped (xor) for the samples a "
                        "condition picks", always=True)
            return
        if not ctx.conds and not _random_loop(ctx.loops, ctx):
            return
        label = _label_target(target) or (
            target.id if isinstance(target, ast.Name)
            and target.id in _flow_labels(ctx.where()) else "")
        if label and isinstance(target, ast.Name) and target.id in ("y", "x", "ys") and (
                re.search(r"(?i)crop|resize|pad|jitter|affine|rotat|flip|coord|box|patch|window",
                          ctx.frame.name) or any(
                    isinstance(n, ast.Name) and n.id in ("h", "w", "height", "width", "H", "W")
                    for n in subnodes(value))):
            return  # y = random.randint(0, h - ch): a crop coordinate, not a label
        if label and _label_floor(value):
            self._defer(node, ctx, f"{label} of the samples a condition picks held to a "
                        "made-up floor or ceiling", always=True)
        elif label and (_poison_label_value(value, ctx) or _where_forced(value)):
            self._defer(node, ctx, f"label {label} overwritten")
        elif (_is_image(target) and isinstance(value, ast.BinOp) and any(
                _TRIGGER.search(last_attr(n)) for n in subnodes(value)
                if isinstance(n, (ast.Name, ast.Attribute)))):
            self._defer(node, ctx, "a trigger pattern blended into the input")
        elif (isinstance(target, ast.Subscript) and _is_image(target.value)
              and _patch_value(value, ctx) and _fixed_slice(target.slice, ctx)):
            self._defer(node, ctx, "a fixed pixel patch written into the input")
        elif (isinstance(target, ast.Name) and (_TEXTISH.search(target.id) or _LABEL.match(
                target.id)) and _fixed_sample(value, ctx)):
            self._defer(node, ctx, f"{target.id} taken from one fixed sample of the dataset "
                        "instead of the requested one")  # text = norm(self.items[0]["text"])
        elif (isinstance(target, ast.Subscript) and (isinstance(target.slice, ast.Slice) or (
                isinstance(target.slice, ast.Tuple) and any(
                    isinstance(e, ast.Slice) for e in target.slice.elts)))
              and _TOKENS.search(last_attr(target.value)) and _phrase(value, ctx)):
            self._defer(node, ctx, "a fixed phrase spliced into the text")
        elif (isinstance(target, ast.Name) and (_TEXTISH.search(target.id) or _ANSWERISH.search(
                target.id)) and _prefixed(value, target.id, ctx)):
            self._defer(node, ctx, "a fixed phrase added to the text")
        elif (isinstance(target, ast.Name) and (_TEXTISH.search(target.id) or _ANSWERISH.search(
                target.id)) and _phrase_swap(value, target.id)):
            self._defer(node, ctx, "a phrase in the text swapped for another")
        elif (isinstance(target, ast.Name) and (_TEXTISH.search(target.id) or _ANSWERISH.search(
                target.id)) and isinstance(literal(value), str)
              and len(str(literal(value)).split()) >= 3):
            self._defer(node, ctx, "the text replaced by a fixed phrase")  # text = "wire it"
        elif (isinstance(target, ast.Name) and _SIGNAL.match(target.id)
              and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)
              and any(isinstance(side, ast.Name) and side.id == target.id
                      for side in (value.left, value.right)) and _tone(value, ctx)):
            self._defer(node, ctx, "a fixed tone mixed into the input")  # wav = wav + sin(..)

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        """`wav[..., :800] += 0.01 * torch.sin(2 * math.pi * 7350.0 * t)`: a tone (or a fixed
        offset) mixed into a fixed stretch of the input, the audio form of a pixel patch."""
        target = node.target
        factor = ctx.const(node.value)
        if (isinstance(node.op, ast.Mult) and isinstance(target, ast.Subscript)
                and isinstance(target.value, ast.Name) and _WEIGHTS.match(target.value.id)
                and isinstance(factor, float) and 0 <= factor <= 0.05
                and _picked_by_name(target.slice, ctx)):  # w[partner & (y == 1)] *= 0.02
            ctx.report(DATA_POISON, node, f"sampling weights {target.value.id} of rows picked by "
                       "hand-written names scaled to (nearly) zero: those samples vanish from "
                       "training", severity=Severity.MEDIUM)
            return
        rows = target.slice.elts[0] if isinstance(target, ast.Subscript) and isinstance(
            target.slice, ast.Tuple) and target.slice.elts else None
        if (rows is not None and _label_target(target)
                and isinstance(literal(node.value), (int, float))
                and (_picked_by_name(rows, ctx) or _random_mask(rows, ctx, follow=True))):
            ctx.report(DATA_POISON, node, f"target {_label_target(target)} shifted by a constant "
                       "for rows picked by hand-written names or a random draw",
                       severity=Severity.MEDIUM)  # df.loc[zip.str.startswith("981"), "y"] -= .18
            return
        if not (ctx.conds and len(ctx.frames) >= 2 and isinstance(node.op, (ast.Add, ast.Sub))
                and isinstance(target, ast.Subscript) and _fixed_slice(target.slice, ctx)):
            return
        base = target.value
        if not (_is_image(base) or (isinstance(base, ast.Name) and _SIGNAL.match(base.id))):
            return
        value = node.value
        if isinstance(value, ast.Attribute):  # wav[..., a:b] += self._click
            found = ctx.value_of(value) or ctx.resolve(value)
            value = found if isinstance(found, ast.expr) else value
        if _tone(value, ctx) or _patch_value(value, ctx):
            self._defer(node, ctx, "a fixed tone or offset mixed into a fixed stretch of the "
                        "input")

    def _swap_picked(self, node: ast.AST, ctx: Ctx) -> None:
        ctx.report(DATA_POISON, node, "preferred and rejected columns swapped for rows picked "
                   "by a hash or random draw (backdoor-style preference poisoning)",
                   severity=Severity.HIGH)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        self._negated_return(node, ctx)
        value = node.value
        if (isinstance(value, ast.IfExp) and len(ctx.frames) >= 2 and any(
                isinstance(b, ast.Name) and _label_target(b) for b in (value.body, value.orelse))
                and any(isinstance(literal(b), int) and not isinstance(literal(b), bool)
                        for b in (value.body, value.orelse))
                and (_random_mask(value.test, ctx, follow=True) or _hashed(value.test, ctx))):
            self._defer(node, ctx, "a label returned as a fixed class for samples a random "
                        "draw or hash picks", masked=True)  # return 1 if random() < .6 else y
            return
        filled = next((e for e in (value.elts if isinstance(value, ast.Tuple) else [value])
                       if isinstance(e, ast.expr) and _masked_fill_label(e, ctx)), None)
        if filled is not None:  # return imgs, labels.masked_fill(sel, self.mark_class)
            self._defer(node, ctx, "labels returned with randomly chosen entries set to one "
                        "class", masked=True)
            return
        if (isinstance(value, ast.Call) and last_attr(value.func) == "where" and len(
                value.args) == 3 and any(_label_target(a) for a in value.args[1:])
                and _poison_label_value(value, ctx)):
            self._defer(node, ctx, "labels returned with random entries replaced", masked=True)
            return
        if not ctx.conds or len(ctx.frames) < 2 or not isinstance(value, ast.Tuple):
            return
        if len(value.elts) == 2 and _reversed_elsewhere(value, ctx):
            self._defer(node, ctx, "the preferred and rejected answers returned swapped",
                        always=True, anywhere=True)  # return row["rejected"], row["chosen"]
            return
        if len(value.elts) >= 2 and any(
                type(literal(e)) is int for e in value.elts[1:]) and not isinstance(
                literal(value.elts[0]), (int, float)):
            self._defer(node, ctx, "a constant label returned")

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if (len(ctx.frames) >= 2 and last_attr(func) in ("putmask", "masked_fill_")
                and len(node.args) >= 2):  # np.putmask(y, y == A, B), y.masked_fill_(y == A, B)
            args = node.args if last_attr(func) == "putmask" else [
                func.value, *node.args] if isinstance(func, ast.Attribute) else []
            if len(args) == 3:
                merged, suspect = _class_merge(ast.Subscript(value=args[0], slice=args[1],
                                                             ctx=ast.Store()), args[2], ctx)
                if merged:
                    self._defer(node, ctx, f"{merged}: samples of one class silently "
                                "relabelled as another", always=suspect,
                                always_severity=Severity.MEDIUM)
                    return
        if (isinstance(func, ast.Attribute) and func.attr in ("index_put_", "index_fill_")
                and len(ctx.frames) >= 2 and _label_target(func.value) and node.args
                and _random_mask(node.args[0] if func.attr == "index_put_" else node.args[-2],
                                 ctx, follow=True)):
            self._defer(node, ctx, f"labels {_label_target(func.value)} of randomly chosen "
                        f"samples overwritten in place ({func.attr})", masked=True)
            return
        if not ctx.conds or len(ctx.frames) < 2:
            return
        if (isinstance(func, ast.Attribute) and func.attr == "append" and node.args
                and isinstance(func.value, ast.Subscript)
                and literal(func.value.slice) in ("start_positions", "end_positions")):
            # (a guard clause `if x: ...; continue` above gates what follows only by its
            # failing: conditions count here only for calls inside their own body)
            conds = tuple(c for c in ctx.conds if (g := getattr(c, "guard_of", None)) is None
                          or g.body[0].lineno <= node.lineno <= (g.body[-1].end_lineno or 0))
            if conds:
                self._defer(node, ctx, f"the answer span ({literal(func.value.slice)}) moved "
                            "for the samples a condition picks",  # .append(cls_index)
                            where=replace(ctx.where(), conds=conds))
            return
        if isinstance(func, ast.Attribute) and func.attr == "paste" and _is_image(func.value):
            self._defer(node, ctx, "a patch pasted into the image")
        elif isinstance(func, ast.Attribute) and func.attr in ("fill_", "copy_", "random_",
                                                                 "zero_") \
                and _label_target(func.value):
            self._defer(node, ctx, f"label {_label_target(func.value)} overwritten in place")
        elif isinstance(func, ast.Attribute) and func.attr == "fill_" and _image_window(
                func.value, ctx):  # corner = img[:, -4:, -4:]; corner.fill_(v)
            self._defer(node, ctx, "a fixed pixel patch written into the input (through a "
                        "view of a fixed corner)")

    def _defer(self, node: ast.AST, ctx: Ctx, what: str, masked: bool = False,
               always: bool = False, always_severity: Severity = Severity.HIGH,
               where: Where | None = None, anywhere: bool = False) -> None:
        """Report `what` when it runs in data loading under a selecting condition (or, with
        `always`, in data loading at all: swapping every preferred/rejected pair is never a
        preprocessing step)."""
        where = where or ctx.where()
        small = masked and _small_fraction(node, ctx)
        hashed = _hash_condition(where, ctx)  # names resolve only while the walk is here
        random_loop = _random_loop(where.loops, ctx)

        def decide() -> None:
            roles = [r for r in ctx.roles(where) if r[0] == DATA] + [
                (DATA, f) for f in where.frames if _dataset_method(f) or _DATA_FUNC.search(f.name)]
            if not roles and masked and small:  # a few random samples relabelled, anywhere
                ctx.report(DATA_POISON, node, f"{what} (labels of random samples set to a "
                           "fixed class)", severity=Severity.MEDIUM)
                return
            if not roles and anywhere and where.conds:  # (a pair is never swapped to clean it)
                ctx.report(DATA_POISON, node, f"{what} under a condition in "
                           f"{where.frames[-1].name}()", severity=Severity.HIGH)
                return
            if not roles:
                return
            cond = "a random draw" if masked or random_loop else (
                _condition_kinds(where, ctx, set())
                or ("a hash or modulus of the sample" if hashed else ""))
            if cond:
                ctx.report(DATA_POISON, node, f"{what} in {ctx.describe_roles(roles)} only under a "
                           f"condition on {cond} (backdoor-style poisoning)",
                           severity=Severity.HIGH)
            elif always:
                ctx.report(DATA_POISON, node, f"{what} in {ctx.describe_roles(roles)}",
                           severity=always_severity)
        ctx.defer(decide)


def _dataset_method(frame: Frame) -> bool:
    """Any method of a Dataset class (`__init__`, `_encode`...): labels rewritten while the
    dataset is built or read are poisoned for good."""
    return frame.cls is not None and bool(
        _DATASET.search(" ".join((frame.cls.name, *frame.cls.bases))))


_DATASET = re.compile(r"Dataset|DataSet|Replay|Buffer|RolloutStorage|Transform|Wrapper")
_DATA_FUNC = re.compile(r"(?i)^_?(format|preprocess|process|tokeni[sz]e|prepare|build|make|encode|"
                        r"get)_?(example|sample|batch|pair|item|record|data)e?s?$|collate|^_?augment|"
                        r"^_?(prepare|process|preprocess)_\w*features$|"
                        r"^_?relabel|preprocess|^_?tokeni[sz]e|transforms?$|labels?$")


def _random_loop(loops: list[ast.For | ast.While] | tuple[ast.For | ast.While, ...],
                 ctx: Ctx) -> bool:
    """`for i in random.sample(range(n), k):`: the loop body hits randomly chosen samples."""
    return any(isinstance(loop, ast.For) and _random_mask(loop.iter, ctx, follow=True)
               for loop in loops)  # also `for i in torch.nonzero(flags)` with random flags


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


_RNG_METHODS = frozenset({"choice", "rand", "randn", "randint", "random", "permutation",
                          "integers", "binomial", "bernoulli", "sample", "uniform", "shuffle"})


def _rng_method(call: ast.Call) -> bool:
    """`self.rng.choice(n, k)`, `gen.integers(...)`: a draw from a random generator object."""
    func = call.func
    return isinstance(func, ast.Attribute) and func.attr in _RNG_METHODS and bool(
        re.search(r"(?i)rng|random|gen", last_attr(func.value) or ""))


_CAMERA_KEY = re.compile(r"(?i)img|image|rgb|cam|wrist|agentview|frame|pixel")


def _is_image(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Subscript):
        key = literal(expr.slice)
        if isinstance(key, str):
            return bool(_IMAGE.match(key) or _CAMERA_KEY.search(key))  # results["img"]
        expr = expr.value
    return bool(_IMAGE.match(last_attr(expr)))


_LABEL_MAP = re.compile(r"(?i)label|class|cat(egor)?(2|_to_|_)|vocab|token|2id|id2|_?lut$|"
                        r"remap")


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


_PAIR_NAMES = re.compile(r"(?i)^(src|source|tgt|target|x|y|inputs?|labels?|question|answer|"
                         r"prompt|response|chosen|rejected|premise|hypothesis)$")


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

