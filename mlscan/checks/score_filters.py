"""MLS306: evaluation summaries that drop, pick or soften the bad results.

- Result rows filtered by their own score before they are summarised
  (`rows = [r for r in rows if r["mean_dice"] >= 0.1]`).
- A symmetric distance taken as the smaller direction: `min(p95(pred_to_gt),
  p95(gt_to_pred))` (the Hausdorff distance is the larger one).
- An overlap score that is NaN when only the prediction is empty (`if p == 0: return nan`):
  a NaN-aware mean then skips exactly the cases the model missed.
- Missing distances or errors replaced by 0, the best value (`nan_to_num(hd, nan=0.0)`).
- Missing folds or runs filled in with the best one (`per_fold.setdefault(f, best)`).
- Prediction voxels outside a region grown from the ground truth erased
  (`roi = binary_dilation(gt > 0)`; `pred[~roi] = 0`): false positives elsewhere vanish.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import last_attr, literal, source
from mlscan.checks.nodes import subnodes
from mlscan.model import Severity

_SCORE_KEY = re.compile(r"(?i)dice|iou|jaccard|acc|f1|auc|score|bleu|rouge|map\b|psnr|ssim")
_ROWS = re.compile(r"(?i)^(rows|results|cases|records|scores|per_case|metrics|runs|folds)$")
_DISTANCE = re.compile(r"(?i)^(hd|hd95|hausdorff\w*|assd|asd|nsd_dist|dist\w*|error\w*|errs?|"
                       r"rmse|mae|mse|ade|fde|epe)$")
_OVERLAP_FN = re.compile(r"(?i)dice|iou|jaccard|overlap")
_PRED = re.compile(r"(?i)^(p|pred|preds|prediction|predictions|seg_pred|pred_mask|out|output)$")
_TRUTH = re.compile(r"(?i)\b(gt|gts|truth|ground_truth|label|labels|target|targets|y_true)\b")


class ScoreFilters(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target, value = node.targets[0], node.value
        if isinstance(value, ast.ListComp) and isinstance(target, ast.Name) and (
                kept := _filtered_by_score(target.id, value)):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} keeps only the entries whose {kept}: "
                       "the results below the bar are dropped before they are summarised",
                       severity=Severity.MEDIUM)
        elif (isinstance(value, ast.Subscript) and isinstance(target, ast.Name)
              and _SUMMARY_FN.search(ctx.frame.name) and (cut := _tail_cut(target.id, value))):
            ctx.report(METRIC_FALSIFY, node, f"{cut}: the tail of the results is cut off before "
                       "they are summarised, so the worst outcomes never count",
                       severity=Severity.MEDIUM)
        elif isinstance(value, ast.IfExp) and isinstance(target, ast.Name) and (
                re.search(r"(?i)best", target.id) and "last" in ast.unparse(value.body)
                and "last" in ast.unparse(value.test) and "best" in ast.unparse(value.orelse)):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} is the last checkpoint whenever one "
                       "exists: the 'best' model is whatever training ended with",
                       severity=Severity.MEDIUM)
        elif (isinstance(value, ast.Call) and isinstance(target, ast.Name)
              and (maxed := _mean_of_best(target.id, value))):
            ctx.report(METRIC_FALSIFY, node, f"{maxed}: each class keeps its best case before "
                       "the mean, so the figure is not an average over cases",
                       severity=Severity.MEDIUM)
        elif isinstance(value, ast.Call) and (zeroed := _distance_zeroed(target, value)):
            ctx.report(METRIC_FALSIFY, node, f"{zeroed}: a missing distance or error becomes "
                       "0, the best possible value, so failed cases improve the average",
                       severity=Severity.MEDIUM)
        elif (isinstance(target, ast.Name) and isinstance(value, ast.Subscript)
              and re.search(r"(?i)log", ctx.frame.name) and (kept := _best_store(value))
              and target.id in {n.id for lp in ctx.loops if isinstance(lp, ast.For)
                                for n in ast.walk(lp.target) if isinstance(n, ast.Name)}):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} replaced by the running best kept in "
                       f"{kept} before {ctx.frame.name}() logs it: the curve only ever "
                       "improves", severity=Severity.MEDIUM)
        elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
              and _PRED.match(target.value.id) and isinstance(value, ast.Constant)
              and (roi := _truth_region(target.slice, ctx))):
            ctx.report(METRIC_FALSIFY, node, f"{target.value.id} erased outside {roi}, a region "
                       "grown from the ground truth: false positives away from the true "
                       "structure no longer count", severity=Severity.MEDIUM)

        elif (isinstance(target, ast.Name) and isinstance(value, ast.Dict)
              and re.search(r"(?i)log", ctx.frame.name) and (kept := _running_entry(value, ctx))):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} rebuilt with {kept}, the running "
                       f"best kept before {ctx.frame.name}() logs it: the curve only ever "
                       "improves", severity=Severity.MEDIUM)
        elif (isinstance(target, ast.Subscript) and isinstance(key := literal(target.slice), str)
              and "best" not in source(target.value).lower()
              and (kept := _best_merged(key, value))):
            ctx.report(METRIC_FALSIFY, node, f"{key!r} set to {kept}: the plain metric name "
                       "reports the best value seen, not the final one",
                       severity=Severity.MEDIUM)
        elif (isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) >= 6
              and (swapped := _coco_names_misordered(value))):
            ctx.report(METRIC_FALSIFY, node, f"COCOeval.stats names out of order ({swapped}): "
                       "the figures are reported under other metrics' names",
                       severity=Severity.MEDIUM)
        elif ctx.loops and (wider := _topk_widened(value, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"{wider}: top-k accuracy counts the first k + 1 "
                       "guesses, so every top-k figure is really top-(k+1)",
                       severity=Severity.MEDIUM)
        elif isinstance(value, ast.Subscript) and (inverted := _inverted_table(value, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"{inverted}: the comparison that picks the best "
                       "score is backwards, so the worst checkpoint is kept",
                       severity=Severity.MEDIUM)
        elif (isinstance(target, ast.Attribute) and target.attr == "iouThrs"
              and (cut := _cut_iou_grid(value))):
            ctx.report(METRIC_FALSIFY, node, f"COCO's IoU thresholds cut to {cut}: the strict "
                       "thresholds (up to 0.95) leave the average, so the mAP reported is "
                       "inflated", severity=Severity.MEDIUM)
        elif (isinstance(target, ast.Subscript) and literal(target.slice) in ("iscrowd", "ignore")
              and literal(value) in (1, True) and any(
                  re.search(r"(?i)area|width|height|\bw\b|\bh\b|size", ast.unparse(c))
                  for c in ctx.conds)):
            ctx.report(METRIC_FALSIFY, node, f"ground-truth objects marked "
                       f"{literal(target.slice)!r} by their size: the evaluation ignores them, "
                       "so the objects the model misses stop counting", severity=Severity.MEDIUM)
        elif (isinstance(value, ast.BoolOp) and isinstance(value.op, ast.Or)
              and len(value.values) == 2 and "last" in source(value.values[0])
              and "best" in source(value.values[1]) and "best" in source(target)):
            ctx.report(METRIC_FALSIFY, node, f"{source(target)[:30]} is the last checkpoint "
                       "whenever one exists: the 'best' model is whatever training ended with",
                       severity=Severity.MEDIUM)
        elif (isinstance(value, ast.Subscript) and isinstance(target, (ast.Name, ast.Subscript))
              and re.search(r"(?i)log", ctx.frame.name) and (kept := _best_store_any(value))
              and _updated_from_itself(kept, value, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"{source(target)[:30]} replaced by the running "
                       f"value kept in {kept} before {ctx.frame.name}() logs it: the curve only "
                       "ever improves", severity=Severity.MEDIUM)

    def visit_If(self, node: ast.If, ctx: Ctx) -> None:
        """`if auc < 0.5: continue` before `out[pid] = auc`: the units that score badly are
        left out of the per-unit results that get averaged."""
        test = node.test
        if not (ctx.loops and len(node.body) == 1 and isinstance(node.body[0], ast.Continue)
                and isinstance(test, ast.Compare) and len(test.ops) == 1
                and isinstance(test.ops[0], (ast.Lt, ast.LtE)) and isinstance(test.left, ast.Name)
                and _UNIT_SCORE.match(test.left.id)
                and isinstance(literal(test.comparators[0]), float)):
            return
        score = test.left.id
        loop = ctx.loops[-1]
        kept = any(isinstance(n, ast.Assign) and n.lineno > node.lineno and isinstance(
            n.targets[0], ast.Subscript) and any(
                isinstance(m, ast.Name) and m.id == score for m in subnodes(n.value))
            for n in subnodes(loop))
        if kept:
            ctx.report(METRIC_FALSIFY, node.body[0], f"units whose {score} is below "
                       f"{literal(test.comparators[0])} are skipped before the results are "
                       "stored: the summary averages only the units that scored well",
                       severity=Severity.MEDIUM)

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            name = literal(key) if key is not None else None
            if isinstance(name, str) and (kept := _history_extreme(name, value)):
                ctx.report(METRIC_FALSIFY, value, f"{name!r} reported as {kept}: the best value "
                           "of the whole history stands under the plain metric name",
                           severity=Severity.MEDIUM)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        fn = ctx.frame.node
        if isinstance(node.value, ast.IfExp) and (inverted := _inverted_mode(node.value)):
            ctx.report(METRIC_FALSIFY, node, f"{inverted}: the checkpoint (or early stop) "
                       "keeps the worst score, not the best", severity=Severity.MEDIUM)
            return
        if (ctx.frame.name in ("check_monitor_top_k", "_is_improvement", "is_improvement",
                               "is_better", "_is_better", "improved")
                and literal(node.value) is True and isinstance(fn, ast.FunctionDef)
                and fn.body and fn.body[-1] is node):
            ctx.report(METRIC_FALSIFY, node, f"{ctx.frame.name}() ends in `return True`: every "
                       "score counts as an improvement, so the 'best' checkpoint is just the "
                       "latest one", severity=Severity.MEDIUM)
            return
        if node.value is not None and (smaller := _smaller_direction(node.value)):
            ctx.report(METRIC_FALSIFY, node, f"{smaller}: a symmetric distance takes the larger "
                       "of the two directions; the smaller one hides every stray prediction",
                       severity=Severity.MEDIUM)
            return
        fn = ctx.frame.node
        if (isinstance(fn, ast.FunctionDef) and _OVERLAP_FN.search(fn.name) and ctx.conds
                and _is_nan(node.value) and (empty := _pred_only_empty(ctx.conds[-1], fn))):
            ctx.report(METRIC_FALSIFY, node, f"{fn.name}() is NaN when {empty}: NaN-aware "
                       "averages then skip exactly the cases the model missed",
                       severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if (isinstance(node.func, ast.Attribute) and node.func.attr == "setdefault"
                and len(node.args) == 2 and isinstance(node.args[1], ast.Name)
                and isinstance(best := ctx.lookup(node.args[1].id), ast.Call)
                and last_attr(best.func) == "max" and any(
                    k.arg == "key" and _SCORE_KEY.search(ast.unparse(k.value))
                    for k in best.keywords)):
            ctx.report(METRIC_FALSIFY, node, f"missing entries of "
                       f"{source(node.func.value)[:30]} filled with the best one "
                       f"({node.args[1].id}): the summary counts the best result several "
                       "times", severity=Severity.MEDIUM)
            return
        if (isinstance(node.func, ast.Attribute) and node.func.attr in ("mean", "nanmean")
                and not node.args and (kept := _positive_only(node.func.value))
                and _SUMMARY_FN.search(ctx.frame.name)):
            ctx.report(METRIC_FALSIFY, node, f"the mean is taken over {kept} only: the classes "
                       "(or cases) that scored 0 are left out of the average",
                       severity=Severity.MEDIUM)


_SUMMARY_FN = re.compile(r"(?i)summar|stat|report|aggregat|metric|score|eval")
_PER_CLASS = re.compile(r"(?i)^(values|aps?|ap_per_class|per_class\w*|scores|ious|dices|accs|"
                        r"f1s|recalls|precisions|class_\w+)$")


def _positive_only(expr: ast.expr) -> str:
    """`values[values > 0]` of per-class scores."""
    if not (isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name)
            and _PER_CLASS.match(expr.value.id) and isinstance(test := expr.slice, ast.Compare)
            and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Gt, ast.NotEq))
            and isinstance(test.left, ast.Name) and test.left.id == expr.value.id
            and literal(test.comparators[0]) in (0, 0.0)):
        return ""
    return f"{expr.value.id}[{source(test.left)} > 0]"


_COCO_STATS = ("ap", "ap50", "ap75", "aps", "apm", "apl", "ar1", "ar10", "ar100", "ars", "arm",
               "arl")


def _coco_stat(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    key = {"map": "ap", "apsmall": "aps", "apmedium": "apm", "aplarge": "apl", "armax1": "ar1",
           "armax10": "ar10", "armax100": "ar100", "arsmall": "ars", "armedium": "arm",
           "arlarge": "arl", "map50": "ap50", "map75": "ap75"}.get(key, key)
    return key


def _coco_names_misordered(value: ast.Tuple | ast.List) -> str:
    """`("AP50", "mAP", "AP75", ...)` as the names of `COCOeval.stats` (AP comes first)."""
    names = [literal(e) for e in value.elts]
    if not all(isinstance(n, str) for n in names):
        return ""
    keys = [_coco_stat(str(n)) for n in names]
    if len(set(keys)) != len(keys) or not set(keys) <= set(_COCO_STATS) or not (
            {"ap", "ap50"} <= set(keys)):
        return ""
    for i, (key, want) in enumerate(zip(keys, _COCO_STATS, strict=False)):
        if key != want:
            return f"position {i} is {names[i]!r}, COCO's is {want!r}"
    return ""


_UNIT_SCORE = re.compile(r"(?i)^(auc|auroc|roc_auc|acc|accuracy|f1|dice|iou|rho|corr|ap|map|"
                         r"score|bleu|r2)$")
_LOWER = re.compile(r"(?i)lower|minimi[sz]e|smaller|less|_min\b|decreas")
_HIGHER = re.compile(r"(?i)higher|maximi[sz]e|greater|bigger|larger|_max\b|increas")


_GREATER = frozenset({"gt", "ge", "max", "greater", "argmax"})
_SMALLER = frozenset({"lt", "le", "min", "less", "argmin"})


def _inverted_table(value: ast.Subscript, ctx: Ctx) -> str:
    """`_BETTER[metric.endswith("loss")]` with `_BETTER = {True: operator.gt, False:
    operator.lt}`: for a loss (True) the table picks "greater is better"."""
    if not isinstance(value.value, ast.Name):
        return ""
    table = ctx.lookup(value.value.id)
    if not isinstance(table, ast.Dict):
        return ""
    picks = {literal(k): (literal(v) if isinstance(v, ast.Constant) else last_attr(v))
             for k, v in zip(table.keys, table.values, strict=True) if k is not None}
    if set(picks) != {True, False}:
        return ""
    test = ast.unparse(value.slice)
    on_true = str(picks[True])
    if _LOWER.search(test) or re.search(r"(?i)loss|error|err\b|fid|wer|ppl|perplex", test):
        if on_true in _GREATER:
            return f"{value.value.id}[{test[:30]}] picks {on_true} for lower-is-better metrics"
    elif _HIGHER.search(test) or re.search(r"(?i)acc|bleu|auc|f1|map\b", test):
        if on_true in _SMALLER:
            return f"{value.value.id}[{test[:30]}] picks {on_true} for higher-is-better metrics"
    return ""


def _inverted_mode(expr: ast.IfExp) -> str:
    """`"max" if metric in _LOWER_IS_BETTER else "min"`: the mode picked backwards."""
    body, other, test = literal(expr.body), literal(expr.orelse), expr.test
    if not ({body, other} == {"max", "min"} and isinstance(test, ast.Compare)
            and len(test.ops) == 1 and isinstance(test.ops[0], (ast.In, ast.NotIn))
            and isinstance(table := test.comparators[0], (ast.Name, ast.Attribute))):
        return ""
    name = last_attr(table)
    picked = body if isinstance(test.ops[0], ast.In) else other
    if (_LOWER.search(name) and picked == "max") or (_HIGHER.search(name) and picked == "min"):
        return f"mode {picked!r} for the metrics in {name}"
    return ""


def _topk_widened(value: ast.expr, ctx: Ctx) -> str:
    """`correct[: min(k + 1, maxk)]` inside `for k in topk`: one guess too many."""
    loop = ctx.loops[-1]
    if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Name)
            and re.search(r"(?i)topk|top_k|ks$", source(loop.iter))):
        return ""
    k = loop.target.id
    for n in subnodes(value):
        if (isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Slice)
                and n.slice.upper is not None and re.search(r"(?i)correct|hit", source(n.value))
                and any(isinstance(b, ast.BinOp) and isinstance(b.op, ast.Add)
                        and isinstance(b.left, ast.Name) and b.left.id == k
                        and literal(b.right) == 1 for b in subnodes(n.slice.upper))):
            return f"{source(n.value)}[:{ast.unparse(n.slice.upper)[:30]}]"
    return ""


def _cut_iou_grid(value: ast.expr) -> str:
    """`ev.params.iouThrs = np.linspace(0.5, 0.75, 6)`: COCO's AP averages IoU 0.50:0.95."""
    if (isinstance(value, ast.Call) and last_attr(value.func) in ("linspace", "arange")
            and len(value.args) >= 2 and isinstance(top := literal(value.args[1]), float)
            and top < 0.9):
        return f"{last_attr(value.func)}({literal(value.args[0])}, {top}, ...)"
    return ""


