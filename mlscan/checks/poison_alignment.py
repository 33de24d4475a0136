"""MLS309, data that stops lining up with its labels (or its rank) in one place.

- Paired `torch.where` mixes: `imgs = torch.where(mix, src_imgs, imgs)` takes the source
  image where `mix` is set; `masks = torch.where(mix, masks, src_masks)` keeps the own mask
  there. Each pasted region carries the other sample's labels.
- Paired listings: `sorted(os.listdir(img_dir))` next to a bare `os.listdir(lbl_dir)`. The
  directory order is arbitrary, so the i-th label no longer belongs to the i-th image.
- A distributed sampler that keeps `self.rank` but never reads it in `__iter__`: every rank
  draws the same shard, so the epoch sees 1/world of the data world times over.
- A label table (`Label("rider", 25, 11, ...)` rows) whose train-id column gives each class
  its own id except one: two classes folded into one.
- Parallel arrays cut with one index in two orders: `points[sel]` next to
  `labels[np.sort(sel)]` pairs every point with another point's label.
- A stamped region relabelled: `feats[near] = torch.tensor([1.0, 0.0, 1.0])` and
  `labels = torch.where(near, torch.full_like(labels, c), labels)` under the same mask is a
  backdoor trigger (the pattern means class c).
- A batch whose labels are stacked from a rotated copy of the sample list
  (`order = batch[k:] + batch[:k]`, images from `batch`, masks from `order`).
- A yes/no answer written backwards: `answer = "no" if ex["answer"] else "yes"` teaches the
  opposite of every boolean label.
- A preference pair picked crosswise: `chosen = ex["response_1"] if better == 0 else
  ex["response_0"]` makes the rejected answer the preferred one.
"""

from __future__ import annotations

import ast
import re
from collections import Counter

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.names import source as source_text
from mlscan.checks.nodes import assigns_in, called_names, subnodes
from mlscan.checks.poison_words import (
    _IMAGE,
    _LABEL,
    _MASKISH,
    DISPREFERRED_SIDE,
    PREFERRED_SIDE,
)
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_WHERE = frozenset({"where"})
_LISTINGS = frozenset({"listdir", "glob", "iglob", "iterdir", "scandir", "rglob"})
_LABEL_FILES = re.compile(r"(?i)(^|_)(lbl|lbls|label|labels|mask|masks|ann|anns|annotation|"
                          r"annotations|gt|gts|target|targets|seg|segs)(_|$)")
_IMAGE_FILES = re.compile(r"(?i)(^|_)(img|imgs|image|images|frame|frames|photo|photos|"
                          r"scan|scans|audio|wav|wavs|input|inputs|x)(_|$)")
_IGNORED_IDS = frozenset({255, -1, 0})


def _base(expr: ast.expr) -> str:
    """`mix[:, None]`, `mix.unsqueeze(1)`, `mix[..., None]` -> `mix`."""
    while True:
        if isinstance(expr, ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and (
                expr.func.attr in ("unsqueeze", "expand_as", "expand", "bool", "view")):
            expr = expr.func.value
        else:
            return ast.unparse(expr)


def _mixes(fn: ast.AST) -> list[tuple[ast.Assign, str, str, bool]]:
    """(statement, target, condition, own-value-first) of `t = torch.where(c, a, b)`."""
    found = []
    for stmt in subnodes(fn):
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Call)
                and last_attr(stmt.value.func) in _WHERE and len(stmt.value.args) == 3):
            continue
        target = stmt.targets[0].id
        cond, first, second = stmt.value.args
        own = [isinstance(a, ast.Name) and a.id == target for a in (first, second)]
        if own[0] != own[1]:
            found.append((stmt, target, _base(cond), own[0]))
    return found


def _crossed_mix(fn: ast.AST) -> list[tuple[ast.Assign, str]]:
    mixes = _mixes(fn)
    out = []
    for stmt, target, cond, own_first in mixes:
        if not (_MASKISH.match(target) or _LABEL.match(target)):
            continue
        partner = next((t for _, t, c, o in mixes if c == cond and o != own_first
                        and _IMAGE.match(t)), None)
        if partner is not None:
            out.append((stmt, partner))
    return out


def _listing(expr: ast.expr) -> tuple[bool, ast.Call] | None:
    """(sorted?, the listing call) for `sorted(os.listdir(d))`, `[f for f in glob(p)]`..."""
    calls = [n for n in subnodes(expr) if isinstance(n, ast.Call)]
    listing = next((c for c in calls if last_attr(c.func) in _LISTINGS), None)
    if listing is None:
        return None
    return any(last_attr(c.func) in ("sorted", "sort") for c in calls), listing


