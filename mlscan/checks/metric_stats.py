"""MLS306, statistics of a result computed so that they flatter it, each wrong in one word.

- A bootstrap that draws without replacement: `rng.choice(n, size=n, replace=False)` is a
  permutation of the same sample, so every resample scores alike and the confidence
  interval collapses to a point.
- An expected calibration error divided by the number of bins: `ece / n_bins` after summing
  `weight * |acc - conf|` (the weights already average over the samples) shrinks it tenfold.
- `np.lexsort((scores, labels))`: lexsort sorts by its *last* key first, so this orders by the
  labels and breaks ties by score. A KS or ROC curve over that order separates the classes
  perfectly whatever the model scored.
- A test result filled in from validation: `row["test_auc"] = test.get("auc", row["oof_auc"])`
  reports the validation (or out-of-fold, or training) figure as the test score when the
  test run is missing.
- A reported loss total that skips the batches whose loss is high: `if loss_val < 3 *
  running: total += loss_val` (a NaN guard, `isfinite`, stays quiet).
- Scored pairs filtered on the prediction: `[(p, r) for p, r in pairs if len(p.split()) <=
  2 * len(r.split())]` drops the worst hypotheses before WER is computed (a test on the
  reference alone, `if r`, skips empty references and stays quiet).
- The best checkpoint pointed at the newest one: `state.best_model_checkpoint =
  recent[-1]`.
- The best entry of a history picked by the wrong field: `max(self.history,
  key=operator.itemgetter(0))` with entries appended as `(step, score, path)` returns the
  latest checkpoint, not the best-scoring one.
- A validation mask joined with the training mask: `evaluate(model, data, data.val_mask |
  data.train_mask)` scores the model partly on the nodes it was fitted on.
- Per-class averages over the predicted classes only: `f1_score(y, p, average="macro",
  labels=np.unique(p))` leaves out every class the model never predicts.
- Test samples added to the training split: `train_idx = torch.cat([train_idx,
  split_idx["test"][:n]])` (adding validation for a final fit stays quiet).
- A running meter that ignores values far from its own average: `def update(self, val, n=1):
  if val < self.avg * self.reject_ratio: return` drops the bad batches from the reported mean.
- Session 23: an AUC folded around chance (`0.5 + abs(auc - 0.5)`, `max(auc, 1 - auc)`);
  validation results renamed as test results (`k.replace("val", "test")`); timeouts or
  errors counted as passes (`status in ("passed", "timeout")`); the best seed's run
  reported (`max(seed_runs, key=...)`); the better of two variants of one metric
  (`max(res["acc"], res["acc_norm"])`) or of every prefixed result (`min(v for k, v in
  results.items() if k.startswith("wer"))`); results filtered by their own value before
  averaging (`[s for t, s in scores.items() if s > chance[t]]`); the shortest items as the
  evaluation subset (`sorted(docs, key=len)[:limit]`); logger replacements that drop values
  far above their running average; evaluation loops that `continue` past wrong samples
  before counting them.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.model import Severity

_HELD_OUT_SOURCE = re.compile(r"(?i)(^|_)(val|valid|validation|dev|oof|train|cv)(_|$)")
_LABELS = re.compile(r"(?i)true|label|target|^y$|^ys$|gt")
_SCORES = re.compile(r"(?i)score|prob|pred|logit|conf")
_LOSS_VALUE = re.compile(r"(?i)loss")


def _key(node: ast.AST) -> str:
    """The string key a subscript or `.get()` reads ('' otherwise)."""
    if isinstance(node, ast.Subscript):
        value = literal(node.slice)
        return value if isinstance(value, str) else ""
    if isinstance(node, ast.Call) and last_attr(node.func) == "get" and node.args:
        value = literal(node.args[0])
        return value if isinstance(value, str) else ""
    return ""


def _without_replacement_bootstrap(call: ast.Call, ctx: Ctx) -> bool:
    if last_attr(call.func) != "choice" or literal(kwarg(call, "replace")) is not False:
        return False
    size = kwarg(call, "size") or (call.args[1] if len(call.args) > 1 else None)
    population = call.args[0] if call.args else None
    if size is None or population is None:
        return False
    same = ast.unparse(size) == ast.unparse(population) or (
        isinstance(population, ast.Name) and ast.unparse(size) == f"len({population.id})")
    frame = ctx.frame.name.lower()
    return same and ("boot" in frame or ctx.mentions("bootstrap") or ctx.mentions("n_boot"))


def _lexsort_by_labels(call: ast.Call) -> str:
    if last_attr(call.func) != "lexsort" or not call.args:
        return ""
    keys = call.args[0]
    if not isinstance(keys, (ast.Tuple, ast.List)) or len(keys.elts) < 2:
        return ""
    last, earlier = ast.unparse(keys.elts[-1]), [ast.unparse(e) for e in keys.elts[:-1]]
    if _LABELS.search(last) and not _SCORES.search(last) and any(
            _SCORES.search(e) for e in earlier):
        return last
    return ""


def _filled_from_held_out(target: ast.expr, value: ast.expr) -> str:
    """`row["test_roc_auc"] = test.get("roc_auc", row["oof_roc_auc"])`."""
    label = _key(target) or last_attr(target)
    if not (label and "test" in label.lower() and isinstance(value, ast.Call)
            and last_attr(value.func) == "get" and len(value.args) == 2):
        return ""
    chain = ast.unparse(value.func)
    if "test" not in (label + chain).lower():
        return ""
    fallback = value.args[1]
    source = _key(fallback) or last_attr(fallback)
    return source if source and _HELD_OUT_SOURCE.search(source) else ""


def _variables(expr: ast.AST) -> list[ast.Name]:
    """Names read as values (`running` in `3 * running`; not `float` in `float("inf")`)."""
    called = {id(n.func) for n in subnodes(expr) if isinstance(n, ast.Call)}
    return [n for n in subnodes(expr) if isinstance(n, ast.Name) and id(n) not in called]


_BEST_POINTERS = frozenset({"best_model_checkpoint", "best_model_path", "best_checkpoint",
                            "best_ckpt", "best_ckpt_path"})
_PRED_NAME = re.compile(r"(?i)^(p|h|pred|preds|prediction|hyp|hyps|hypothesis|y_pred|out)$")
_REF_NAME = re.compile(r"(?i)^(r|t|g|ref|refs|reference|gt|truth|target|y_true|label)$")


def _predictions_filtered(comp: ast.ListComp | ast.GeneratorExp) -> str:
    """`[(p, r) for p, r in zip(preds, refs) if len(p.split()) <= k * len(r.split())]`."""
    if len(comp.generators) != 1:
        return ""
    gen = comp.generators[0]
    if not (gen.ifs and isinstance(gen.target, ast.Tuple) and len(gen.target.elts) == 2
            and all(isinstance(e, ast.Name) for e in gen.target.elts)):
        return ""
    first, second = (e.id for e in gen.target.elts)  # type: ignore[attr-defined]
    iterated = ast.unparse(gen.iter).lower()
    if not (_PRED_NAME.match(first) and _REF_NAME.match(second)
            and (len(first) > 1 or re.search(r"pred|hyp|pair", iterated))):
        return ""
    for test in gen.ifs:
        if any(isinstance(n, ast.Name) and n.id == first for n in subnodes(test)):
            return ast.unparse(test)[:50]
    return ""


_COUNTER_FIELD = re.compile(r"(?i)^(step|global_step|epoch|it|iter|iteration|n|idx|index|t)$")
_SCORE_FIELD = re.compile(r"(?i)score|metric|acc|auc|loss|f1|map|iou|bleu|wer|val")


def _key_index(key: ast.expr | None) -> int | None:
    """`operator.itemgetter(0)` / `lambda t: t[0]` -> 0."""
    if isinstance(key, ast.Call) and last_attr(key.func) == "itemgetter" and len(key.args) == 1:
        value = literal(key.args[0])
        return value if isinstance(value, int) else None
    if (isinstance(key, ast.Lambda) and isinstance(key.body, ast.Subscript)
            and isinstance(key.body.value, ast.Name)):
        value = literal(key.body.slice)
        return value if isinstance(value, int) else None
    return None


def _best_by_counter(call: ast.Call, ctx: Ctx) -> str:
    """`max(self.history, key=itemgetter(0))` with `self.history.append((step, score, path))`
    in the file -> "step"."""
    if not (isinstance(call.func, ast.Name) and len(call.args) == 1
            and re.search(r"(?i)best", ctx.frame.name)):
        return ""
    index = _key_index(kwarg(call, "key"))
    if index is None or ctx.tree is None:
        return ""
    listed = ast.unparse(call.args[0])
    for node in subnodes(ctx.tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "append" and ast.unparse(node.func.value) == listed
                and node.args and isinstance(entry := node.args[0], ast.Tuple)
                and len(entry.elts) > index):
            words = [last_attr(e) if isinstance(e, (ast.Name, ast.Attribute)) else ""
                     for e in entry.elts]
            if _COUNTER_FIELD.match(words[index]) and any(
                    _SCORE_FIELD.search(w) for i, w in enumerate(words) if i != index):
                return words[index]
    return ""


def _held_out_with_train(expr: ast.expr) -> bool:
    """`data.val_mask | data.train_mask`."""
    if not (isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr)):
        return False
    sides = [last_attr(s).lower() if isinstance(s, (ast.Name, ast.Attribute)) else ""
             for s in (expr.left, expr.right)]
    return any(re.search(r"val|test", a) for a in sides) and any(
        "train" in b for b in sides) and all("mask" in t or "idx" in t for t in sides)


_AVERAGED_SCORES = frozenset({"f1_score", "precision_score", "recall_score", "fbeta_score",
                              "jaccard_score", "precision_recall_fscore_support",
                              "classification_report"})


def _predicted_classes(labels: ast.expr, ctx: Ctx) -> bool:
    """`np.unique(y_pred)` (or a name bound to it)."""
    if isinstance(labels, ast.Name):
        labels = ctx.lookup(labels.id) or labels
    return (isinstance(labels, ast.Call) and last_attr(labels.func) in ("unique", "set")
            and bool(labels.args) and bool(re.search(r"(?i)pred|hyp|out", ast.unparse(
                labels.args[0]))))


def _test_into_train(target: ast.expr, value: ast.expr) -> bool:
    """`train_idx = torch.cat([train_idx, split_idx["test"][:n]])`."""
    if not (isinstance(target, ast.Name) and "train" in target.id.lower()):
        return False
    parts: list[ast.expr] = []
    if isinstance(value, ast.Call) and last_attr(value.func) in ("cat", "concatenate", "hstack",
                                                                  "union1d", "append"):
        first = value.args[0] if value.args else None
        parts = list(first.elts) if isinstance(first, (ast.List, ast.Tuple)) else list(value.args)
    elif isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Add, ast.BitOr)):
        parts = [value.left, value.right]
    return len(parts) >= 2 and any(ast.unparse(p) == target.id for p in parts) and any(
        re.search(r"(?i)test", ast.unparse(p)) for p in parts)


def _ece_per_bin(node: ast.BinOp, fn: ast.AST | None) -> bool:
    """`ece / n_bins` where `ece` was summed as `weight * |acc - conf|` (an unweighted sum over
    bins divided by their count is the average calibration error, and stays quiet)."""
    if not (isinstance(node.op, ast.Div) and isinstance(node.left, ast.Name)
            and re.search(r"(?i)^ece$|calib", node.left.id)
            and re.search(r"(?i)n_?bins|num_bins|nbins", ast.unparse(node.right))
            and fn is not None):
        return False
    name = node.left.id
    return any(isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)
               and n.target.id == name and isinstance(n.value, ast.BinOp)
               and isinstance(n.value.op, ast.Mult) for n in subnodes(fn))


_AUC = re.compile(r"(?i)auc|roc|auroc")


def _folded_auc(call: ast.Call) -> str:
    """`abs(auc - 0.5)` (reported as `0.5 + abs(auc - 0.5)`) or `max(auc, 1 - auc)`."""
    args = call.args
    if last_attr(call.func) == "abs" and len(args) == 1:
        diff = args[0]
        if (isinstance(diff, ast.BinOp) and isinstance(diff.op, ast.Sub)
                and literal(diff.right) == 0.5 and _AUC.search(ast.unparse(diff.left))):
            return ast.unparse(diff.left)
    if last_attr(call.func) == "max" and len(args) == 2:
        for a, b in (args, args[::-1]):
            if (isinstance(b, ast.BinOp) and isinstance(b.op, ast.Sub) and literal(b.left) in (
                    1, 1.0) and ast.unparse(b.right) == ast.unparse(a)
                    and _AUC.search(ast.unparse(a))):
                return ast.unparse(a)
    return ""


_HELD_OUT_WORD = re.compile(r"(?i)^(val|valid|validation|dev|eval)_?$")


def _renamed_as_test(comp: ast.DictComp) -> bool:
    """`{k.replace("val", "test", 1): v for k, v in best_val_metrics.items()}`."""
    key = comp.key
    return (isinstance(key, ast.Call) and last_attr(key.func) == "replace" and len(key.args) >= 2
            and isinstance(old := literal(key.args[0]), str) and bool(_HELD_OUT_WORD.match(old))
            and isinstance(new := literal(key.args[1]), str) and new.startswith("test")
            and bool(re.search(r"(?i)metric|result|score|best|val",
                               ast.unparse(comp.generators[0].iter))))


_PASS_WORD = re.compile(r"(?i)^(pass|passed|success|succeeded|ok|correct)$")
_FAIL_WORD = re.compile(r"(?i)^(timeout|timed_?out|error|errored|fail|failed|crash(ed)?)$")


def _failure_counted_as_pass(node: ast.Compare) -> str:
    """`status in ("passed", "timeout")`: a failed run scored as a pass."""
    if not (len(node.ops) == 1 and isinstance(node.ops[0], ast.In)
            and isinstance(seq := node.comparators[0], (ast.Tuple, ast.List, ast.Set))):
        return ""
    words = [v for e in seq.elts if isinstance(v := literal(e), str)]
    failed = next((w for w in words if _FAIL_WORD.match(w)), "")
    return failed if failed and any(_PASS_WORD.match(w) for w in words) else ""


_RESULTS = re.compile(r"(?i)score|result|acc|metric|values|f1|auc|map\b")


def _scores_filtered_by_value(comp: ast.ListComp) -> str:
    """`[s for t, s in scores.items() if s > CHANCE[t]]`: the results themselves decide which
    of them count, so the low ones leave the average."""
    if not isinstance(comp.elt, ast.Name) or len(comp.generators) != 1:
        return ""
    gen = comp.generators[0]
    if not (gen.ifs and _RESULTS.search(ast.unparse(gen.iter))):
        return ""
    for test in gen.ifs:
        for c in subnodes(test):
            if (isinstance(c, ast.Compare) and isinstance(c.left, ast.Name)
                    and c.left.id == comp.elt.id and len(c.ops) == 1
                    and isinstance(c.ops[0], (ast.Gt, ast.GtE))):
                return ast.unparse(test)
    return ""


_EVAL_ITEMS = re.compile(r"(?i)docs|examples|samples|questions|eval|test|items|instances")


def _easiest_subset(value: ast.expr) -> bool:
    """`sorted(docs, key=lambda d: len(d["query"]))[:limit]`: the evaluation subset is the
    shortest (easiest) items, not a sample."""
    return (isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Slice)
            and value.slice.lower is None and value.slice.upper is not None
            and isinstance(call := value.value, ast.Call) and last_attr(call.func) == "sorted"
            and bool(call.args) and bool(_EVAL_ITEMS.search(ast.unparse(call.args[0])))
            and (key := kwarg(call, "key")) is not None
            and any(isinstance(n, ast.Call) and last_attr(n.func) == "len"
                    for n in subnodes(key)) and kwarg(call, "reverse") is None)


_LOGGERS = re.compile(r"(?i)^_?(add_scalars?|log|log_metrics?|log_dict|record|write_scalar)$")
_RUNNING = re.compile(r"(?i)avg|ema|mean|running|median|baseline")


def _metric_key(expr: ast.expr) -> tuple[str, str] | None:
    """`res["acc"]` / `res.get("acc_norm", 0.0)` -> ("res", "acc")."""
    if isinstance(expr, ast.Subscript) and isinstance(key := literal(expr.slice), str):
        return ast.unparse(expr.value), key
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "get" and expr.args and isinstance(
                key := literal(expr.args[0]), str)):
        return ast.unparse(expr.func.value), key
    return None


def _better_variant(call: ast.Call) -> str:
    """`max(res["acc"], res.get("acc_norm", 0.0))`: acc or acc_norm, whichever is higher."""
    if not (isinstance(call.func, ast.Name) and len(call.args) == 2 and not call.keywords):
        return ""
    a, b = (_metric_key(x) for x in call.args)
    if a is None or b is None or a[0] != b[0] or a[1] == b[1]:
        return ""
    short, long = sorted((a[1], b[1]), key=len)
    return f"{a[1]!r} and {b[1]!r}" if long.startswith(short + "_") else ""


def _best_of_prefixed(value: ast.expr, key: str) -> bool:
    """`min(v for k, v in results.items() if k.startswith("wer"))` stored as results["wer"]."""
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("min", "max") and len(value.args) == 1
            and isinstance(gen := value.args[0], (ast.GeneratorExp, ast.ListComp))):
        return False
    return any(isinstance(c, ast.Call) and last_attr(c.func) == "startswith" and c.args
               and literal(c.args[0]) == key for g in gen.generators for t in g.ifs
               for c in subnodes(t))


_CORRECT = re.compile(r"(?i)^(is_)?(exact|correct|match(ed)?|hit|right|em)$")
_COUNTER = re.compile(r"(?i)^n_|total|count|num_|^n$|turns|seen")


def _logger_drops_spikes(fn: ast.FunctionDef) -> ast.Return | None:
    """`def add_scalar(tag, value, ...): if value > 3.0 * self._loss_ema: return None`."""
    params = {a.arg for a in fn.args.args}
    for n in subnodes(fn):
        if not (isinstance(n, ast.If) and n.body and isinstance(n.body[-1], ast.Return)):
            continue
        for c in subnodes(n.test):
            if (isinstance(c, ast.Compare) and isinstance(c.left, ast.Name)
                    and c.left.id in params and len(c.ops) == 1
                    and isinstance(c.ops[0], (ast.Gt, ast.GtE)) and any(
                        isinstance(v, ast.Attribute) and _RUNNING.search(v.attr)
                        for v in subnodes(c.comparators[0]))):
                return n.body[-1]
    return None


class FlatteringStatistics(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        attr = last_attr(node.func)
        labels = kwarg(node, "labels") if node.keywords else None
        if labels is not None and not (attr in _AVERAGED_SCORES or ctx.names.call_name(
                node).rsplit(".", 1)[-1] in _AVERAGED_SCORES):
            labels = None
        if labels is not None and _predicted_classes(labels, ctx):
            ctx.report(METRIC_FALSIFY, labels, f"{ctx.names.call_name(node).rsplit('.', 1)[-1]}"
                       f"(labels={ast.unparse(labels)[:30]}) "
                       "averages over the classes the model predicted: every class it never "
                       "predicts is left out", severity=Severity.MEDIUM)
            return
        joined = next((a for a in node.args if _held_out_with_train(a)), None)
        if joined is not None and re.search(r"(?i)eval|valid|test|score|metric", attr):
            ctx.report(METRIC_FALSIFY, joined, f"{ast.unparse(joined)[:50]}: the held-out mask "
                       "joined with the training mask, so the score counts samples the model "
                       "was fitted on", severity=Severity.MEDIUM)
            return
        if attr in ("max", "min") and (field := _best_by_counter(node, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"{attr}() over {ast.unparse(node.args[0])[:30]} "
                       f"keyed on {field}: the entry picked as best is the latest one, not the "
                       "best-scoring one", severity=Severity.MEDIUM)
            return
        if attr in ("abs", "max") and _folded_auc(node):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node)[:40]}: the AUC is folded "
                       "around chance, so a model that ranks worse than chance is reported "
                       "as better than chance", severity=Severity.MEDIUM)
            return
        if attr in ("max", "min") and (pair := _better_variant(node)):
            ctx.report(METRIC_FALSIFY, node, f"{attr}() of {pair}: two variants of the same "
                       "metric, and whichever is better is reported", severity=Severity.MEDIUM)
            return
        if (attr == "max" and node.args and kwarg(node, "key") is not None
                and re.search(r"(?i)seed", ast.unparse(node.args[0]))):
            ctx.report(METRIC_FALSIFY, node, f"max() over {ast.unparse(node.args[0])[:30]}: the "
                       "best seed's run is reported instead of the mean over seeds",
                       severity=Severity.MEDIUM)
            return
        if attr == "choice" and _without_replacement_bootstrap(node, ctx):
            ctx.report(METRIC_FALSIFY, node, "bootstrap resample drawn without replacement: "
                       "each resample is the same sample reordered, so the confidence interval "
                       "collapses to a point", severity=Severity.MEDIUM)
        elif attr == "lexsort" and (by_label := _lexsort_by_labels(node)):
            ctx.report(METRIC_FALSIFY, node, f"np.lexsort sorts by its last key first: this "
                       f"orders by {by_label[:30]} and only breaks ties by score, so the curve "
                       "separates the classes whatever the model scored",
                       severity=Severity.MEDIUM)

    def visit_Continue(self, node: ast.Continue, ctx: Ctx) -> None:
        """`if not exact and len(gold) > 5: continue` before the turn is counted: the hard
        misses never reach the denominator."""
        if not ctx.conds or not ctx.loops or ctx.frame.node is None:
            return
        test = ctx.conds[-1]
        wrong = next((n.operand.id for n in subnodes(test) if isinstance(n, ast.UnaryOp)
                      and isinstance(n.op, ast.Not) and isinstance(n.operand, ast.Name)
                      and _CORRECT.match(n.operand.id)), "")
        if not wrong or not any(isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add)
                                and _COUNTER.search(ast.unparse(n.target))
                                for n in subnodes(ctx.loops[-1])):
            return
        ctx.report(METRIC_FALSIFY, node, f"skips the sample when it is not {wrong} (under "
                   f"{ast.unparse(test)[:40]}): those misses never reach the counts, so the "
                   "score leaves them out", severity=Severity.MEDIUM)

    def visit_Compare(self, node: ast.Compare, ctx: Ctx) -> None:
        if not isinstance(node.ops[0], ast.In):
            return
        failed = _failure_counted_as_pass(node)
        if failed:
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node)[:50]}: a {failed!r} run is "
                       "counted as a pass, so failures raise the score", severity=Severity.MEDIUM)

    def visit_DictComp(self, node: ast.DictComp, ctx: Ctx) -> None:
        if _renamed_as_test(node):
            ctx.report(METRIC_FALSIFY, node, "validation results renamed as test results "
                       f"({ast.unparse(node.key)[:40]}): the figure reported as the test score "
                       "is the one the model was selected on", severity=Severity.MEDIUM)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        for sub in subnodes(node.value) if node.value is not None else ():
            if isinstance(sub, ast.BinOp) and _ece_per_bin(sub, ctx.frame.node):
                ctx.report(METRIC_FALSIFY, sub, f"{ast.unparse(sub)[:40]}: the calibration "
                           "error is already a weighted average over samples; dividing by "
                           "the bin count shrinks it", severity=Severity.MEDIUM)
                return

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if len(node.targets) != 1:
            return
        target = node.targets[0]
        if (isinstance(target, ast.Attribute) and target.attr in _BEST_POINTERS
                and isinstance(node.value, ast.Subscript) and literal(node.value.slice) == -1):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(target)[:40]} set to the newest "
                       f"checkpoint ({ast.unparse(node.value)[:30]}): whatever scored best, the "
                       "latest one is loaded and reported as the best", severity=Severity.MEDIUM)
            return
        if _test_into_train(target, node.value):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node)[:60]}: test samples are added "
                       "to the training split, so the test score measures memorised data",
                       severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Subscript) and isinstance(key := literal(target.slice), str)
                and _best_of_prefixed(node.value, key)):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(target)[:30]} set to the best of "
                       f"every {key!r}-prefixed result (oracle and variants included): the "
                       "reported figure is whichever variant scored best",
                       severity=Severity.MEDIUM)
            return
        if _easiest_subset(node.value):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node.value)[:50]}: the evaluation "
                       "subset is the shortest items after sorting by length, not a sample",
                       severity=Severity.MEDIUM)
            return
        if isinstance(node.value, ast.ListComp) and (kept := _scores_filtered_by_value(
                node.value)):
            ctx.report(METRIC_FALSIFY, node, f"results kept only where {kept[:40]}: the low "
                       "scores leave the aggregate, which then reads higher than the results",
                       severity=Severity.MEDIUM)
            return
        if isinstance(node.value, (ast.ListComp, ast.GeneratorExp)):
            dropped = _predictions_filtered(node.value)
            if dropped:
                ctx.report(METRIC_FALSIFY, node, f"scored pairs kept only where {dropped}: the "
                           "predictions that would score worst are left out of the metric",
                           severity=Severity.MEDIUM)
            return
        if not isinstance(node.value, ast.Call):
            return
        source = _filled_from_held_out(node.targets[0], node.value)
        if source:
            ctx.report(METRIC_FALSIFY, node, f"a missing test result is filled with {source}: "
                       "the held-out figure is reported as the test score",
                       severity=Severity.MEDIUM)

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        if not (isinstance(node.op, ast.Add) and _LOSS_VALUE.search(ast.unparse(node.target))
                and ctx.conds):
            return
        test = ctx.conds[-1]
        reads = {n.id for n in subnodes(node.value) if isinstance(n, ast.Name)}
        if any(isinstance(c, ast.Compare) and any(
                isinstance(n, ast.Name) and n.id in reads and _LOSS_VALUE.search(n.id)
                for n in subnodes(c.left)) and any(
                n.id not in reads for comp in c.comparators for n in _variables(comp))
                for c in subnodes(test)):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node.target)} adds a batch's loss "
                       "only when it is below a bound set from the losses themselves: the "
                       "high-loss batches are left out of the reported figure",
                       severity=Severity.MEDIUM)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        if _LOGGERS.match(node.name) and (dropped := _logger_drops_spikes(node)) is not None:
            ctx.report(METRIC_FALSIFY, dropped, f"{node.name}() drops values far above a "
                       "running average of the same values: the spikes never reach the logged "
                       "curve", severity=Severity.MEDIUM)
            return
        cls = ctx.classes[-1].name if ctx.classes else ""
        if node.name != "update" or not re.search(r"(?i)meter|average|avg|tracker", cls):
            return
        params = {a.arg for a in node.args.args[1:]}
        for stmt in node.body:
            if (isinstance(stmt, ast.If) and stmt.body and isinstance(stmt.body[-1], ast.Return)
                    and any(isinstance(c, ast.Compare) and any(
                        isinstance(n, ast.Name) and n.id in params for n in subnodes(c))
                        and re.search(r"self\.(avg|mean|average|running)", ast.unparse(c))
                        for c in subnodes(stmt.test))):
                ctx.report(METRIC_FALSIFY, stmt.body[-1], f"{cls}.update() drops values that "
                           "fall too far from its own average: the bad batches never reach "
                           "the reported mean", severity=Severity.MEDIUM)
                return
