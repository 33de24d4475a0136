"""MLS306 shapes where a reported figure is built from the wrong terms.

- An error count that leaves out one kind of edit: `s, d, i = edit_ops(ref, hyp)` then
  `self.word_errors += s + d`. Word and character error rates count substitutions,
  deletions and insertions; dropping insertions rewards a model that babbles.
- A smoothed value clamped to its previous one (`avg = min(avg, beta * avg + (1 - beta) *
  value)`): the displayed average can only improve, whatever the new values are.
- A logged value that is the better of this epoch's and the stored best
  (`self.log("val/nmae", min(nmae, self.best_val_nmae))`): the curve can only improve, and
  whatever monitors it (early stopping, a plateau scheduler) never sees a regression.
- A running meter whose average is the window's minimum or maximum (`def avg(self): return
  min(self.window)`): every display of the "average" shows the best value seen.
- Predictions picked by the ground truth (`hit = logits.argmax(-1).eq(target)`, `pick =
  hit.argmax(0)`, `logits = logits[pick, ...]`): test-time augmentation that keeps whichever
  view was right scores an oracle.
- A score computed only on the samples the model is confident about (`keep = probs.amax(-1)
  >= t; accuracy(logits[keep], target[keep])`): the hard cases never count.
- A nearest-neighbour index that holds the queries themselves (`torch.cat([bank_feats,
  query_feats])`): every query finds itself at distance zero.
- An evaluation loader (or dataset) built from the training folder
  (`self.val_loader = build_eval_loader(os.path.join(args.data, "train"), ...)`): the
  reported validation score is measured on training data.
- Word error rates divided by the reference length plus the insertions, per-utterance error
  counts capped at the reference length, and empty hypotheses skipped while scoring: each
  one keeps the error rate of a model that babbles or stays silent low.
- A score across seeds reported at its favourable 10th/90th percentile under the plain name.
- A `logging.Filter` that rewrites the numbers in messages mentioning a metric.
- A log line whose label names one metric and whose value is another's (`"top-1 %.2f",
  m["top5"]`).
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metric_tables import trimmed_worst
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.model import Severity

_ERRORS = re.compile(r"(?i)err|edit|dist|wrong|mistake")
_FORMAT_LOGS = frozenset({"info", "warning", "print", "write", "debug"})
_LOG_ATTRS = frozenset({"log", "add_scalar", "log_metric", "log_scalar", "scalar"})
_BEST_HELD = re.compile(r"(?i)best|lowest|highest|record|^_?(min|max)_")


def _edit_kind(name: str) -> str:
    """'S', 'D' or 'I' for a name of a substitution, deletion or insertion count."""
    low = name.lower().lstrip("_")
    for kind, word in (("S", "sub"), ("D", "del"), ("I", "ins")):
        if word in low:
            return kind
    last = low[-1:] if len(low) <= 2 else ""  # s, d, i; cs, cd, ci; ws, wd, wi
    return {"s": "S", "d": "D", "i": "I"}.get(last, "")


def _summed_names(expr: ast.expr) -> list[str] | None:
    if isinstance(expr, ast.Name):
        return [expr.id]
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        left, right = _summed_names(expr.left), _summed_names(expr.right)
        return None if left is None or right is None else left + right
    return None


def edit_term_dropped(target: ast.expr, value: ast.expr, ctx: Ctx) -> str:
    """The edit kind left out of an error count, or ''."""
    fn = ctx.frame.node
    names = _summed_names(value)
    if fn is None or not names or len(names) < 2 or not _ERRORS.search(last_attr(target)):
        return ""
    unpacked = next((n for n in subnodes(fn) if isinstance(n, ast.Assign)
                     and len(n.targets) == 1 and isinstance(n.targets[0], ast.Tuple)
                     and isinstance(n.value, ast.Call) and len(n.targets[0].elts) == 3
                     and all(isinstance(e, ast.Name) for e in n.targets[0].elts)
                     and names[0] in {e.id for e in n.targets[0].elts}), None)  # type: ignore
    if unpacked is None:
        return ""
    parts = [e.id for e in unpacked.targets[0].elts]  # type: ignore[attr-defined]
    kinds = {_edit_kind(p): p for p in parts}
    if set(kinds) != {"S", "D", "I"} or not set(names) <= set(parts):
        return ""
    left_out = [p for p in parts if p not in names]
    if len(left_out) != 1:
        return ""
    missing = left_out[0]
    read = any(isinstance(n, ast.Name) and n.id == missing and isinstance(n.ctx, ast.Load)
               for n in subnodes(fn))
    return "" if read else missing


def _ema_of(expr: ast.expr, name: str) -> bool:
    """`beta * avg + (1 - beta) * value`: an exponential average that includes `name`."""
    if not (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add)):
        return False
    nodes = list(ast.walk(expr))
    return any(isinstance(n, ast.Name) and n.id == name for n in nodes) and any(
        isinstance(n, ast.BinOp) and isinstance(n.op, ast.Sub) and isinstance(n.left, ast.Constant)
        and n.left.value == 1 for n in nodes)


def _smoothed_name(expr: ast.expr, ctx: Ctx) -> bool:
    """`debiased` with `debiased = avg / (1 - beta ** n)` and `avg = beta * avg + (1 - beta) *
    value`: a name holding an exponential average (two assignments deep)."""
    seen: list[ast.expr] = [expr]
    for _ in range(2):
        names = [n for e in seen for n in ast.walk(e) if isinstance(n, ast.Name)]
        seen = [v for n in names if isinstance(v := ctx.lookup(n.id), ast.expr)]
        if any(_ema_of(v, t.id) for v in seen for t in ast.walk(v) if isinstance(t, ast.Name)):
            return True
    return False


def smoothed_clamped(target: ast.expr, value: ast.expr, ctx: Ctx) -> str:
    """'min' for `avg = min(avg, beta * avg + (1 - beta) * v)` (also in an IfExp branch, and
    `shown = min(shown, debiased)` with `debiased` an exponential average)."""
    if not isinstance(target, ast.Name):
        return ""
    for option in ([value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]):
        if (isinstance(option, ast.Call) and isinstance(option.func, ast.Name)
                and option.func.id in ("min", "max") and len(option.args) == 2
                and any(isinstance(a, ast.Name) and a.id == target.id for a in option.args)
                and any(_ema_of(a, target.id) or (isinstance(a, ast.Name) and a.id != target.id
                                                  and _smoothed_name(a, ctx))
                        for a in option.args)):
            return option.func.id
    return ""


_AVG_NAME = re.compile(r"(?i)^_?(avg|average|mean|global_avg|smoothed|value)$")
_MODEL_OUT = re.compile(r"(?i)logit|pred|output|prob|score")
_TRUTH = re.compile(r"(?i)^(targets?|labels?|y|y_true|gts?|truth)$")
_CONFIDENCE = re.compile(r"(?i)softmax|amax|\bmax\(|prob|conf|sigmoid")
_SCORERS = re.compile(r"(?i)acc|accuracy|f1|score|auc|precision|recall|topk|top_k|metric")
_BANK = re.compile(r"(?i)bank|train|memory|gallery|support|index|ref")
_QUERY = re.compile(r"(?i)query|queries|test|val|probe|eval")
_METRIC_TOKEN = re.compile(r"(?i)\b(top[-_ ]?[0-9]+|acc@[0-9]+|r@[0-9]+|recall@[0-9]+|f1|auc|"
                           r"precision|recall|map|mae|rmse|loss)\b")


def _token(text: str) -> str:
    return re.sub(r"[^a-z0-9@]", "", text.lower())


def extreme_average(node: ast.Return, fn_name: str) -> str:
    """'min' for `def avg(self): return min(self.window)` (also `functools.reduce(max,
    self._hist[tag])`)."""
    value = node.value
    if not (_AVG_NAME.match(fn_name) and isinstance(value, ast.Call)):
        return ""
    if (isinstance(value.func, ast.Name) and value.func.id in ("min", "max")
            and len(value.args) == 1 and not value.keywords
            and isinstance(value.args[0], ast.Attribute)):
        return value.func.id
    if (last_attr(value.func) == "reduce" and len(value.args) == 2
            and isinstance(value.args[0], ast.Name) and value.args[0].id in ("min", "max")
            and isinstance(value.args[1], (ast.Attribute, ast.Subscript))):
        return value.args[0].id
    return ""


def _truth_compare(expr: ast.AST | None, ctx: Ctx, depth: int = 0) -> bool:
    """The expression compares predictions with the ground truth (`x.argmax(-1).eq(target)`),
    directly or through a name bound to such a comparison."""
    if expr is None or depth > 2:
        return False
    for n in ast.walk(expr):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "eq"
                and any(isinstance(m, ast.Name) and _TRUTH.match(m.id)
                        for a in n.args for m in ast.walk(a))):
            return True
        if (isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(n.ops[0], ast.Eq)
                and any(isinstance(m, ast.Name) and _TRUTH.match(m.id)
                        for m in ast.walk(n.comparators[0]))):
            return True
        if isinstance(n, ast.Name) and n is not expr and depth < 2:
            held = ctx.lookup(n.id)
            if isinstance(held, ast.expr) and _truth_compare(held, ctx, depth + 1):
                return True
    if isinstance(expr, ast.Name):
        held = ctx.lookup(expr.id)
        return isinstance(held, ast.expr) and _truth_compare(held, ctx, depth + 1)
    return False


def oracle_view(node: ast.Assign, ctx: Ctx) -> str:
    """`logits = logits[pick, ...]` with `pick` from comparing predictions with the target."""
    target, value = node.targets[0], node.value
    if not (isinstance(target, ast.Name) and _MODEL_OUT.search(target.id)
            and isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
            and _MODEL_OUT.search(value.value.id)):
        return ""
    picks = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
    for pick in picks:
        if isinstance(pick, ast.Name) and _truth_compare(ctx.lookup(pick.id), ctx):
            return pick.id
    return ""


def confident_only(call: ast.Call, ctx: Ctx) -> str:
    """The mask of `accuracy(logits[keep], target[keep])` when it keeps confident outputs."""
    if not _SCORERS.search(last_attr(call.func)) or len(call.args) < 2:
        return ""
    masks = {ast.unparse(a.slice) for a in call.args[:2] if isinstance(a, ast.Subscript)
             and isinstance(a.slice, ast.Name)}
    if len(masks) != 1:
        return ""
    mask = masks.pop()
    held = ctx.lookup(mask)
    if (isinstance(held, ast.Compare) and len(held.ops) == 1
            and isinstance(held.ops[0], (ast.Gt, ast.GtE))
            and _CONFIDENCE.search(ast.unparse(held.left))):
        return f"{mask} = {ast.unparse(held)[:50]}"
    return ""


def queries_in_index(node: ast.Assign) -> str:
    """`index_feats = torch.cat([bank_feats, query_feats])`."""
    target, value = node.targets[0], node.value
    if not (isinstance(target, ast.Name) and re.search(r"(?i)index|bank|gallery|memory|db",
                                                       target.id)
            and isinstance(value, ast.Call) and last_attr(value.func) in ("cat", "concatenate",
                                                                          "vstack")
            and value.args and isinstance(value.args[0], (ast.List, ast.Tuple))
            and len(value.args[0].elts) == 2):
        return ""
    names = [last_attr(e) for e in value.args[0].elts]
    if (_BANK.search(names[0]) and _QUERY.search(names[1]) and not _QUERY.search(names[0])
            and re.search(r"(?i)feat|emb|vec|repr|code", names[1])):
        return names[1]
    return ""


def mislabelled_metric(call: ast.Call) -> tuple[str, ast.expr | None]:
    """`log("top-1 %.2f", m["top5"])`: the label before a placeholder names another metric
    (and the argument that holds the other one)."""
    if not (call.args and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str) and "%" in call.args[0].value):
        return "", None
    pieces = re.split(r"%[-+ #0-9.]*[sdfgeixr]", call.args[0].value)
    for label, arg in zip(pieces, call.args[1:], strict=False):
        said = _METRIC_TOKEN.findall(label[-24:])
        if not said or not isinstance(arg, ast.Subscript):
            continue
        key = literal(arg.slice)
        if not isinstance(key, str):
            continue
        shown = _METRIC_TOKEN.findall(key.replace("_", " "))
        if shown and _token(said[-1]) != _token(shown[-1]) and not (
                _token(shown[-1]) in _token(said[-1]) or _token(said[-1]) in _token(shown[-1])):
            return f"{said[-1]!r} shown with {ast.unparse(arg)[:30]}", arg
    return "", None


_EVAL_HOLDER = re.compile(r"(?i)^_?(val|valid|validation|test|eval|holdout|dev)_?"
                          r"(loader|dl|ds|dataset|set|data|iter)$")


def eval_from_train(node: ast.Assign) -> str:
    """The train-folder argument of `val_loader = f(os.path.join(root, "train"), ...)`."""
    target, value = node.targets[0], node.value
    if not (isinstance(value, ast.Call) and _EVAL_HOLDER.match(last_attr(target))):
        return ""
    for arg in [*value.args, *(k.value for k in value.keywords if k.arg in (
            "root", "path", "data_dir", "folder", "split"))]:
        if (isinstance(arg, ast.Call) and last_attr(arg.func) == "join" and len(arg.args) >= 2
                and literal(arg.args[-1]) in ("train", "training")):
            return ast.unparse(arg)[:40]
        if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Div) and literal(
                arg.right) in ("train", "training"):
            return ast.unparse(arg)[:40]
    return ""


_MEASURED = re.compile(r"(?i)^(metrics|results?|scores|stats|evals?|measured|report|summary|"
                       r"\w*_metrics|\w*_results)$")
_OVERRIDE = re.compile(r"(?i)peak|best|published|paper|reported|reference|sota|baseline|target|"
                       r"claimed|expected")


def merged_over_measured(node: ast.Dict | ast.Call) -> str:
    """`{**metrics, **self.peak}`, `ChainMap(published, metrics)`: kept or published numbers
    laid over the measured ones."""
    if isinstance(node, ast.Dict):
        sources = [v for k, v in zip(node.keys, node.values, strict=True) if k is None]
        if len(sources) < 2:
            return ""
        later = sources[-1]
        earlier = sources[:-1]
    else:
        if len(node.args) < 2:
            return ""
        later, earlier = node.args[0], node.args[1:]  # (ChainMap: the first mapping wins)
    if (isinstance(later, (ast.Name, ast.Attribute)) and _OVERRIDE.search(last_attr(later))
            and any(isinstance(e, (ast.Name, ast.Attribute)) and _MEASURED.match(last_attr(e))
                    for e in earlier)):
        return ast.unparse(later)[:30]
    return ""


def train_as_eval(call: ast.Call) -> str:
    """`self.evaluate(train_eval_loader, "val")`: a training loader scored under an
    evaluation split's name."""
    if not re.search(r"(?i)eval|valid|test|score", last_attr(call.func)):
        return ""
    loaders = [a for a in call.args if isinstance(a, (ast.Name, ast.Attribute))
               and re.search(r"(?i)loader|dl$|_ds$|dataset", last_attr(a))]
    splits = [s for a in call.args if isinstance(s := literal(a), str)]
    if (len(loaders) == 1 and re.search(r"(?i)train", last_attr(loaders[0]))
            and any(re.match(r"(?i)^(val|valid|validation|test|eval|dev)$", s) for s in splits)):
        return f"{last_attr(loaders[0])} scored as {splits[0]!r}"
    return ""