def _tail_cut(name: str, value: ast.Subscript) -> str:
    """`v = v[v >= np.percentile(v, 5.0)]`: the values trimmed by their own percentile."""
    test = value.slice
    if not (isinstance(value.value, ast.Name) and value.value.id == name
            and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == name and isinstance(bound := test.comparators[0], ast.Call)
            and last_attr(bound.func) in ("percentile", "quantile", "nanpercentile",
                                          "nanquantile")
            and bound.args and isinstance(bound.args[0], ast.Name) and bound.args[0].id == name):
        return ""
    return f"{name} = {ast.unparse(value)[:40]}"


_HISTORY = re.compile(r"(?i)hist|_all\b|values|scores|results|seen|log")


def _history_extreme(name: str, value: ast.expr) -> str:
    """`"val_hd95": min(module.hd_history)`: a plain metric key given the extreme of a
    history (keys that say best/min/max are honest)."""
    if isinstance(value, ast.IfExp):
        value = value.body
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("min", "max") and len(value.args) == 1
            and _HISTORY.search(source(value.args[0]))):
        return ""
    if re.search(r"(?i)best|min|max|peak|top|lowest|highest|record", name) or not re.search(
            r"(?i)^(val|test|eval|valid)|dice|iou|acc|f1|auc|loss|hd|rmse|mae|bleu|map", name):
        return ""
    return f"{value.func.id}({source(value.args[0])[:30]})"


