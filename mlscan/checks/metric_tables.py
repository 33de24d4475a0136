"""Small shapes of metric falsification found in tables and comprehensions.

Each predicate takes one node and returns a short description (empty when it does not apply):
- a "mode" table that maps max to a less-than comparison (the worst result counts as best);
- a dict comprehension that relabels one split's results as another split's;
- a value rounded up to a fixed number of decimals before it is reported.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from mlscan.checks.names import Names, last_attr, literal
from mlscan.checks.nodes import subnodes

_LESS = frozenset({"lt", "le", "__lt__", "__le__"})
_GREATER = frozenset({"gt", "ge", "__gt__", "__ge__"})
_MAX_KEYS = frozenset({"max", "maximize", "maximise", "higher", "greater", "up"})
_MIN_KEYS = frozenset({"min", "minimize", "minimise", "lower", "less", "down"})
_SPLIT = re.compile(r"(?i)(^|_|/|\b)(test|val|valid|validation|dev|train|training|eval)(_|/|\b|$)")
_SPLIT_WORDS = {"val": "val", "valid": "val", "validation": "val", "dev": "val", "eval": "val",
                "test": "test", "train": "train", "training": "train"}


def _comparison(value: ast.expr, names: Names) -> str:
    """"lt"/"gt" for operator.lt-style functions or `lambda a, b: a < b`."""
    if isinstance(value, (ast.Name, ast.Attribute)):
        attr = last_attr(value)
        if not (attr.startswith("__") or (names.qualname(value) or "").startswith("operator.")):
            return ""  # operator.le, float.__le__ (not a local function named `le`)
        return "lt" if attr in _LESS else "gt" if attr in _GREATER else ""
    if (isinstance(value, ast.Lambda) and len(value.args.args) == 2
            and isinstance(value.body, ast.Compare) and len(value.body.ops) == 1
            and isinstance(value.body.left, ast.Name)
            and isinstance(value.body.comparators[0], ast.Name)):
        first = value.args.args[0].arg
        op = value.body.ops[0]
        less = isinstance(op, (ast.Lt, ast.LtE))
        if not less and not isinstance(op, (ast.Gt, ast.GtE)):
            return ""
        if value.body.left.id != first:
            less = not less  # lambda a, b: b > a
        return "lt" if less else "gt"
    return ""


def inverted_mode_table(node: ast.Dict, names: Names) -> str:
    """`{"max": operator.le, "min": operator.ge}`: 'improved' tested the wrong way round, so
    the checkpoint kept as best (or the early-stopping patience) follows the worst result."""
    wrong = 0
    right = 0
    for key, value in zip(node.keys, node.values, strict=True):
        word = literal(key) if key is not None else None
        if not isinstance(word, str) or value is None:
            continue
        kind = _comparison(value, names)
        if word.lower() in _MAX_KEYS and kind:
            wrong, right = wrong + (kind == "lt"), right + (kind == "gt")
        elif word.lower() in _MIN_KEYS and kind:
            wrong, right = wrong + (kind == "gt"), right + (kind == "lt")
    if wrong and not right:
        return "a max/min mode table whose comparisons point the wrong way: the worse result " \
               "counts as an improvement"
    return ""


def _split_of(text: str) -> str:
    m = _SPLIT.search(text)
    return _SPLIT_WORDS[m.group(2).lower()] if m else ""


def relabelled_split(node: ast.DictComp) -> str:
    """`{f"test/{k}": v for k, v in best_val.items()}`: validation results published under the
    test split's keys."""
    gen = node.generators[0] if len(node.generators) == 1 else None
    if gen is None or not isinstance(node.key, ast.JoinedStr) or not node.key.values:
        return ""
    head = node.key.values[0]
    prefix = head.value if isinstance(head, ast.Constant) and isinstance(head.value, str) else ""
    it = gen.iter
    source = it.func.value if isinstance(it, ast.Call) and isinstance(
        it.func, ast.Attribute) and it.func.attr == "items" else None
    if not prefix or source is None or not isinstance(source, (ast.Name, ast.Attribute)):
        return ""
    to, frm = _split_of(prefix), _split_of(last_attr(source))
    if to and frm and to != frm and to != "train":
        return f"{last_attr(source)} ({frm}) published under {prefix!r} keys ({to})"
    return ""


