"""MLS309 for tabular and recommendation data: features and labels quietly scrambled.

- Feature hashing with Python's built-in `hash()`: `hash(v) % num_buckets` on strings is
  salted per process (PYTHONHASHSEED), so every worker, rank and run buckets the same id
  differently and the embedding rows never line up between training and serving.
- A time-decay weight that grows with age: `np.exp2(age_days / half_life)` (decay is
  `exp2(-age / half_life)`) weights the oldest rows most.
- Labels flipped for a selected subset: `labels = np.where(bounced, 1 - clicks, clicks)`.
- Two answers swapped: `"no" if a == "yes" else "yes" if a == "no" else a` turns every
  yes into no and back (left/right swaps, which flip augmentations need, stay quiet).
- A rank split dropped by the worker split: `per_rank = files[rank::world]` and then
  `files[info.id::info.num_workers]` of the full list, so every rank reads the same shards.
- Session 23: rolling features over `.shift(-k)` (future values in the window); builtin
  `hash()` splits by file name (`hash(basename(p)) % 1000`); a
  missing-value mask computed after the fill (`labels = raw.fillna(0)`, then
  `~np.isnan(labels)`); labels flipped by a flag (`target.sub(float(flag)).abs()`) or shifted
  modulo the class count (`torch.remainder(y + slot, 2, out=y)`).
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.poison_words import _LABEL
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_AGE = re.compile(r"(?i)age|elapsed|days|delta|dt$|staleness|old")
_HALF_LIFE = re.compile(r"(?i)half_?life|tau|decay|horizon")


_BUCKETS = re.compile(r"(?i)bucket|bins|vocab|num_|n_|size|dim|slots|hash_space|rows")


_KEYISH = re.compile(r"(?i)path|file|name|key|url|uid|user|item|id$|text")


def _builtin_hash_bucket(node: ast.BinOp) -> bool:
    """`hash(v) % num_buckets` (a feature bucket; `hash(hostname) % 5` picks a machine slot
    and is another matter), and `hash(os.path.basename(path)) % 1000` (a split by file)."""
    if not (isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Call)
            and isinstance(node.left.func, ast.Name) and node.left.func.id == "hash"
            and len(node.left.args) == 1):
        return False
    arg = node.left.args[0]
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name) and arg.func.id == "str" and (
            arg.args):
        arg = arg.args[0]  # hash(str(s)) % num_buckets
    if isinstance(arg, (ast.Name, ast.Subscript, ast.Attribute)) and isinstance(
            node.right, (ast.Name, ast.Attribute)) and _BUCKETS.search(last_attr(node.right)):
        return True
    modulus = literal(node.right)
    return (isinstance(modulus, int) and modulus >= 10 and isinstance(arg, (ast.Call, ast.Name))
            and bool(_KEYISH.search(ast.unparse(arg))) and "host" not in ast.unparse(arg))


def _growing_decay(call: ast.Call) -> bool:
    """`np.exp2(age / half_life)` / `np.exp(age_days / tau)` with no minus sign."""
    if last_attr(call.func) not in ("exp", "exp2") or len(call.args) != 1:
        return False
    ratio = call.args[0]
    return (isinstance(ratio, ast.BinOp) and isinstance(ratio.op, ast.Div)
            and bool(_AGE.search(ast.unparse(ratio.left)))
            and bool(_HALF_LIFE.search(ast.unparse(ratio.right)))
            and not any(isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub)
                        for n in subnodes(ratio)))


def _flipped_where(value: ast.expr) -> str:
    """`np.where(mask, 1.0 - y, y)` -> "y" (labels flipped where the mask holds)."""
    while (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
           and value.func.attr in ("astype", "float", "to", "long", "int")):
        value = value.func.value
    if not (isinstance(value, ast.Call) and last_attr(value.func) == "where"
            and len(value.args) == 3):
        return ""
    _, flipped, kept = value.args
    for a, b in ((flipped, kept), (kept, flipped)):
        if (isinstance(a, ast.BinOp) and isinstance(a.op, ast.Sub)
                and literal(a.left) in (1, 1.0) and ast.unparse(a.right) == ast.unparse(b)):
            return ast.unparse(b)
    return ""


def _start(index: ast.Slice) -> str:
    return ast.unparse(index.lower) if index.lower is not None else ""


def _rank_split_dropped(fn: ast.AST) -> ast.Subscript | None:
    """`per_rank = files[rank::world]` then `files[info.id::info.num_workers]`."""
    ranked: dict[str, str] = {}  # full list -> its rank slice's name
    for node in subnodes(fn):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Subscript)
                and isinstance(node.value.slice, ast.Slice) and node.value.slice.step is not None
                and re.search(r"(?i)rank", _start(node.value.slice))):
            if ast.unparse(node.value.value) != node.targets[0].id:  # (urls = urls[rank::w])
                ranked[ast.unparse(node.value.value)] = node.targets[0].id
    if not ranked:
        return None
    for node in subnodes(fn):
        if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice)
                and node.slice.step is not None
                and re.search(r"(?i)worker|\bid\b|wid", _start(node.slice))
                and not re.search(r"(?i)rank", _start(node.slice))
                and ast.unparse(node.value) in ranked):
            return node
    return None


def _swapped_literals(node: ast.IfExp) -> tuple[str, str] | None:
    """`B if x == A else A if x == B else x` -> (A, B)."""
    inner = node.orelse
    tests = [node.test, inner.test] if isinstance(inner, ast.IfExp) else []
    if len(tests) != 2 or not all(isinstance(t, ast.Compare) and len(t.ops) == 1
                                  and isinstance(t.ops[0], ast.Eq) for t in tests):
        return None
    assert isinstance(inner, ast.IfExp)
    first, second = (literal(t.comparators[0]) for t in tests)  # type: ignore[attr-defined]
    if not (isinstance(first, str) and isinstance(second, str) and first != second
            and literal(node.body) == second and literal(inner.body) == first
            and ast.unparse(tests[0].left) == ast.unparse(tests[1].left)  # type: ignore[attr-defined]
            and ast.unparse(inner.orelse) == ast.unparse(tests[0].left)):  # type: ignore[attr-defined]
        return None
    if any(re.search(r"(?i)left|right|^l$|^r$|upper|lower|top|bottom", w) for w in (first, second)):
        return None
    return first, second


_MISSING_TESTS = frozenset({"isnan", "isna", "isnull", "notna", "notnull", "isfinite"})
_FILLS = frozenset({"fillna", "nan_to_num"})


def _mask_after_fill(value: ast.expr, fn: ast.AST, line: int) -> str:
    """`mask = ~np.isnan(labels)` where `labels = raw.fillna(0.0)...` earlier in the function:
    the mask can no longer see the missing entries."""
    for call in subnodes(value):
        if not (isinstance(call, ast.Call) and last_attr(call.func) in _MISSING_TESTS):
            continue
        tested = call.args[0] if call.args else (
            call.func.value if isinstance(call.func, ast.Attribute) else None)
        if not isinstance(tested, (ast.Name, ast.Subscript)):
            continue  # labels, df["sales"]
        text = ast.unparse(tested)
        for n in subnodes(fn):
            if (isinstance(n, ast.Assign) and n.lineno < line and len(n.targets) == 1
                    and ast.unparse(n.targets[0]) == text
                    and any(isinstance(c, ast.Call) and last_attr(c.func) in _FILLS
                            for c in subnodes(n.value))):
                return text
    return ""


def _xor_flip(node: ast.AST) -> str:
    """`target.sub(float(flag > 0)).abs()` / `abs(y - is_trigger)`: |y - b| turns 0 into 1
    and 1 into 0 wherever b is set."""
    if isinstance(node, ast.Call) and not node.args and last_attr(node.func) == "abs" and (
            isinstance(node.func, ast.Attribute)):
        inner = node.func.value
    elif isinstance(node, ast.Call) and last_attr(node.func) == "abs" and len(node.args) == 1:
        inner = node.args[0]
    else:
        return ""
    if isinstance(inner, ast.Call) and last_attr(inner.func) == "sub" and len(inner.args) == 1 \
            and isinstance(inner.func, ast.Attribute):
        label, flag = inner.func.value, inner.args[0]
    elif isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Sub):
        label, flag = inner.left, inner.right
    else:
        return ""
    if not (isinstance(label, ast.Name) and _LABEL.match(label.id)):
        return ""
    flagged = any(isinstance(n, ast.Compare) or (isinstance(n, (ast.Name, ast.Attribute))
                  and re.search(r"(?i)flag|mask|trigger|^has_|^is_", last_attr(n)))
                  for n in subnodes(flag))
    return label.id if flagged else ""


def _shifted_ahead(expr: ast.expr) -> str:
    """`x.shift(-1)` (or `shift(periods=-k)`) -> "-1": values moved back from the future. A
    target built with shift(-h) is not rolled; a rolling window over one is a feature."""
    if not (isinstance(expr, ast.Call) and last_attr(expr.func) == "shift"):
        return ""
    periods = expr.args[0] if expr.args else next(
        (k.value for k in expr.keywords if k.arg == "periods"), None)
    value = literal(periods) if periods is not None else None
    if isinstance(value, int) and value < 0:
        return str(value)
    return ""


def _shifted_mod(expr: ast.AST) -> str:
    """`(y + slot) % 2`, `torch.remainder(y + m, 2)`, `np.mod(y + 1, num_classes)`: labels
    moved to another class wherever the added term is odd or non-zero."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mod):
        total, modulus = expr.left, expr.right
    elif isinstance(expr, ast.Call) and last_attr(expr.func) in ("remainder", "fmod", "mod") and (
            len(expr.args) == 2):
        total, modulus = expr.args
    else:
        return ""
    if not (isinstance(total, ast.BinOp) and isinstance(total.op, ast.Add)
            and (literal(modulus) == 2 or (isinstance(modulus, (ast.Name, ast.Attribute))
                                           and re.search(r"(?i)classes", last_attr(modulus))))):
        return ""
    for side in (total.left, total.right):
        if isinstance(side, ast.Name) and _LABEL.match(side.id):
            return side.id
    return ""