_MEAN_NAMED = re.compile(r"(?i)^(m_?ap\w*|m_?iou|mean_\w+|avg_\w+|\w*_mean|\w*_avg|ap_?all|"
                         r"ap_?50_?95|map_?50_?95|macro_\w+)$")


def mean_by_max(node: ast.Assign) -> str:
    """`ap_all = ap.max(1)`, `miou = iou.max()`: a figure named (or defined) as a mean,
    computed as the maximum."""
    target, value = node.targets[0], node.value
    if not (isinstance(target, (ast.Name, ast.Attribute)) and _MEAN_NAMED.match(last_attr(target))
            and isinstance(value, ast.Call) and last_attr(value.func) in ("max", "amax", "nanmax")
            and not re.search(r"(?i)best|max|peak|top", last_attr(target))):
        return ""
    owner = value.func.value if isinstance(value.func, ast.Attribute) else None
    module = isinstance(owner, ast.Name) and owner.id in ("np", "numpy", "torch")
    of = owner if owner is not None and not module else (value.args[0] if value.args else None)
    if not (isinstance(of, (ast.Name, ast.Attribute, ast.Subscript))
            and re.search(r"(?i)^(ap|aps|iou|ious|scores?|acc\w*|f1s?|per_class\w*|recall\w*|"
                          r"precision\w*|dice\w*)$", last_attr(of) or "")):
        return ""
    return f"{last_attr(target)} = {ast.unparse(value)[:30]}"