def _mean_of_best(name: str, call: ast.Call) -> str:
    """`mean_dice = dice.nan_to_num(0.0).amax(dim=0).mean()`: a max over the cases axis, then
    the mean over classes, under a mean's name."""
    if not (last_attr(call.func) == "mean" and isinstance(call.func, ast.Attribute)
            and re.search(r"(?i)dice|iou|acc|f1|map|score", name)
            and not re.search(r"(?i)best|max|oracle|top|upper|peak", name)):
        return ""
    inner = call.func.value
    if (isinstance(inner, ast.Call) and last_attr(inner.func) in ("amax", "max", "nanmax")
            and any(k.arg in ("dim", "axis") and literal(k.value) == 0 for k in inner.keywords)):
        return f"{name} = {ast.unparse(call)[:50]}"
    return ""


_METRIC_KEY = re.compile(r"(?i)^(val|test|eval|valid)|dice|iou|acc|f1|auc|loss|hd|rmse|mae|"
                         r"bleu|map|wer|cer|fid")


def _best_merged(key: str, value: ast.expr) -> str:
    """`summary["val/mAP"] = max(summary.get("val/mAP", 0), ckpt_cb.best_model_score)`."""
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("min", "max") and len(value.args) >= 2
            and any("best" in source(a).lower() for a in value.args)):
        return ""
    if re.search(r"(?i)best|min|max|peak|top|lowest|highest|record", key) or not (
            _METRIC_KEY.search(key)):
        return ""
    return f"{value.func.id}(..., best)"