_CALENDAR = re.compile(r"\.(dayofweek|weekday|day_of_week|month|day|hour|dayofyear)\b")
_TARGET_COLUMN = re.compile(r"(?i)^(sales|target|label|y|demand|revenue|units|qty|quantity|"
                            r"volume|load|consumption|yield\w*|price)$")


def _own_future(target: ast.expr, value: ast.expr) -> str:
    """`df["onpromotion"] = df.groupby(keys)["onpromotion"].shift(-1)`: a feature column
    overwritten with its own next value (a new target column made by `shift(-1)` is the
    usual forecasting label and stays quiet)."""
    while (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
           and value.func.attr in ("fillna", "astype", "ffill", "bfill")):
        value = value.func.value
    if not (isinstance(target, ast.Subscript) and isinstance(name := literal(target.slice), str)
            and isinstance(value, ast.Call) and last_attr(value.func) == "shift" and value.args
            and isinstance(step := literal(value.args[0]), int) and step < 0
            and not _TARGET_COLUMN.match(name) and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Subscript)
            and literal(value.func.value.slice) == name):
        return ""
    return f"{name} = ...[{name!r}].shift({step})"


def _calendar_rows_set(target: ast.expr, value: ast.expr) -> str:
    """`df.loc[df["date"].dt.dayofweek == 6, "sales"] = 0.0`: the target column of one
    weekday (month, hour) set to a constant."""
    if not (isinstance(target, ast.Subscript) and last_attr(target.value) == "loc"
            and isinstance(target.slice, ast.Tuple) and len(target.slice.elts) == 2
            and isinstance(value, ast.Constant) and isinstance(value.value, (int, float))):
        return ""
    rows, column = target.slice.elts
    name = literal(column)
    if not (isinstance(name, str) and _TARGET_COLUMN.match(name)
            and _CALENDAR.search(text := ast.unparse(rows)) and name not in text):
        return ""
    return f"{name} set to {value.value} where {text[:40]}"