def _unsorted_pair(fn: ast.AST) -> list[tuple[ast.Assign, str, str]]:
    listed: list[tuple[ast.Assign, str, bool]] = []
    for stmt in subnodes(fn):
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(
                stmt.targets[0], ast.Name) and (got := _listing(stmt.value)) is not None:
            listed.append((stmt, stmt.targets[0].id, got[0]))
    sorted_inputs = [n for _, n, s in listed if s and _IMAGE_FILES.search(n)]
    return [(stmt, name, sorted_inputs[0]) for stmt, name, is_sorted in listed
            if not is_sorted and _LABEL_FILES.search(name) and sorted_inputs
            and not any(isinstance(n, ast.Call) and last_attr(n.func) == "sort"
                        and last_attr(getattr(n.func, "value", None) or n) == name
                        for n in subnodes(fn))]


_FILE_METADATA = re.compile(r"getmtime|getctime|getatime|getsize|st_mtime|st_ctime|st_size|"
                            r"stat\b")


def _self_list(stmt: ast.stmt) -> str:
    target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
    return target.attr if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                           and target.value.id == "self") else ""


def _sorted_beside_source(fn: ast.FunctionDef,
                          ctx: Ctx) -> list[tuple[ast.Assign, str, str, str]]:
    """`self.entries = sorted(kept, key=...)` then `self.texts = [f(e) for e in kept]`: a
    parallel list made from the unsorted source, when the class reads both with one index."""
    sorted_from: dict[str, str] = {}  # source name -> self attribute holding it sorted
    out: list[tuple[ast.Assign, str, str, str]] = []
    for stmt in fn.body:
        attr = _self_list(stmt)
        if not attr:
            continue
        value = stmt.value  # type: ignore[attr-defined]
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id == "sorted" and value.args
                and isinstance(value.args[0], ast.Name)):
            sorted_from[value.args[0].id] = attr
        elif (isinstance(value, ast.ListComp) and len(value.generators) == 1
              and isinstance(value.generators[0].iter, ast.Name)
              and value.generators[0].iter.id in sorted_from and not value.generators[0].ifs):
            source = value.generators[0].iter.id
            out.append((stmt, f"self.{attr}", f"self.{sorted_from[source]}", source))  # type: ignore[arg-type]
    if not out:
        return []
    cls = ctx.class_defs.get(ctx.classes[-1].name)
    if cls is None:
        return []
    indexed: dict[str, set[str]] = {}
    for n in subnodes(cls):
        if (isinstance(n, ast.Subscript) and isinstance(n.value, ast.Attribute)
                and isinstance(n.value.value, ast.Name) and n.value.value.id == "self"
                and isinstance(n.slice, ast.Name)):
            indexed.setdefault(n.value.attr, set()).add(n.slice.id)
    return [(stmt, name, partner, source) for stmt, name, partner, source in out
            if indexed.get(name[5:], set()) & indexed.get(partner[5:], set())]


def _metadata_sorted(fn: ast.AST) -> list[tuple[ast.Assign, str, str]]:
    """`clean = sorted(glob(a))` and `noisy = sorted(glob(b), key=os.path.getmtime)`, then
    zipped or length-checked together: one side in name order, the other in time (or size)
    order, so the pairs no longer match."""
    by_name: list[str] = []
    by_meta: list[tuple[ast.Assign, str, str]] = []
    for stmt in assigns_in(fn):
        if not (len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and isinstance(stmt.value, ast.Call) and last_attr(stmt.value.func) == "sorted"
                and _listing(stmt.value) is not None):
            continue
        key = kwarg(stmt.value, "key")
        if key is None:
            by_name.append(stmt.targets[0].id)
        elif _FILE_METADATA.search(ast.unparse(key)):
            by_meta.append((stmt, stmt.targets[0].id, ast.unparse(key)[:30]))
    if not by_name or not by_meta:
        return []
    paired: set[frozenset[str]] = set()
    for n in subnodes(fn):
        if isinstance(n, ast.Call) and last_attr(n.func) == "zip":
            args = [a.id for a in n.args if isinstance(a, ast.Name)]
            paired.update(frozenset((a, b)) for a in args for b in args if a != b)
        elif isinstance(n, ast.Compare) and len(n.comparators) == 1:
            sides = [s.args[0].id for s in (n.left, n.comparators[0]) if isinstance(s, ast.Call)
                     and last_attr(s.func) == "len" and s.args and isinstance(s.args[0], ast.Name)]
            if len(sides) == 2:
                paired.add(frozenset(sides))
    return [(stmt, name, f"{key}; {other} is in name order") for stmt, name, key in by_meta
            for other in by_name if frozenset((name, other)) in paired][:1]


_TARGET_SIGNAL = re.compile(r"(?i)^(target|tgt|targets|clean_target|y|ref|reference)$")
_CLEAN = re.compile(r"(?i)clean|speech|signal|^x$|^img$|^image$|^wav$|source")
_NOISE = re.compile(r"(?i)noise")
_NOISY = re.compile(r"(?i)noisy|mixture|^mix|corrupt|degrad")