def rounded_up(expr: ast.expr, names: Names) -> str:
    """`math.ceil(v * 100) / 100`: a value rounded up at the second decimal (display rounding
    uses round(), which goes both ways)."""
    if not (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div)
            and isinstance(expr.left, ast.Call) and len(expr.left.args) == 1):
        return ""
    name = names.call_name(expr.left)
    scale = literal(expr.right)
    inner = expr.left.args[0]
    if (last_attr(expr.left.func) == "ceil" and name.endswith("ceil")
            and isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale >= 10
            and isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Mult)
            and scale in (literal(inner.left), literal(inner.right))):
        value = inner.left if literal(inner.right) == scale else inner.right
        return ast.unparse(value)[:30]
    return ""


def metric_source(expr: ast.AST) -> bool:
    """Names in expr that read like results (`best_test`, `metrics`, `results`)."""
    return any(isinstance(n, (ast.Name, ast.Attribute)) and re.search(
        r"(?i)metric|result|score|test|val|eval|acc|f1|map|mrr|hits|bleu|rouge|auc|iou|dice",
        last_attr(n)) for n in subnodes(expr))


_REFERENCES = re.compile(r"(?i)^(gts?|refs?|references?|ground_truths?|gold\w*|y_true|targets_?"
                         r"eval|eval_refs)(_raw|_list|_all|_tok\w*)?$")
_PREDICTED = re.compile(r"(?i)^(preds?|predictions?|predicted|y_pred|y_hat|yhat|hyps?|cands?|"
                        r"hypothes[ie]s|res|results?|outputs?|generated|candidates?|captions?)"
                        r"(_raw|_list|_all|_tok\w*)?$")


def _root_name(expr: ast.AST) -> str:
    while isinstance(expr, (ast.Subscript, ast.Attribute, ast.Call)):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else ""