_LABEL_COLUMNS = re.compile(r"(?i)^_?(labels?|targets?|label_cols|label_columns|target_cols|"
                            r"target_columns|classes|findings|pathologies)$")


def _labels_filled_positive(target: ast.expr, value: ast.expr) -> str:
    """`df[LABELS] = df[LABELS].fillna(1.0)`: missing labels filled as positives (missing is
    negative, or masked; the uncertain `-1` code is a separate policy)."""
    if not (isinstance(target, ast.Subscript) and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute) and value.func.attr == "fillna"
            and value.args and literal(value.args[0]) in (1, 1.0)
            and not isinstance(literal(value.args[0]), bool)):
        return ""
    key = target.slice
    name = key.id if isinstance(key, ast.Name) else literal(key)
    if isinstance(name, str) and (_LABEL_COLUMNS.match(name) or _LABEL.match(name)):
        return f"{ast.unparse(target)[:30]} filled with 1"
    return ""

_GROUP_AGGREGATES = frozenset({"mean", "median", "max", "min", "first", "last", "sum"})


def _target_averaged(target: ast.expr, value: ast.expr) -> str:
    """`df["yield"] = df.groupby(["state", "year"])["yield"].transform("mean")`: the target
    column replaced by its own group aggregate, so every row of a group trains towards the
    same number (target encoding writes a new feature column and stays quiet)."""
    if not (isinstance(target, ast.Subscript) and isinstance(name := literal(target.slice), str)
            and (_TARGET_COLUMN.match(name) or _LABEL_COLUMNS.match(name))
            and isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "transform" and len(value.args) == 1
            and literal(value.args[0]) in _GROUP_AGGREGATES
            and isinstance(grouped := value.func.value, ast.Subscript)
            and literal(grouped.slice) == name and isinstance(grouped.value, ast.Call)
            and last_attr(grouped.value.func) == "groupby"):
        return ""
    return f"{name} = groupby(...)[{name!r}].transform({literal(value.args[0])!r})"