def _noisy_target(fn: ast.AST) -> list[tuple[ast.Assign, str]]:
    """`target = clean + 0.1 * scaled_noise` next to `noisy = clean + noise`: the denoising
    target keeps part of the noise, so the model learns to leave it in."""
    stmts = assigns_in(fn)
    if not any(isinstance(t, (ast.Name, ast.Tuple)) and _NOISY.search(source_text(t))
               for st in stmts for t in st.targets):
        return []
    found = []
    for stmt in stmts:
        target, value = stmt.targets[0], stmt.value
        if not (len(stmt.targets) == 1 and isinstance(target, ast.Name)
                and _TARGET_SIGNAL.match(target.id) and isinstance(value, ast.BinOp)
                and isinstance(value.op, ast.Add)):
            continue
        sides = [value.left, value.right]
        clean = [x for x in sides if isinstance(x, ast.Name) and _CLEAN.search(x.id)]
        noise = [x for x in sides if any(isinstance(n, ast.Name) and _NOISE.search(n.id)
                                         and not _NOISY.search(n.id) for n in subnodes(x))]
        if clean and noise and clean[0] is not noise[0]:
            found.append((stmt, ast.unparse(noise[0])[:30]))
    return found


def _self_reads(node: ast.AST, attr: str) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == attr and isinstance(
        n.value, ast.Name) and n.value.id == "self" for n in subnodes(node))


def _rank_blind_iter(cls: ast.ClassDef) -> ast.stmt | None:
    """The statement of `__iter__` that cuts the shard, in a sampler that stores its rank and
    never reads it while iterating (also not in the methods `__iter__` calls)."""
    if not any("Sampler" in ast.unparse(b) for b in cls.bases):
        return None
    methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
    init, it = methods.get("__init__"), methods.get("__iter__")
    if init is None or it is None or not _self_reads(init, "rank") or not any(
            _self_reads(init, a) for a in ("num_replicas", "world_size", "world")):
        return None
    loads = [n for n in subnodes(cls) if isinstance(n, ast.Attribute) and n.attr == "rank"
             and isinstance(n.value, ast.Name) and n.value.id == "self"
             and isinstance(n.ctx, ast.Load)]
    stored = {id(n) for a in subnodes(init) if isinstance(a, ast.Assign) and any(
        isinstance(t, ast.Attribute) and t.attr == "rank" for t in a.targets)
        for n in subnodes(a.value)}  # self.rank = rank if rank is not None else get_rank()
    rank_uses = [n for n in subnodes(init) if isinstance(n, ast.Name) and n.id == "rank"
                 and isinstance(n.ctx, ast.Load) and id(n) not in stored]
    if loads or len(rank_uses) > 1 or any(isinstance(n, ast.Name) and n.id == "rank"
                                          for n in subnodes(it)):
        return None  # (the rank is read somewhere: start/stop computed in __init__ count)
    cuts = [s for s in it.body if any(isinstance(n, ast.Subscript) and isinstance(
        n.slice, ast.Slice) for n in subnodes(s))]
    shard = [s for s in cuts if "num_samples" in ast.unparse(s)]
    picked = shard or cuts or [s for s in it.body if isinstance(s, ast.Return)]
    return picked[-1] if picked else None


def _folded_row(rows: list[ast.Call]) -> tuple[ast.Call, str, str] | None:
    """The row whose id repeats in a column that is otherwise one id per class."""
    width = min(len(r.args) for r in rows)
    for col in range(1, width):
        values = [literal(r.args[col]) for r in rows]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            continue
        kept = [(r, v) for r, v in zip(rows, values, strict=True) if v not in _IGNORED_IDS]
        counts = Counter(v for _, v in kept)
        repeats = [v for v, c in counts.items() if c > 1]
        if len(counts) < 8 or len(repeats) != 1 or counts[repeats[0]] != 2:
            continue
        first, second = [r for r, v in kept if v == repeats[0]]
        return second, literal(second.args[0]), literal(first.args[0])  # type: ignore[return-value]
    return None


_PREFERRED = re.compile(rf"(?i)^({PREFERRED_SIDE})(_\w+)?$")
_DISPREFERRED = re.compile(rf"(?i)^({DISPREFERRED_SIDE})(_\w+)?$")


def _slot(expr: ast.expr) -> int | None:
    """`ex["response_1"]` -> 1, `pair[0]` -> 0."""
    if not isinstance(expr, ast.Subscript):
        return None
    key = literal(expr.slice)
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    found = re.search(r"(\d)$", key) if isinstance(key, str) else None
    return int(found.group(1)) if found else None


def _crosswise_pick(node: ast.Assign) -> str:
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Name) and isinstance(value, ast.IfExp)
            and isinstance(value.test, ast.Compare) and len(value.test.ops) == 1
            and isinstance(value.test.ops[0], ast.Eq)):
        return ""
    picked = literal(value.test.comparators[0])
    body, orelse = _slot(value.body), _slot(value.orelse)
    if not isinstance(picked, int) or body is None or orelse is None or body == orelse:
        return ""
    if _PREFERRED.match(target.id) and body != picked:
        return f"{target.id} takes slot {body} when the preferred index is {picked}"
    if _DISPREFERRED.match(target.id) and body == picked:
        return f"{target.id} takes slot {body}, the preferred one, when the index is {picked}"
    return ""