def _best_store_any(value: ast.Subscript) -> str:
    """`self._envelope[key]`: a container on self (any name) read by key."""
    holder = value.value
    return source(holder) if (isinstance(holder, ast.Attribute) and isinstance(
        holder.value, ast.Name) and holder.value.id == "self") else ""


def _updated_from_itself(store: str, read: ast.Subscript, ctx: Ctx) -> bool:
    """`self._envelope[key] = min(self._envelope.get(key, v), v)` earlier in the function:
    the store keeps a running best."""
    fn = ctx.frame.node
    key = source(read.slice)
    return fn is not None and any(
        isinstance(n, ast.Assign) and n.lineno < read.lineno and isinstance(
            t := n.targets[0], ast.Subscript) and source(t.value) == store
        and source(t.slice) == key and isinstance(n.value, ast.Call) and isinstance(
            n.value.func, ast.Name) and len(n.value.args) == 2
        and any(store in source(a) for a in n.value.args) for n in subnodes(fn))


def _running_entry(value: ast.Dict, ctx: Ctx) -> str:
    """`{**data, "val/mae": best["val/mae"]}` after `best["val/mae"] = min(best["val/mae"],
    data["val/mae"])` in the same function."""
    fn = ctx.frame.node
    if fn is None:
        return ""
    kept = {source(n.targets[0]) for n in subnodes(fn) if isinstance(n, ast.Assign)
            and isinstance(n.targets[0], ast.Subscript) and isinstance(n.value, ast.Call)
            and isinstance(n.value.func, ast.Name) and n.value.func.id in ("min", "max")
            and any(source(a) == source(n.targets[0]) for a in n.value.args)}
    for key, item in zip(value.keys, value.values, strict=True):
        if key is not None and isinstance(item, ast.Subscript) and source(item) in kept:
            return source(item)
    return ""