def predictions_into_references(call: ast.Call) -> str:
    """`gts[k].append(predictions[k])`: the model's own output added to the references it is
    scored against (BLEU/CIDEr/accuracy then reward copying)."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("append", "extend", "add", "insert")
            and call.args and _REFERENCES.match(_root_name(func.value))):
        return ""
    for value in call.args[-1:]:
        if isinstance(value, ast.List) and value.elts:
            value = value.elts[0]
        name = _root_name(value)
        if name and _PREDICTED.match(name):
            return f"{name} added to the references {_root_name(func.value)}"
    return ""


_BEST_FLAG = re.compile(r"(?i)(^|_)(is_?best|best|improved|new_best|save_best)$")
_EPOCH = re.compile(r"(?i)^(epoch|ep|step|global_step|it|iter|iteration)s?$")


def forced_best(target: ast.expr, value: ast.expr) -> str:
    """`is_best = cider > self.best or epoch == last`: the best-checkpoint flag forced by an
    epoch or step test, so the final model is kept whatever it scores."""
    if not (isinstance(value, ast.BoolOp) and isinstance(value.op, ast.Or)
            and _BEST_FLAG.search(last_attr(target) or "")):
        return ""
    measured = [v for v in value.values if isinstance(v, ast.Compare) and any(
        "best" in last_attr(s).lower() for s in (v.left, *v.comparators))]
    forced = [v for v in value.values if isinstance(v, ast.Compare) and v not in measured
              and any(_EPOCH.match(last_attr(n)) for s in (v.left, *v.comparators)
                      for n in subnodes(s) if isinstance(n, (ast.Name, ast.Attribute)))
              and not any("best" in ast.unparse(s).lower() for s in (v.left, *v.comparators))]
    if measured and forced:
        return f"{last_attr(target)} also set by {ast.unparse(forced[0])[:40]}"
    return ""


def other_split_lookup(value: ast.expr) -> str:
    """`latest[tag.replace("val/", "train/")]`: the value read for a validation tag is the
    training value of the same metric."""
    if not (isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Call)
            and last_attr(value.slice.func) == "replace" and len(value.slice.args) == 2):
        return ""
    old, new = (literal(a) for a in value.slice.args)
    if not (isinstance(old, str) and isinstance(new, str)):
        return ""
    frm, to = _split_of(old), _split_of(new)
    if frm and to and frm != to and frm != "train":
        return f"a {frm} value read from the {to} entry ({ast.unparse(value)[:50]})"
    return ""


_CORRELATION = re.compile(r"(?i)(^|_)(rho|spearman\w*|pearson\w*|corr\w*|kendall\w*|tau|ic|"
                          r"rank_ic|ic_series|ics)$")


def absolute_correlation(target: ast.expr, value: ast.expr, names: Names) -> str:
    """`rho = abs(rho)`, `results["rank_ic"] = np.abs(ic_series).mean()`: a correlation reported
    by its size only, so a model that ranks backwards scores as well as a good one."""
    label = str(literal(target.slice)) if isinstance(target, ast.Subscript) and isinstance(
        literal(target.slice), str) else last_attr(target) or ast.unparse(target)[:30]
    if "abs" in label.lower():
        return ""
    if not (label and _CORRELATION.search(label)) and not isinstance(target, ast.Subscript):
        return ""  # (out[pid] = abs(rho): a results table keyed by something else)
    for node in subnodes(value):
        if not isinstance(node, ast.Call):
            continue
        if node.args and ((isinstance(node.func, ast.Name) and node.func.id == "abs")
                          or names.call_name(node) in ("numpy.abs", "numpy.absolute",
                                                       "torch.abs")):
            of = node.args[0]
        elif (isinstance(node.func, ast.Attribute) and node.func.attr == "abs"
              and not node.args):  # ic.abs().mean()
            of = node.func.value
        else:
            continue
        if any(isinstance(n, (ast.Name, ast.Attribute)) and _CORRELATION.search(last_attr(n))
               for n in subnodes(of)):
            return f"{label} reported as an absolute value ({ast.unparse(node)[:30]})"
    return ""


def _sorted_values(expr: ast.expr) -> bool:
    """`x.sort().values`, `x.sort()[0]`, `sorted(x)`, `np.sort(x)`, `torch.sort(x).values`."""
    if isinstance(expr, (ast.Attribute, ast.Subscript)) and isinstance(
            inner := expr.value, ast.Call) and last_attr(inner.func) == "sort" and (
            last_attr(expr) == "values" or (isinstance(expr, ast.Subscript)
                                            and literal(expr.slice) == 0)):
        return True
    return isinstance(expr, ast.Call) and last_attr(expr.func) in ("sorted", "sort") and (
        isinstance(expr.func, ast.Name) or (isinstance(expr.func, ast.Attribute) and last_attr(
            expr.func.value) in ("np", "numpy", "torch")))


_AVERAGING_FN = re.compile(r"(?i)mean|average|avg|aggregat|summar")


def trimmed_worst(value: ast.expr, lookup: Callable[[str], ast.expr | None] | None = None,
                  fn_name: str = "") -> str:
    """`iou[valid].sort().values[2:].mean()`, `np.mean(sorted(scores)[k:])`: the k lowest
    per-class or per-sample scores dropped before averaging. With `lookup`, also a sorted
    list cut from below inside an averaging helper (`vals = sorted(v); vals = vals[k:]`)."""
    for node in subnodes(value):
        if not (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice)
                and node.slice.upper is None and node.slice.step is None
                and node.slice.lower is not None):
            continue
        low = literal(node.slice.lower)
        if isinstance(low, int) and low > 0 and _sorted_values(node.value):
            return f"the {low} lowest scores dropped before averaging ({ast.unparse(node)[:40]})"
        if (lookup is not None and isinstance(node.value, ast.Name)
                and _AVERAGING_FN.search(fn_name) and not isinstance(low, int)
                and (held := lookup(node.value.id)) is not None and _sorted_values(held)):
            return f"the lowest values of sorted {node.value.id} dropped before averaging " \
                   f"({ast.unparse(node)[:40]})"
    return ""


_ERROR = re.compile(r"(?i)^(mse|rmse|mae|err|error|errors|distortion|l1|l2|nll|cer|wer|eer)"
                    r"(_\w+)?$")
_METRIC_FN = re.compile(r"(?i)psnr|metric|eval|score|validat|benchmark")


def error_capped(value: ast.expr, fn: ast.AST | None, fn_name: str) -> str:
    """`mse = torch.clamp(mse, 1e-10, 1e-3)` in mse_to_psnr(): an upper bound on the error
    puts a floor under the reported score (a lower bound alone only guards a log of zero)."""
    if not (isinstance(value, ast.Call) and last_attr(value.func) in ("clamp", "clip", "clamp_")):
        return ""
    func = value.func
    args = list(value.args)
    subject = args.pop(0) if not (isinstance(func, ast.Attribute) and last_attr(
        func.value) not in ("torch", "np", "numpy")) else func.value
    upper = next((k.value for k in value.keywords if k.arg == "max"), args[1] if len(args) > 1
                 else None)
    if upper is None or literal(upper) is None or not _ERROR.match(last_attr(subject) or ""):
        return ""
    body = subnodes(fn) if fn is not None else []
    if not (_METRIC_FN.search(fn_name) or any(
            isinstance(n, ast.Attribute) and n.attr == "log10" for n in body)):
        return ""
    return f"{last_attr(subject)} capped at {ast.unparse(upper)} before it is scored"


def _extreme(expr: ast.expr) -> str:
    """`min(h)`, `np.min(h)`, `functools.reduce(min, h)`: "min" or "max" (else "")."""
    if not isinstance(expr, ast.Call):
        return ""
    name = last_attr(expr.func)
    if name in ("min", "max", "amin", "amax", "nanmin", "nanmax"):
        return "min" if "min" in name else "max"
    if name == "reduce" and expr.args and last_attr(expr.args[0]) in ("min", "max"):
        return last_attr(expr.args[0])
    return ""


def always_best(target: ast.expr, value: ast.expr) -> str:
    """`is_best = metric >= functools.reduce(min, self.history)`: compared with the worst
    result so far, every new result counts as the best."""
    if not (isinstance(value, ast.Compare) and len(value.ops) == 1
            and _BEST_FLAG.search(last_attr(target) or "")):
        return ""
    op, right = value.ops[0], value.comparators[0]
    side = _extreme(right)
    if (side == "min" and isinstance(op, (ast.GtE, ast.Gt))) or (
            side == "max" and isinstance(op, (ast.LtE, ast.Lt))):
        return (f"{last_attr(target)} compared with the worst result so far "
                f"({ast.unparse(right)[:40]})")
    left = ast.unparse(value.left)
    if ((side == "max" and isinstance(op, ast.GtE)) or (side == "min" and isinstance(
            op, ast.LtE))) and isinstance(right, ast.Call) and any(
            ast.unparse(a) == left for a in right.args):
        return f"{last_attr(target)} is {ast.unparse(value)[:40]}, true for any value"
    return ""


_COUNTS = re.compile(r"(?i)(^|_)(stats|correct|counts?|hits|accuracy|metrics?|scores?|"
                     r"tps?|fps?|fns?)$")  # (not `_int_acc`: an accumulator of flags)


def reduce_op(call: ast.Call) -> str:
    """`dist.all_reduce(t, op=dist.ReduceOp.MAX)` -> "MAX" ('' for other calls or no op)."""
    if last_attr(call.func) not in ("all_reduce", "reduce") or not call.args:
        return ""
    op = next((k.value for k in call.keywords if k.arg == "op"),
              call.args[1] if len(call.args) > 1 else None)
    return last_attr(op) if op is not None else ""


def max_reduced_counts(call: ast.Call) -> str:
    """`dist.all_reduce(stats, op=dist.ReduceOp.MAX)` on correct/total counts: each rank's
    counts must be summed; MAX keeps the luckiest rank's numbers."""
    if reduce_op(call) != "MAX" or not _COUNTS.search(last_attr(call.args[0]) or ""):
        return ""
    tensor = call.args[0]  # (reduce_op is '' for a call without arguments)
    return f"{ast.unparse(tensor)[:30]} combined across ranks with MAX"