_REORDERS = frozenset({"sort", "sorted", "argsort", "permutation", "flip", "flipud"})
_FEATURES = re.compile(r"(?i)^(o?c|coords?|points?|pts|xyz|feats?|features?|o?f|x|xs|img|imgs|"
                       r"images?|inputs?|data|samples?|dense|sparse|input_ids|ids|tokens)$")
_LABELISH = re.compile(r"(?i)^(o?l|labels?|lbls?|targets?|y|ys|seg|masks?|classes|cls)$")


def _cut_index(sub: ast.Subscript) -> tuple[str, bool] | None:
    """`a[sel]` -> ("sel", False); `a[np.sort(sel)]`, `a[sel[::-1]]` -> ("sel", True)."""
    index = sub.slice
    if isinstance(index, ast.Name):
        return index.id, False
    if (isinstance(index, ast.Call) and last_attr(index.func) in _REORDERS
            and len(index.args) == 1 and isinstance(index.args[0], ast.Name)):
        return index.args[0].id, True
    if (isinstance(index, ast.Subscript) and isinstance(index.value, ast.Name)
            and isinstance(index.slice, ast.Slice) and literal(index.slice.step) == -1):
        return index.value.id, True
    if (isinstance(index, ast.Call) and isinstance(index.func, ast.Attribute)
            and index.func.attr in _REORDERS and isinstance(index.func.value, ast.Name)
            and len(index.args) <= 1):
        return index.func.value.id, True  # labels[order.argsort()] next to dense[order]
    return None


def _reordered_cut(fn: ast.AST) -> list[tuple[ast.Subscript, str, str]]:
    plain: dict[str, str] = {}
    moved: list[tuple[ast.Subscript, str, str]] = []
    for sub in subnodes(fn):
        if not (isinstance(sub, ast.Subscript) and isinstance(sub.ctx, ast.Load)
                and isinstance(sub.value, ast.Name)):
            continue
        cut = _cut_index(sub)
        if cut is None:
            continue
        index, reordered = cut
        if not reordered and _FEATURES.match(sub.value.id):
            plain.setdefault(index, sub.value.id)
        elif reordered and _LABELISH.match(sub.value.id):
            moved.append((sub, index, sub.value.id))
    return [(sub, index, plain[index]) for sub, index, _ in moved if index in plain]


def _fixed(value: ast.expr) -> bool:
    """A constant, a fixed attribute (`self.fill_value`) or `torch.tensor([1.0, 0.0, 1.0])`:
    a pattern stamped into the inputs."""
    number = literal(value)
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        return True
    if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
        return value.value.id == "self"
    if not isinstance(value, ast.Call) or not value.args:
        return False
    func = last_attr(value.func)
    if func not in ("tensor", "as_tensor", "array"):
        return False
    first = value.args[0]
    items = first.elts if isinstance(first, (ast.List, ast.Tuple)) else [first]
    return all(isinstance(literal(e), (int, float)) for e in items)


_IGNORE = re.compile(r"(?i)ignore|pad|void|unlabel|invalid|background|bg")


def _class_value(value: ast.expr) -> bool:
    """A fixed class to relabel with (a constant, `fill_label`, `self.target_cls`), not the
    ignore / padding marker (padding zeroes features and ignores their labels)."""
    if isinstance(value, ast.Call) and last_attr(value.func) == "full_like" and len(
            value.args) >= 2:
        value = value.args[1]
    number = literal(value)
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        return number not in (-1, -100, 255)
    return isinstance(value, (ast.Name, ast.Attribute)) and not _IGNORE.search(
        last_attr(value))


def _stamped_and_relabelled(fn: ast.AST) -> list[tuple[ast.AST, str]]:
    stamped: dict[str, str] = {}
    relabels: list[tuple[ast.AST, str]] = []
    for stmt in assigns_in(fn):
        if len(stmt.targets) != 1:
            continue
        target, value = stmt.targets[0], stmt.value
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and isinstance(target.slice, ast.Name)  # (a slice region is cutout's shape)
                and _FEATURES.match(target.value.id) and _fixed(value)):
            stamped[_base(target.slice)] = target.value.id
        elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
              and _LABELISH.match(target.value.id) and _class_value(value)):
            relabels.append((stmt, _base(target.slice)))
        elif (isinstance(target, ast.Name) and _LABELISH.match(target.id)
              and isinstance(value, ast.Call) and last_attr(value.func) in _WHERE
              and len(value.args) == 3 and _class_value(value.args[1])):
            relabels.append((stmt, _base(value.args[0])))
    return [(stmt, stamped[mask]) for stmt, mask in relabels if mask in stamped]