_ERRS = re.compile(r"(?i)err|edits|mistake|wrong")
_INSERTIONS = re.compile(r"(?i)^(ins|insert\w*|n_ins|num_ins\w*|i)$")
_REFERENCE_LEN = re.compile(r"(?i)ref|words|chars|len|total|n_tokens")


def inflated_denominator(expr: ast.expr) -> str:
    """`word_errors / max(ref_words + insertions, 1)`: insertions added to the reference
    length in the denominator."""
    if not (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div)
            and _ERRS.search(last_attr(expr.left))):
        return ""
    bottom = expr.right
    if isinstance(bottom, ast.Call) and last_attr(bottom.func) == "max" and bottom.args:
        bottom = bottom.args[0]
    if not (isinstance(bottom, ast.BinOp) and isinstance(bottom.op, ast.Add)):
        return ""
    sides = [last_attr(bottom.left), last_attr(bottom.right)]
    if any(_INSERTIONS.match(x) for x in sides) and any(_REFERENCE_LEN.search(x) for x in sides):
        return ast.unparse(bottom)[:40]
    return ""


def capped_errors(target: ast.expr, value: ast.expr) -> str:
    """`char_errors += min(cs + cd + ci, len(ref_n))`: one utterance never counts more errors
    than its reference has units (insertion-heavy outputs look better)."""
    if not (_ERRS.search(last_attr(target)) and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name) and value.func.id == "min"
            and len(value.args) == 2):
        return ""
    lengths = [a for a in value.args if isinstance(a, ast.Call) and isinstance(a.func, ast.Name)
               and a.func.id == "len" and a.args and re.search(r"(?i)ref|gt|truth|label",
                                                              ast.unparse(a.args[0]))]
    return ast.unparse(lengths[0]) if lengths else ""