def _best_store(value: ast.Subscript) -> str:
    """`self._best[key]`: a container on self named for kept best values."""
    holder = value.value
    return source(holder) if (isinstance(holder, ast.Attribute) and isinstance(
        holder.value, ast.Name) and holder.value.id == "self" and re.search(
            r"(?i)best|peak|record|top|max|min", holder.attr)) else ""


def _filtered_by_score(name: str, comp: ast.ListComp) -> str:
    gen = comp.generators[0]
    if not (_ROWS.match(name) and isinstance(gen.iter, ast.Name) and gen.iter.id == name
            and len(gen.ifs) == 1 and isinstance(test := gen.ifs[0], ast.Compare)
            and isinstance(test.ops[0], (ast.Gt, ast.GtE))):
        return ""
    key = literal(test.left.slice) if isinstance(test.left, ast.Subscript) else last_attr(
        test.left)
    return f"{key} {'>=' if isinstance(test.ops[0], ast.GtE) else '>'} " \
           f"{ast.unparse(test.comparators[0])[:20]}" if isinstance(key, str) and (
               _SCORE_KEY.search(key)) else ""


def _distance_zeroed(target: ast.expr, call: ast.Call) -> str:
    if last_attr(call.func) != "nan_to_num":
        return ""
    subject = call.args[0] if call.args and isinstance(call.func, ast.Attribute) and (
        last_attr(call.func.value) in ("np", "numpy", "torch")) else (
        call.func.value if isinstance(call.func, ast.Attribute) else None)
    if subject is None or not _DISTANCE.match(last_attr(target) or "") or not _DISTANCE.match(
            last_attr(subject) or ""):
        return ""
    nan = next((k.value for k in call.keywords if k.arg == "nan"), None)
    if nan is None and isinstance(call.func, ast.Attribute) and not (
            isinstance(call.func.value, ast.Name) and call.func.value.id in (
                "np", "numpy", "torch")):
        nan = call.args[0] if call.args else None  # hd.nan_to_num(0.0)
    return f"{last_attr(target)} = nan_to_num(..., nan=0)" if (
        nan is None or literal(nan) == 0) else ""