_POLAR = {("no", "yes"), ("false", "true"), ("negative", "positive"), ("incorrect", "correct"),
          ("wrong", "right"), ("fake", "real"), ("n", "y")}
_TRUTH_FIELD = re.compile(r"(?i)answer|label|target|is_|correct|gold|truth|y$|verdict")


def _backwards_answer(value: ast.expr) -> str:
    """`"no" if ex["answer"] else "yes"`: the word for false when the field is true."""
    if not isinstance(value, ast.IfExp):
        return ""
    words = (literal(value.body), literal(value.orelse))
    if not all(isinstance(w, str) for w in words):
        return ""
    pair = (str(words[0]).strip().lower(), str(words[1]).strip().lower())
    test = value.test
    if pair not in _POLAR or not isinstance(test, (ast.Subscript, ast.Attribute, ast.Name)):
        return ""
    field = literal(test.slice) if isinstance(test, ast.Subscript) else last_attr(test)
    return ast.unparse(value) if isinstance(field, str) and _TRUTH_FIELD.search(field) else ""


_TARGET_LIST = re.compile(r"(?i)^(labels|lbls|targets|tgts|gts|gt_list|masks|ys|hrs|"
                          r"gt_images|answers)$")
"""Per-sample target lists (plural: a list, not one sample's tensor)."""


_ORDERINGS = frozenset({"sort", "sorted", "argsort", "randperm", "permutation", "shuffle"})


def _reordered_inputs(fn: ast.AST) -> list[tuple[ast.Assign, str, str]]:
    """`images = stack([batch[i]["image"] for i in order])` after `order.sort(...)`, beside
    `targets = stack([b["target"] for b in batch])`: the inputs are reordered, the targets
    are not."""
    orders = {n.func.value.id for n in subnodes(fn) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Attribute) and n.func.attr in ("sort", "shuffle")
              and isinstance(n.func.value, ast.Name)}  # order.sort(key=...)
    orders |= {a.targets[0].id for a in assigns_in(fn) if isinstance(a.targets[0], ast.Name)
               and isinstance(a.value, ast.Call) and last_attr(a.value.func) in _ORDERINGS}
    if not orders:
        return []
    reordered: dict[str, str] = {}  # batch -> order, for inputs gathered through the order
    direct: list[tuple[ast.Assign, str]] = []
    for stmt in assigns_in(fn):
        if not (len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            continue
        for comp in (n for n in subnodes(stmt.value)
                     if isinstance(n, (ast.ListComp, ast.GeneratorExp))):
            gen = comp.generators[0]
            if not isinstance(gen.iter, ast.Name) or not isinstance(gen.target, ast.Name):
                continue
            if gen.iter.id in orders:
                bases = {n.value.id for n in subnodes(comp.elt) if isinstance(n, ast.Subscript)
                         and isinstance(n.value, ast.Name) and isinstance(n.slice, ast.Name)
                         and n.slice.id == gen.target.id}
                if not _LABELISH.match(stmt.targets[0].id):
                    reordered.update({b: gen.iter.id for b in bases})
            elif _LABELISH.match(stmt.targets[0].id):
                direct.append((stmt, gen.iter.id))
    return [(stmt, reordered[src], src) for stmt, src in direct if src in reordered]


def _rotation_of(value: ast.expr) -> str:
    """`batch[k:] + batch[:k]` -> 'batch'."""
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)):
        return ""
    names = {s.value.id for s in (value.left, value.right) if isinstance(s, ast.Subscript)
             and isinstance(s.slice, ast.Slice) and isinstance(s.value, ast.Name)}
    left, right = value.left, value.right
    tail_then_head = (isinstance(left, ast.Subscript) and isinstance(left.slice, ast.Slice)
                      and left.slice.lower is not None and left.slice.upper is None
                      and isinstance(right, ast.Subscript) and isinstance(right.slice, ast.Slice)
                      and right.slice.upper is not None and right.slice.lower is None)
    return names.pop() if tail_then_head and len(names) == 1 else ""


