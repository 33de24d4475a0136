"""MLS309 for segmentation (and token) labels and their samplers: label maps quietly changed.

- A class table (`("rider", 25, 11)`) whose train id repeats another class's (not the ignore
  id): two classes are trained as one. Tables that fold many classes together (a coarse
  label set) stay quiet; one collision in an otherwise one-to-one table does not.
- Classes chosen by their pixel frequency sent to the ignore index
  (`lut[np.isin(lut, sparse)] = ignore_index`): the rare classes are never trained.
- A label map padded with 0 in a file that has an ignore index (`ImageOps.expand(lbl,
  border, fill=0)`): the padding is trained as class 0 instead of being ignored.
- Image and label flipped under two separate random draws: half of the flips misalign them.
- A blur filter run on the label map: class ids are averaged into other ids at every edge.
- Labels clamped to `[0, num_classes - 1]` in a collate: the ignore pixels (255) become the
  last class.
- Repeat factors written upside down (`sqrt(freq / thresh)`): rare classes are repeated least.
- The outside/background class sent to the ignore index (`labels.masked_fill(labels ==
  self.o_label_id, -100)`): it is never trained (padding ids stay quiet).
- A distributed sampler whose shard starts at something other than the rank
  (`indices[self.epoch % n:total:n]`): every rank reads the same samples.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal, source
from mlscan.checks.nodes import subnodes
from mlscan.checks.poison_pipeline import _LOADING
from mlscan.checks.poison_words import _IMAGE
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_IGNORE_IDS = frozenset({255, -1, -100})
_RANDOM_DRAWS = frozenset({"random", "rand", "uniform", "randint", "choice", "bernoulli"})
_FLIPS = frozenset({"transpose", "flip", "hflip", "vflip", "fliplr", "flipud", "rotate",
                    "mirror", "flip_left_right"})
_LABEL_MAP = re.compile(r"(?i)^(lbl|lbls|label|labels|mask|masks|seg|target|targets|gt|ann)$")


def _table_collision(value: ast.expr) -> tuple[str, ast.expr] | None:
    """One repeated train id in a (name, id, train_id) table of at least ten rows: the
    message and the row that repeats it."""
    if not isinstance(value, (ast.List, ast.Tuple)) or len(value.elts) < 10:
        return None
    rows = []
    for elt in value.elts:
        if not (isinstance(elt, ast.Tuple) and len(elt.elts) >= 3):
            return None
        name, train = literal(elt.elts[0]), literal(elt.elts[2])
        if not (isinstance(name, str) and isinstance(train, int)):
            return None
        rows.append((name, train, elt))
    seen: dict[int, str] = {}
    collisions = []
    for name, train, elt in rows:
        if train in _IGNORE_IDS or train < 0:
            continue
        if train in seen:
            collisions.append((f"{name!r} shares train id {train} with {seen[train]!r}", elt))
        else:
            seen[train] = name
    return collisions[0] if len(collisions) == 1 and len(seen) >= 8 else None


def _random_test(test: ast.expr) -> bool:
    return any(isinstance(n, ast.Call) and last_attr(n.func) in _RANDOM_DRAWS
               for n in subnodes(test))


def _flipped_name(body: list[ast.stmt]) -> tuple[str, str]:
    """(name, operation) for a one-statement block `x = x.transpose(...)`."""
    if len(body) != 1 or not isinstance(stmt := body[0], ast.Assign):
        return "", ""
    target, value = stmt.targets[0], stmt.value
    if (isinstance(target, ast.Name) and isinstance(value, ast.Call)
            and last_attr(value.func) in _FLIPS and any(
                isinstance(n, ast.Name) and n.id == target.id for n in subnodes(value))):
        return target.id, last_attr(value.func)
    return "", ""


def _swapped_ids(name: str, call: ast.Call) -> tuple[object, object] | None:
    """`np.where(m == 2, 3, np.where(m == 3, 2, m))`: ids 2 and 3 exchanged."""
    def pick(where: ast.expr) -> tuple[object, object, ast.expr] | None:
        if not (isinstance(where, ast.Call) and last_attr(where.func) == "where"
                and len(where.args) == 3 and isinstance(test := where.args[0], ast.Compare)
                and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
                and source(test.left) == name):
            return None
        return literal(test.comparators[0]), literal(where.args[1]), where.args[2]
    outer = pick(call)
    inner = pick(outer[2]) if outer is not None else None
    if outer is None or inner is None or source(inner[2]) != name:
        return None
    if (isinstance(outer[0], int) and outer[0] == inner[1] and outer[1] == inner[0]
            and outer[0] != outer[1]):
        return outer[0], outer[1]
    return None


class SegmentationLabels(Check):
    rules = (DATA_POISON,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target, value = node.targets[0], node.value
        if ctx.frame.node is None and isinstance(value, (ast.List, ast.Tuple)) and (
                collision := _table_collision(value)):
            ctx.report(DATA_POISON, collision[1], f"class table: {collision[0]}: the two "
                       "classes are trained and scored as one", severity=Severity.MEDIUM)
            return
        if isinstance(target, ast.Subscript) and ctx.mentions("isin(") and (
                dropped := self._rare_ignored(target, value, ctx)):
            ctx.report(DATA_POISON, node, f"{dropped}: the rarest classes are never trained",
                       severity=Severity.MEDIUM)
            return
        if not isinstance(target, ast.Name) or not isinstance(value, ast.Call):
            return
        name, call = target.id, value
        func = last_attr(call.func)
        if (func == "masked_fill" and _LABEL_MAP.match(name) and len(call.args) == 2
                and literal(call.args[1]) in _IGNORE_IDS
                and isinstance(test := call.args[0], ast.Compare) and len(test.ops) == 1
                and isinstance(test.ops[0], ast.Eq)
                and re.search(r"(?i)(^|_|\.)(o|outside|background|bg)(_label)?(_id|_idx)?$",
                              source(test.comparators[0]))):
            ctx.report(DATA_POISON, node, f"{name} equal to {source(test.comparators[0])} set to "
                       f"the ignore index: the {source(test.comparators[0])} class is never "
                       "trained, so the model tags everything as an entity",
                       severity=Severity.MEDIUM)
            return
        if func == "where" and ctx.conds and _LABEL_MAP.match(name) and (
                pair := _swapped_ids(name, call)):
            ctx.report(DATA_POISON, node, f"classes {pair[0]} and {pair[1]} of {name} swapped "
                       f"for the samples where {ast.unparse(ctx.conds[-1])[:40]}: those samples "
                       "train each class as the other", severity=Severity.MEDIUM)
            return
        if (func in ("expand", "pad") and _LABEL_MAP.match(name) and ctx.mentions("ignore")
                and _LOADING.search(ctx.frame.name)
                and any(k.arg in ("fill", "value", "constant_values") and literal(k.value) == 0
                        for k in call.keywords)
                and any(isinstance(n, ast.Name) and n.id == name for n in call.args)):
            ctx.report(DATA_POISON, node, f"{name} padded with 0, not the ignore index: the "
                       "padding is trained as class 0", severity=Severity.MEDIUM)
        elif (func == "filter" and _LABEL_MAP.match(name) and isinstance(call.func, ast.Attribute)
              and source(call.func.value) == name and call.args
              and re.search(r"(?i)blur|gauss|smooth",
                            ast.unparse(ctx.follow(call.args[0], 1) or call.args[0]))):
            ctx.report(DATA_POISON, node, f"{name} blurred like the image: class ids are "
                       "averaged into other ids along every edge", severity=Severity.MEDIUM)
        elif (func in ("clamp", "clamp_", "clip") and _LABEL_MAP.match(name)
              and isinstance(call.func, ast.Attribute) and source(call.func.value) == name
              and len(call.args) == 2 and literal(call.args[0]) == 0
              and re.search(r"(?i)num_classes|n_classes|NUM_CLASSES", ast.unparse(call.args[1]))
              and "- 1" in ast.unparse(call.args[1]) and (
                  ctx.mentions("255") or ctx.mentions("ignore"))):
            ctx.report(DATA_POISON, node, f"{name} clamped to [0, {ast.unparse(call.args[1])}]: "
                       "the ignore pixels become the last class", severity=Severity.MEDIUM)

    @staticmethod
    def _rare_ignored(target: ast.Subscript, value: ast.expr, ctx: Ctx) -> str:
        """`lut[np.isin(lut, sparse)] = ignore_index` with `sparse` picked by frequency."""
        if not ((isinstance(value, (ast.Name, ast.Attribute)) and re.search(
                r"(?i)ignore|void", source(value))) or literal(value) in _IGNORE_IDS):
            return ""
        for n in subnodes(target.slice):
            if (isinstance(n, ast.Call) and last_attr(n.func) == "isin" and len(n.args) == 2
                    and isinstance(n.args[1], ast.Name)
                    and isinstance(picked := ctx.lookup(n.args[1].id), ast.ListComp)
                    and any(re.search(r"(?i)freq|count|min_|num_pix|pixels", ast.unparse(c))
                            for g in picked.generators for c in g.ifs)):
                return f"classes in {n.args[1].id} (picked by frequency) set to the ignore value"
        return ""

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        if not any(ctx.mentions(w) for w in ("transpose", "flip", "rotate", "mirror")):
            return
        flips: list[tuple[ast.If, str, str]] = []
        for stmt in node.body:
            if isinstance(stmt, ast.If) and not stmt.orelse and _random_test(stmt.test):
                name, op = _flipped_name(stmt.body)
                if name:
                    flips.append((stmt, name, op))
        for i, (_first, a, op_a) in enumerate(flips):
            for second, b, op_b in flips[i + 1:]:
                if op_a == op_b and (
                        (_IMAGE.match(a) and _LABEL_MAP.match(b))
                        or (_LABEL_MAP.match(a) and _IMAGE.match(b))):
                    ctx.report(DATA_POISON, second.body[0], f"{a} and {b} flipped under two "
                               "separate random draws: half of the flips leave the label "
                               "misaligned with its image", severity=Severity.MEDIUM)
                    return

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if not (last_attr(node.func) == "sqrt" and len(node.args) == 1):
            return
        arg = node.args[0]
        if (isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Div)
                and re.search(r"(?i)freq", ast.unparse(arg.left))
                and re.search(r"(?i)thresh|thr\b|^t$", ast.unparse(arg.right))):
            ctx.report(DATA_POISON, node, f"repeat factor sqrt({ast.unparse(arg)[:40]}) is "
                       "upside down (LVIS uses sqrt(threshold / frequency)): the rare classes "
                       "are repeated least", severity=Severity.MEDIUM)


class ShardStart(Check):
    """`indices[self.epoch % self.num_replicas:total:self.num_replicas]`: the shard's start
    is not the rank, so every rank reads the same samples."""

    rules = (DATA_POISON,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        value = node.value
        if not (isinstance(value, ast.Subscript) and isinstance(sl := value.slice, ast.Slice)
                and sl.step is not None and re.search(r"(?i)num_replicas|world",
                                                      ast.unparse(sl.step))
                and sl.lower is not None):
            return
        start = ast.unparse(sl.lower)
        if not re.search(r"(?i)rank|process_index|proc|worker|shard|node|local", start):
            ctx.report(DATA_POISON, node, f"shard starts at {start[:30]}, not at the rank: every "
                       "rank reads the same samples", severity=Severity.MEDIUM)