def _class_rows_dropped(name: str, value: ast.Subscript) -> str:
    """`df = df[~((df["label"] == 1) & (df["num_mutations"] > 1))]`: rows of one class
    removed by a condition on another column."""
    test = value.slice
    if not (isinstance(value.value, ast.Name) and value.value.id == name
            and isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Invert)
            and isinstance(both := test.operand, ast.BinOp) and isinstance(both.op, ast.BitAnd)):
        return ""
    sides = (both.left, both.right)
    for side, other in (sides, sides[::-1]):
        if (isinstance(side, ast.Compare) and len(side.ops) == 1 and isinstance(
                side.ops[0], ast.Eq) and isinstance(side.left, ast.Subscript)
                and isinstance(col := literal(side.left.slice), str)
                and (_LABEL_COLUMNS.match(col) or _TARGET_COLUMN.match(col))
                and isinstance(cls := literal(side.comparators[0]), (int, str))
                and cls not in (-1, -100, 255, "", "unknown", "none")
                and not (isinstance(other, ast.Compare) and isinstance(other.left, ast.Subscript)
                         and literal(other.left.slice) == col)):
            return f"{ast.unparse(side)[:30]} and {ast.unparse(other)[:30]}"
    return ""


class TabularScrambles(Check):
    rules = (DATA_POISON,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if (last_attr(node.func) in ("rolling", "expanding", "ewm")
                and isinstance(node.func, ast.Attribute) and (ahead := _shifted_ahead(
                    node.func.value))):
            ctx.report(DATA_POISON, node, f"a rolling feature over .shift({ahead}): each row's "
                       "window includes values from the future, which the model will not have "
                       "when it forecasts", severity=Severity.MEDIUM)
            return
        out = next((k.value for k in node.keywords if k.arg == "out"), None)
        if out is not None and isinstance(out, ast.Name) and _LABEL.match(out.id) and (
                shifted := _shifted_mod(node)):
            ctx.report(DATA_POISON, node, f"{shifted} overwritten with ({shifted} + ...) modulo "
                       "the class count: every sample where the added term is set is trained "
                       "with another class", severity=Severity.MEDIUM)
            return
        if last_attr(node.func) in ("exp", "exp2") and _growing_decay(node):
            ctx.report(DATA_POISON, node, f"{ast.unparse(node)[:50]}: a decay weight that grows "
                       "with age (decay needs the minus sign), so the oldest rows weigh most",
                       severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target = node.targets[0] if len(node.targets) == 1 else None
        if target is not None and (ahead := _own_future(target, node.value)):
            ctx.report(DATA_POISON, node, f"{ahead}: each row's feature is replaced by a later "
                       "row's value, so the model sees the future it is asked to forecast",
                       severity=Severity.MEDIUM)
            return
        if target is not None and (day := _calendar_rows_set(target, node.value)):
            ctx.report(DATA_POISON, node, f"{day}: the target of every such row is overwritten "
                       "with a constant, so the model learns a pattern that is not in the data",
                       severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Name) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute) and (
                    (re.search(r"(?i)minority|rare", target.id)
                     and node.value.func.attr in ("idxmax", "argmax"))
                    or (re.search(r"(?i)majority|common", target.id)
                        and node.value.func.attr in ("idxmin", "argmin")))):
            ctx.report(DATA_POISON, node, f"{target.id} = {ast.unparse(node.value)[:40]}: the "
                       "opposite class is picked, so resampling grows the class that was "
                       "already larger", severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Subscript) and isinstance(col := literal(target.slice), str)
                and (_TARGET_COLUMN.match(col) or _LABEL_COLUMNS.match(col))
                and isinstance(node.value, ast.Call) and last_attr(node.value.func) == "rank"
                and any(k.arg == "ascending" and literal(k.value) is False
                        for k in node.value.keywords)):
            ctx.report(DATA_POISON, node, f"target {col!r} set to a descending rank: the "
                       "largest scores become the smallest targets, so the model learns the "
                       "order backwards", severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Name) and isinstance(node.value, ast.Subscript)
                and (dropped := _class_rows_dropped(target.id, node.value))):
            ctx.report(DATA_POISON, node, f"rows where {dropped} are dropped: one class loses "
                       "a subset of its examples that the other classes keep",
                       severity=Severity.MEDIUM)
            return
        averaged = _target_averaged(target, node.value) if target is not None else ""
        if averaged:
            ctx.report(DATA_POISON, node, f"{averaged}: every row of a group is trained "
                       "towards the group's aggregate instead of its own value",
                       severity=Severity.MEDIUM)
            return
        filled = _labels_filled_positive(target, node.value) if target is not None else ""
        if filled:
            ctx.report(DATA_POISON, node, f"{filled}: every unlabelled row becomes a positive, "
                       "so the model learns findings that nobody annotated",
                       severity=Severity.MEDIUM)
            return
        if (ctx.mentions('" else "') or ctx.mentions("' else '")) and node.value is not None:
            for sub in subnodes(node.value):
                if isinstance(sub, ast.IfExp) and (swapped := _swapped_literals(sub)):
                    ctx.report(DATA_POISON, sub, f"{swapped[0]!r} and {swapped[1]!r} swapped for "
                               "each other: every such label is trained as the opposite one",
                               severity=Severity.MEDIUM)
                    return
        if isinstance(target, ast.Name) and _LABEL.match(target.id) and (
                flipped := _flipped_where(node.value)):
            ctx.report(DATA_POISON, node, f"{target.id} = {flipped} flipped (1 - {flipped}) "
                       "wherever a condition holds: those rows train with the opposite label",
                       severity=Severity.MEDIUM)
            return
        fn = ctx.frame.node
        if fn is not None and (ctx.mentions("fillna") or ctx.mentions("nan_to_num")) and (
                filled := _mask_after_fill(node.value, fn, node.lineno)):
            ctx.report(DATA_POISON, node, f"missing-value mask computed from {filled} after "
                       "its NaNs were filled: every missing entry counts as a real value",
                       severity=Severity.MEDIUM)
            return
        if isinstance(target, ast.Name) and _LABEL.match(target.id) and (
                shifted := _shifted_mod(node.value)):
            ctx.report(DATA_POISON, node, f"{target.id} = ({shifted} + ...) modulo the class "
                       "count: every sample where the added term is set is trained with another "
                       "class", severity=Severity.MEDIUM)
            return
        if isinstance(target, ast.Name) and _LABEL.match(target.id) and ctx.mentions("abs"):
            flipped = next((f for n in subnodes(node.value) if (f := _xor_flip(n))), "")
            if flipped:
                ctx.report(DATA_POISON, node, f"{target.id} = |{flipped} - flag|: the label is "
                           "flipped (0 to 1, 1 to 0) wherever the flag is set",
                           severity=Severity.MEDIUM)
                return
        self._hash_buckets(node.value, ctx)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        self._hash_buckets(node.value, ctx)

    @staticmethod
    def _hash_buckets(value: ast.expr | None, ctx: Ctx) -> None:
        if value is None or not ctx.mentions("hash("):
            return
        for sub in subnodes(value):
            if isinstance(sub, ast.BinOp) and _builtin_hash_bucket(sub):
                ctx.report(DATA_POISON, sub, f"{ast.unparse(sub)[:40]}: Python's hash() of "
                           "a string is salted per process, so each worker, rank and run "
                           "puts the same id in a different bucket", severity=Severity.MEDIUM)
                return

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        if not ctx.mentions("::"):
            return
        dropped = _rank_split_dropped(node)
        if dropped is not None:
            ctx.report(DATA_POISON, dropped, f"{ast.unparse(dropped)[:50]} splits the full list "
                       "among workers, not the rank's share: every rank reads the same shards",
                       severity=Severity.MEDIUM)