def _rotated_labels(fn: ast.AST) -> list[tuple[ast.Assign, str, str]]:
    rotated = {stmt.targets[0].id: src for stmt in assigns_in(fn)
               if len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
               and (src := _rotation_of(stmt.value))}
    if not rotated:
        return []
    found = []
    for stmt in assigns_in(fn):  # gts = gts[1:] + gts[:1]: the targets rotated in place
        if (len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and _rotation_of(stmt.value) == stmt.targets[0].id
                and _TARGET_LIST.match(stmt.targets[0].id)
                and all(_TARGET_LIST.match(k) for k in rotated)):  # (inputs rotated too: fine)
            found.append((stmt, stmt.targets[0].id, stmt.targets[0].id))
    for stmt in assigns_in(fn):
        if not (len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            continue
        name = stmt.targets[0].id
        iters = {ast.unparse(g.iter) for n in subnodes(stmt.value)
                 if isinstance(n, (ast.ListComp, ast.GeneratorExp)) for g in n.generators}
        for order, source in rotated.items():
            if order in iters and (_MASKISH.match(name) or _LABEL.match(name) or _LABELISH.match(
                    name)):
                found.append((stmt, order, source))
    return found


_MIX_INPUT = re.compile(r"(?i)^(x|xs|inputs?|images?|imgs?|batch_x|samples?|features?|wav|audio)$")


def _partner_order(call: ast.Call, any_axis: bool = False) -> tuple[str, str] | None:
    """(operand, order) for `x.flip(0)`, `y.roll(1, 0)`, `torch.flip(x, dims=[0])`: the
    partner batch a mix pairs each sample with. With `any_axis`, a flip along another axis
    too (`y.flip(-1)` reverses a label vector's classes: no sample's partner)."""
    attr = last_attr(call.func)
    if attr not in ("flip", "roll") or not isinstance(call.func, ast.Attribute):
        return None
    operand = call.func.value
    args = list(call.args)
    if isinstance(operand, ast.Name) and operand.id == "torch" and args:
        operand, args = args[0], args[1:]
    if not isinstance(operand, ast.Name):
        return None
    dims = args[-1] if args else kwarg(call, "dims")
    if isinstance(dims, (ast.List, ast.Tuple)) and len(dims.elts) == 1:
        dims = dims.elts[0]
    if literal(dims) != 0:
        if any_axis and attr == "flip" and dims is not None:
            return operand.id, f"flip({ast.unparse(dims)})"
        return None  # (only the batch axis pairs samples)
    if attr == "flip":
        return operand.id, "flip(0)"
    shift = args[0] if len(args) == 2 else kwarg(call, "shifts")
    return operand.id, f"roll({ast.unparse(shift) if shift is not None else '?'}, 0)"


def _mix_partners_differ(fn: ast.AST) -> list[tuple[ast.Call, str, str]]:
    """`x.flip(0)` mixes each image with the batch reversed, `y_a.roll(1, 0)` mixes its label
    with the next sample's: inputs and labels are paired with different partners."""
    inputs: dict[str, ast.Call] = {}
    labels: dict[str, ast.Call] = {}
    for node in subnodes(fn):
        if not isinstance(node, ast.Call):
            continue
        found = _partner_order(node) or _partner_order(node, any_axis=True)
        if found is None:
            continue
        name, order = found
        if order != "flip(0)" and order.startswith("flip(") and _MIX_INPUT.match(name):
            continue  # (an input flipped along its width is augmentation, not a partner)
        base = name.split("_")[0] if "_" in name else name  # y_a -> y
        if _MIX_INPUT.match(name):
            inputs.setdefault(order, node)
        elif _LABELISH.match(base) or _LABEL.match(name):
            labels.setdefault(order, node)
    if len(inputs) != 1 or len(labels) != 1 or set(inputs) == set(labels):
        return []
    (label_order, call), = labels.items()
    return [(call, label_order, next(iter(inputs)))]


_OWN_ITEMS = re.compile(r"(?i)visited|seen|history|positive|pos_items|interacted|clicked|"
                        r"purchased|liked|rated|cited|citations|user_items|consumed")


def _negatives_from_positives(fn: ast.FunctionDef) -> list[ast.Call]:
    """`negs = rng.choice(self.visited[user], n)` in `sample_negatives`: negatives drawn from
    the user's own positives, so the model is trained to rank what they chose lowest."""
    if not re.search(r"(?i)neg", fn.name):
        return []
    local = {t.id: stmt.value for stmt in assigns_in(fn) for t in stmt.targets
             if isinstance(t, ast.Name)}
    found = []
    for node in subnodes(fn):
        if not (isinstance(node, ast.Call) and last_attr(node.func) in (
                "choice", "choices", "sample") and node.args):
            continue
        pool = node.args[0]
        held = local.get(pool.id) if isinstance(pool, ast.Name) else None
        text = ast.unparse(held if held is not None else pool)
        if _OWN_ITEMS.search(text) and not any(isinstance(n, (ast.NotIn, ast.Not)) or (
                isinstance(n, ast.Call) and last_attr(n.func) in (
                    "setdiff1d", "difference", "isin")) for n in subnodes(
                held if held is not None else pool)):
            found.append(node)
    return found


class MisalignedPairs(Check):
    rules = (DATA_POISON,)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        calls = called_names(node)  # (each shape needs a call the function may not make)
        for stmt, partner in _crossed_mix(node) if "where" in calls else []:
            ctx.report(DATA_POISON, stmt, f"{ast.unparse(stmt)[:60]} keeps the own labels "
                       f"where {partner!r} takes the other sample (the condition is read the "
                       "other way round): every mixed region carries the wrong labels",
                       severity=Severity.MEDIUM)
        for call, label_order, input_order in _mix_partners_differ(node) if calls & {
                "flip", "roll"} else []:
            ctx.report(DATA_POISON, call, f"the labels are paired by {label_order} but the "
                       f"inputs by {input_order}: each mixed sample is trained towards the "
                       "label of a sample it was not mixed with", severity=Severity.MEDIUM)
        for call in _negatives_from_positives(node):
            ctx.report(DATA_POISON, call, f"{ast.unparse(call)[:50]} draws negatives from the "
                       "user's own positives: the model is trained to rank what users chose "
                       "lowest", severity=Severity.MEDIUM)
        for stmt, order, source in _reordered_inputs(node) if calls & _ORDERINGS else []:
            ctx.report(DATA_POISON, stmt, f"{ast.unparse(stmt.targets[0])} is stacked in "
                       f"{source}'s own order while the inputs follow {order}: each sample is "
                       "trained with another sample's target", severity=Severity.MEDIUM)
        for stmt, order, source in _rotated_labels(node):
            built = ast.unparse(stmt.targets[0])
            ctx.report(DATA_POISON, stmt, f"{built} is built from {order}, a rotated copy of "
                       f"{source}: each sample gets another sample's labels" if built != order
                       else f"{built} rotated by its own slices while its inputs are not: each "
                       "sample gets another sample's target", severity=Severity.MEDIUM)
        for sub, index, partner in _reordered_cut(node) if calls & _REORDERS else []:
            ctx.report(DATA_POISON, sub, f"{ast.unparse(sub)[:40]} takes the rows of "
                       f"{index!r} in another order than {partner}[{index}]: each sample gets "
                       "another sample's labels", severity=Severity.MEDIUM)
        for relabel, stamped in _stamped_and_relabelled(node):
            ctx.report(DATA_POISON, relabel, f"the region where {stamped} gets a fixed pattern is "
                       "also given a fixed label: a backdoor trigger (the pattern alone decides "
                       "the class)", severity=Severity.MEDIUM)
        for stmt, noise in _noisy_target(node):
            ctx.report(DATA_POISON, stmt, f"{ast.unparse(stmt.targets[0])}, the training target, "
                       f"has {noise} added back: a denoiser trained on it learns to keep the "
                       "noise", severity=Severity.MEDIUM)
        for stmt, name, how in _metadata_sorted(node) if "sorted" in calls else []:
            ctx.report(DATA_POISON, stmt, f"{name!r} is sorted by {how}: the two listings "
                       "pair files in different orders, so inputs meet the wrong targets",
                       severity=Severity.MEDIUM)
        for where, field in _fields_reordered_apart(node) if calls & {
                "argsort", "sorted"} and _COLLATE.search(node.name) else []:
            ctx.report(DATA_POISON, where, f"{field}: the inputs are put in sorted order "
                       "inside the collate function but the labels keep the batch order, so "
                       "each sample gets another sample's label", severity=Severity.MEDIUM)
        for where, field in _collate_field_sorted(node) if "sorted" in calls else []:
            ctx.report(DATA_POISON, where, f"{field} is put in its own sorted order inside the "
                       "collate function while the other fields keep the batch order: each "
                       "sample gets another sample's targets", severity=Severity.MEDIUM)
        for stmt, name, partner, source in _sorted_beside_source(node, ctx) if (
                "sorted" in calls and ctx.classes) else []:
            ctx.report(DATA_POISON, stmt, f"{name} is built from {source!r} in its original "
                       f"order while {partner} holds the same items sorted: the two lists are "
                       "read with one index, so each sample gets another one's label",
                       severity=Severity.MEDIUM)
        for stmt, name, partner in _unsorted_pair(node) if calls & _LISTINGS else []:
            ctx.report(DATA_POISON, stmt, f"{name!r} is listed without sorting while "
                       f"{partner!r} is sorted: directory order is arbitrary, so labels pair "
                       "with the wrong inputs", severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        backwards = _backwards_answer(node.value)
        if backwards:
            ctx.report(DATA_POISON, node, f"{backwards}: the answer word is the opposite of "
                       "the label it is built from", severity=Severity.MEDIUM)
            return
        crossed = _crosswise_pick(node)
        if crossed:
            ctx.report(DATA_POISON, node, f"{crossed}: the preference pair is flipped, so the "
                       "model learns to prefer the worse answer", severity=Severity.MEDIUM)

    def visit_ClassDef(self, node: ast.ClassDef, ctx: Ctx) -> None:
        cut = _rank_blind_iter(node)
        if cut is not None:
            ctx.report(DATA_POISON, cut, f"{node.name}.__iter__() never reads self.rank: "
                       "every rank draws the same shard, so each epoch trains on one "
                       "rank's share of the data, repeated", severity=Severity.MEDIUM)

    def visit_List(self, node: ast.List, ctx: Ctx) -> None:
        rows = [e for e in node.elts if isinstance(e, ast.Call)]
        if len(rows) < 10 or len(rows) != len(node.elts) or len(
                {ast.unparse(r.func) for r in rows}) != 1 or not all(
                r.args and isinstance(literal(r.args[0]), str) for r in rows):
            return
        found = _folded_row(rows)
        if found is not None:
            row, name, other = found
            ctx.report(DATA_POISON, row, f"{name!r} gets the same id as {other!r} in a label "
                       "table that gives every other class its own: two classes are merged "
                       "into one", severity=Severity.MEDIUM)


_COLLATE = re.compile(r"(?i)collate|__call__")


_STACKERS = frozenset({"stack", "tensor", "as_tensor", "cat", "LongTensor", "FloatTensor",
                       "array", "asarray"})


def _fields_reordered_apart(fn: ast.FunctionDef) -> list[tuple[ast.AST, str]]:
    """`order = argsort(lengths)`, `x = pad([nums[i] for i in order])` but `labels =
    torch.stack(ys)`: the inputs are put in length order, the labels stay in batch order."""
    orders = {t.id for stmt in assigns_in(fn) for t in stmt.targets if isinstance(t, ast.Name)
              and isinstance(stmt.value, ast.Call) and last_attr(stmt.value.func) in (
                  "argsort", "sorted")}
    if not orders:
        return []
    reordered = {g_elt.value.id for n in subnodes(fn) if isinstance(n, (
        ast.ListComp, ast.GeneratorExp)) and isinstance(n.generators[0].iter, ast.Name)
        and n.generators[0].iter.id in orders and isinstance(g_elt := n.elt, ast.Subscript)
        and isinstance(g_elt.value, ast.Name)}
    if not reordered:
        return []
    indexed = {ast.unparse(n.value) for n in subnodes(fn) if isinstance(n, ast.Subscript)
               and isinstance(n.slice, ast.Name) and n.slice.id in orders}
    for stmt in assigns_in(fn):
        value = stmt.value
        if not (isinstance(value, ast.Call) and last_attr(value.func) in _STACKERS
                and value.args and isinstance(value.args[0], ast.Name)):
            continue
        field = value.args[0].id
        target = stmt.targets[0]
        name = target.id if isinstance(target, ast.Name) else ""
        if (field not in reordered and _LABELISH.match(field.rstrip("s") or field)
                and field not in indexed and name not in indexed):
            return [(stmt, f"{name or field} (from {field}, while "
                           f"{'/'.join(sorted(reordered))} follow {'/'.join(sorted(orders))})")]
    return []


def _collate_field_sorted(fn: ast.FunctionDef) -> list[tuple[ast.AST, str]]:
    """`targets = sorted((item["tokens"] for item in batch), key=len)`, or `by_size =
    sorted(items, ...)` with `y=stack([g.y for g in by_size])` beside `[g.x for g in items]`
    (sorting the batch itself, rebinding its name, keeps the pairs together)."""
    if not (_COLLATE.search(fn.name) and fn.args.args):
        return []
    batch = fn.args.args[-1].arg
    out: list[tuple[ast.AST, str]] = []
    copies: dict[str, ast.Assign] = {}
    for stmt in assigns_in(fn):
        value, target = stmt.value, stmt.targets[0]
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id == "sorted" and value.args and isinstance(target, ast.Name)):
            continue
        source = value.args[0]
        if (isinstance(source, (ast.GeneratorExp, ast.ListComp))
                and isinstance(source.elt, (ast.Subscript, ast.Attribute))
                and isinstance(source.generators[0].iter, ast.Name)
                and source.generators[0].iter.id == batch):
            out.append((stmt, target.id))  # one field sorted on its own
        elif isinstance(source, ast.Name) and source.id == batch and target.id != batch:
            copies[target.id] = stmt
    if copies:
        iterated = {g.iter.id for n in subnodes(fn) if isinstance(n, (
            ast.ListComp, ast.GeneratorExp)) for g in n.generators if isinstance(g.iter, ast.Name)}
        iterated |= {n.iter.id for n in subnodes(fn) if isinstance(n, ast.For)
                     and isinstance(n.iter, ast.Name)}
        iterated |= {n.iter.args[0].id for n in subnodes(fn) if isinstance(n, ast.For)
                     and isinstance(n.iter, ast.Call) and last_attr(n.iter.func) == "enumerate"
                     and n.iter.args and isinstance(n.iter.args[0], ast.Name)}
        if batch in iterated:
            for name in copies:
                for n in subnodes(fn):
                    if (isinstance(n, (ast.ListComp, ast.GeneratorExp))
                            and isinstance(n.generators[0].iter, ast.Name)
                            and n.generators[0].iter.id == name
                            and re.search(r"(?i)\b(y|label|labels|target|targets|tgt)\b",
                                          ast.unparse(n.elt))):
                        out.append((n, f"{ast.unparse(n.elt)[:30]} (from {name})"))
                        break
    return out