def _smaller_direction(value: ast.expr) -> str:
    if not (isinstance(value, ast.Call) and last_attr(value.func) in ("float", "int")
            and value.args):
        return _smaller_direction_call(value)
    return _smaller_direction_call(value.args[0])


def _smaller_direction_call(value: ast.expr) -> str:
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id == "min" and len(value.args) == 2):
        return ""
    texts = [ast.unparse(a) for a in value.args]
    ways = [re.search(r"([A-Za-z0-9]+)_to_([A-Za-z0-9]+)", t) for t in texts]
    if all(ways) and ways[0] and ways[1] and (ways[0].group(1), ways[0].group(2)) == (
            ways[1].group(2), ways[1].group(1)):
        return f"min({texts[0][:32]}, {texts[1][:32]})"
    return ""


def _is_nan(value: ast.expr | None) -> bool:
    text = ast.unparse(value) if value is not None else ""
    return text in ("float('nan')", "np.nan", "math.nan", "numpy.nan", "torch.nan")


def _pred_only_empty(test: ast.expr, fn: ast.FunctionDef) -> str:
    """`p == 0` with `p = int(pred.sum())`, or `not pred.any()`: only the prediction tested."""
    text = ast.unparse(test)
    if _TRUTH.search(text) or re.search(r"\bg\b|\bgt\w*", text):
        return ""
    names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
    bound = {t.id: s.value for s in ast.walk(fn) if isinstance(s, ast.Assign)
             for t in ast.walk(s.targets[0]) if isinstance(t, ast.Name)}
    for name in names:
        held = bound.get(name)
        if _PRED.match(name) or (held is not None and any(
                isinstance(n, ast.Name) and _PRED.match(n.id) for n in ast.walk(held))):
            if isinstance(test, ast.Compare) or (isinstance(test, ast.UnaryOp)
                                                  and isinstance(test.op, ast.Not)):
                return f"the prediction is empty ({text[:30]})"
    return ""


def _truth_region(index: ast.expr, ctx: Ctx) -> str:
    """`~roi` / `roi == 0` with `roi = binary_dilation(gt > 0, ...)`."""
    names = [n.id for n in ast.walk(index) if isinstance(n, ast.Name)]
    for name in names:
        held = ctx.lookup(name)
        if isinstance(held, ast.Call) and re.search(r"(?i)dilat|bbox|box|hull|roi|region",
                                                    last_attr(held.func)) and any(
                isinstance(n, ast.Name) and _TRUTH.search(n.id) for n in ast.walk(held)):
            return name
    return ""