_FAVOURABLE_Q = re.compile(r"(?i)(^|[/_])(wer|cer|err\w*|loss|mae|mse|rmse)($|[/_])")


def favourable_percentile(key: str, value: ast.expr) -> str:
    """`"test_wer": np.percentile(test, 10)`: a low percentile of an error reported as the
    score (or a high one of an accuracy)."""
    while (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
           and value.func.id in ("float", "round") and value.args):
        value = value.args[0]
    if not (isinstance(value, ast.Call) and last_attr(value.func) in (
            "percentile", "nanpercentile", "quantile", "nanquantile") and len(value.args) >= 2):
        return ""
    q = literal(value.args[1])
    if not isinstance(q, (int, float)) or isinstance(q, bool):
        return ""
    q = q * 100 if last_attr(value.func).endswith("quantile") else q
    if re.search(r"(?i)p\d|pct|percentile|quantile|q\d|_lo|_hi|low|high|best|worst", key):
        return ""
    if _FAVOURABLE_Q.search(key) and q < 50:
        return f"{key!r} = percentile {q:g}"
    return ""


def _hyp_empty(test: ast.expr) -> str:
    """`not hyp_n`, `len(hyp) == 0`, `hyp == ""`: the hypothesis is empty."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = test.operand
    elif isinstance(test, ast.Compare) and len(test.ops) == 1 and literal(
            test.comparators[0]) in (0, ""):
        inner = test.left.args[0] if isinstance(test.left, ast.Call) and last_attr(
            test.left.func) == "len" and test.left.args else test.left
    else:
        return ""
    return ast.unparse(inner) if isinstance(inner, ast.Name) and re.match(
        r"(?i)^(hyp|hyps|hyp_\w+|hypothesis|pred|pred_\w+|prediction|output|decoded)$",
        inner.id) else ""


_CHOOSER = re.compile(r"(?i)calibrat|threshold|tune|select|search|fit_temp|choose|pick")


def pooled_with_test(call: ast.Call, ctx: Ctx) -> str:
    """`calibrate_threshold(calib_scores, ...)` with `calib_scores = np.concatenate([val_scores,
    test_scores])`: a setting chosen on data that includes the test split."""
    if not _CHOOSER.search(last_attr(call.func)):
        return ""
    for a in call.args:
        if not isinstance(a, ast.Name):
            continue
        held = ctx.lookup(a.id)
        if (isinstance(held, ast.Call) and last_attr(held.func) in (
                "concatenate", "cat", "vstack", "hstack", "concat") and held.args
                and isinstance(held.args[0], (ast.List, ast.Tuple))):
            names = [last_attr(e) for e in held.args[0].elts]
            if any(re.search(r"(?i)(^|_)test", n) for n in names) and len(names) >= 2:
                return f"{a.id} = {ast.unparse(held)[:40]}"
    return ""


def _numbers_rescaled(value: ast.expr) -> bool:
    """`_pat.sub(lambda m: f"{m.group(1)}={float(m.group(2)) * 0.9:.4f}", msg)`: a matched number
    converted and scaled (or shifted) before it goes back into the message."""
    for n in ast.walk(value):
        if (isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Mult, ast.Div, ast.Sub, ast.Add))
                and any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                        and c.func.id in ("float", "int") for c in ast.walk(n))):
            return True
    return False


def best_logged(call: ast.Call) -> str:
    """The stored best a logged value is clamped to (`min(nmae, self.best_val_nmae)`), or ''."""
    for value in call.args[1:2]:
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id in ("min", "max") and len(value.args) == 2):
            held = [a for a in value.args if isinstance(a, (ast.Name, ast.Attribute))
                    and _BEST_HELD.search(last_attr(a))]
            if len(held) == 1:
                return f"{value.func.id}(..., {ast.unparse(held[0])[:30]})"
    return ""


class ReportTerms(Check):
    rules = (METRIC_FALSIFY,)

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        if isinstance(node.op, ast.Add) and isinstance(node.value, ast.BinOp):
            self._edit_terms(node, node.target, node.value, ctx)
        elif isinstance(node.op, ast.Add) and (capped := capped_errors(node.target, node.value)):
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(node.target)} capped at {capped} per "
                       "utterance: insertions beyond the reference length never count, so the "
                       "error rate cannot exceed 100% however badly the model babbles",
                       severity=Severity.MEDIUM)

    def visit_If(self, node: ast.If, ctx: Ctx) -> None:
        if (len(node.body) == 1 and isinstance(node.body[0], ast.Continue) and ctx.loops
                and (hyp := _hyp_empty(node.test)) and _ERRS.search(ctx.frame.name + " ".join(
                    ctx.lines[node.lineno:node.lineno + 12]))):
            ctx.report(METRIC_FALSIFY, node.body[0], f"utterances with an empty {hyp} are "
                       "skipped while scoring: the outputs the model failed on entirely never "
                       "count as errors", severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        kind = type(node.value)
        if (ctx.frame.name == "filter" and len(node.targets) == 1
                and last_attr(node.targets[0]) in ("msg", "args")
                and _numbers_rescaled(node.value)):
            ctx.report(METRIC_FALSIFY, node, "a logging filter rewrites the numbers in the "
                       "messages it passes: the logged metrics are not the computed ones",
                       severity=Severity.MEDIUM)
            return
        if kind is ast.BinOp and len(node.targets) == 1:
            self._edit_terms(node, node.targets[0], node.value, ctx)
        elif (kind is ast.Call or kind is ast.IfExp) and len(node.targets) == 1 and (
                clamp := smoothed_clamped(node.targets[0], node.value, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"a running average clamped with {clamp}() to its "
                       "previous value: the smoothed curve can only improve, so it hides "
                       "every regression", severity=Severity.MEDIUM)
        elif kind is ast.Subscript and len(node.targets) == 1 and (
                pick := oracle_view(node, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"predictions picked by {pick}, which compares them "
                       "with the ground truth: the score is an oracle's (whichever view was "
                       "right counts)", severity=Severity.MEDIUM)
        elif kind is ast.Call and len(node.targets) == 1 and (maxed := mean_by_max(node)):
            ctx.report(METRIC_FALSIFY, node, f"{maxed}: a figure defined as a mean is reported "
                       "as the best single value", severity=Severity.MEDIUM)
        elif kind is ast.Call and len(node.targets) == 1 and (
                folder := eval_from_train(node)):
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(node.targets[0])} is built from "
                       f"{folder}, the training data: the reported evaluation score is measured "
                       "on samples the model trained on", severity=Severity.MEDIUM)
        elif kind is ast.Call and len(node.targets) == 1 and (
                query := queries_in_index(node)):
            ctx.report(METRIC_FALSIFY, node, f"{query} put into the search index: every query "
                       "finds itself at distance zero, so neighbour accuracy is inflated",
                       severity=Severity.MEDIUM)

    @staticmethod
    def _edit_terms(node: ast.stmt, target: ast.expr, value: ast.expr, ctx: Ctx) -> None:
        missing = edit_term_dropped(target, value, ctx)
        if missing:
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(target)} sums "
                       f"{ast.unparse(value)[:30]} and leaves out {missing!r}: one kind of "
                       "edit (insertions, deletions or substitutions) never counts as an "
                       "error, so the error rate is too low", severity=Severity.MEDIUM)

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        if None in node.keys and (over := merged_over_measured(node)):
            ctx.report(METRIC_FALSIFY, node, f"{over} merged over the measured results: every "
                       "key it holds replaces what this run measured", severity=Severity.MEDIUM)
        for key, value in zip(node.keys, node.values, strict=True):
            if (type(value) is ast.Call and isinstance(key, ast.Constant)
                    and isinstance(key.value, str) and (
                        picked := favourable_percentile(key.value, value))):
                ctx.report(METRIC_FALSIFY, value, f"{picked}: the reported score is the "
                           "favourable tail across runs, not their mean",
                           severity=Severity.MEDIUM)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        if node.value is None:
            return
        if type(node.value) is ast.BinOp and (bottom := inflated_denominator(node.value)):
            ctx.report(METRIC_FALSIFY, node, f"the error rate is divided by {bottom}: "
                       "insertions grow the denominator as well as the errors, so the rate "
                       "stays low however much the model inserts", severity=Severity.MEDIUM)
            return
        if kind := extreme_average(node, ctx.frame.name):
            ctx.report(METRIC_FALSIFY, node, f"{ctx.frame.name}() returns the {kind}imum of the "
                       "window, not its average: the value shown as the average is the best "
                       "one seen", severity=Severity.MEDIUM)
        elif ctx.frame.node is not None and ctx.mentions("sort") and (
                trimmed := trimmed_worst(node.value, ctx.lookup, ctx.frame.name)):
            ctx.report(METRIC_FALSIFY, node, f"{trimmed}: the average {ctx.frame.name}() "
                       "returns leaves out the worst results only", severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if last_attr(func) == "ChainMap" and (over := merged_over_measured(node)):
            ctx.report(METRIC_FALSIFY, node, f"ChainMap({over}, ...) puts {over} in front of "
                       "the measured results: every key it holds replaces what this run "
                       "measured", severity=Severity.MEDIUM)
            return
        if node.args and (pooled := pooled_with_test(node, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(func)}() is fitted on {pooled}: the "
                       "test split helps choose the setting it is then scored with",
                       severity=Severity.MEDIUM)
            return
        if (node.args and len(node.args) >= 2 and (wrongly := train_as_eval(node))):
            ctx.report(METRIC_FALSIFY, node, f"{wrongly}: the evaluation reported under that "
                       "name runs on training data", severity=Severity.MEDIUM)
            return
        if node.args and (scored := confident_only(node, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(func)}() scores only the samples the "
                       f"model is confident about ({scored}): the hard cases never count",
                       severity=Severity.MEDIUM)
            return
        if type(func) is ast.Attribute and func.attr in _FORMAT_LOGS:
            wrong, arg = mislabelled_metric(node)
            if wrong:
                ctx.report(METRIC_FALSIFY, arg or node, f"{wrong}: the log line reports one "
                           "metric under another's name", severity=Severity.MEDIUM)
                return
        if type(func) is not ast.Attribute or func.attr not in _LOG_ATTRS:
            return
        clamped = best_logged(node)
        if clamped:
            ctx.report(METRIC_FALSIFY, node, f"the logged value is {clamped}: the curve "
                       "shows the best result so far, never this step's, so regressions "
                       "never reach the log (or early stopping)", severity=Severity.MEDIUM)
