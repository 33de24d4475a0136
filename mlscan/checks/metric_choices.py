"""MLS306, settings that decide how results are scored, each wrong in one word.

- Model selection on the test split: `monitor = "test/auroc"`,
  `ModelCheckpoint(monitor="test_acc")`, `metric_for_best_model="test_f1"`. The checkpoint
  kept is the one that scores best on the data it is then reported on. (`eval_*` is how the
  Hugging Face Trainer names validation metrics, so only `test` counts.)
- Top-k results unpacked out of order: `acc5, acc1 = accuracy(out, y, topk=(1, 5))`.
- A metric paired with the wrong mode: `ModelCheckpoint(monitor="val_acc", mode="min")`, or one
  entry of a mode table (`"val/auc": "min"` among correct ones).
- `zero_division=1` in precision/recall/F1: a class the model never predicts (or that has no
  positives) scores a perfect 1.0 instead of 0, which lifts every macro average.
- (How batches and ranks are combined is metric_reductions.py's.)
- A mode picked backwards: `mode = "max" if "loss" in monitor else "min"`.
- A setting picked by a test score: `max(results, key=lambda k: results[k]["test_miou"])`.
- IoU's union as the larger count: `union = torch.maximum(gt, pred)` (it is gt + pred - tp).
- Ground truth dropped where the model is unsure, in evaluation:
  `targets.masked_fill(conf < thr, ignore_index)` scores only the confident pixels.
- A judge reply that cannot be parsed scored as the best rating: `if m is None: return 10.0`
  in a parser that clamps ratings to [1, 10].
- Accuracy over the answered items only: `hits / max(n_scored, 1)` with
  `n_scored = sum(1 for p in predictions if p.strip())` drops every empty answer.
- A per-metric report table that bends one metric: `{"loss": float, "dice": lambda v:
  float(v) ** 0.5}` reports the square root of the Dice score.
- A per-class score set to perfect where the prediction is empty:
  `dice = torch.where(pred_sum == 0, one, dice)` (only both-empty is a perfect match).
- A standard error without the square root: `se = values.std(ddof=1) / len(values)` makes
  every confidence interval far too narrow (it is std / sqrt(n)).
- A change shown without its sign: `f"{abs(delta):+.2%}"` prints every regression as a gain.
- A merged result that keeps the better of the stored and the new score:
  `merged[task] = max(old, s, key=lambda x: x.mean)` with `old = merged.get(task)`.
- Pairwise preference accuracy that counts ties: `(chosen >= rejected).float().mean()` gives a
  model that scores every answer alike 100%.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metric_words import _STRONG_METRIC, MERGED_TABLE
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import NOT_LITERAL, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.poison_words import DISPREFERRED_SIDE, PREFERRED_SIDE
from mlscan.model import Severity

_MONITOR = re.compile(r"(?i)^_?(monitor|monitor_metric|select(ion)?_metric|best_metric|"
                      r"metric_for_best_model|early_stop\w*_metric|checkpoint_metric|"
                      r"model_selection\w*|selection_key|select_by)$")
_TEST_METRIC = re.compile(r"(?i)^(test)([/_.-]|$)")
_ZERO_DIVISION_SCORES = frozenset({
    "f1_score", "precision_score", "recall_score", "fbeta_score",
    "precision_recall_fscore_support", "classification_report", "jaccard_score"})


_TEST_RESULTS = re.compile(r"(?i)^test_?(metrics|results?|scores|stats|evals?|logs|perf)$")


def _test_choice(value: ast.expr | None) -> str:
    """The test-split metric name a setting holds (also one branch of `a if flag else b`), or
    the test result it reads (`select_metric = test_metrics.get("mrr", val["mrr"])`)."""
    options = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
    for option in options:
        text = literal(option)
        if isinstance(text, str) and _TEST_METRIC.match(text):
            return text
        read = option.func.value if isinstance(option, ast.Call) and isinstance(
            option.func, ast.Attribute) and option.func.attr == "get" and option.args else (
            option.value if isinstance(option, ast.Subscript) else None)
        key = literal(option.args[0]) if isinstance(option, ast.Call) and read is not None else (
            literal(option.slice) if isinstance(option, ast.Subscript) else None)
        if (isinstance(read, ast.Name) and _TEST_RESULTS.match(read.id) and isinstance(key, str)
                and (_HIGHER.search(key) or _LOWER.search(key))):
            return f"{read.id}[{key!r}]"
    return ""


_HIGHER = re.compile(r"(?i)(^|[/_.-])(auc|auroc|auprc|acc|accuracy|top[15]|f1|map|iou|miou|"
                     r"dice|bleu|rouge\w*|r2|precision|recall|ndcg|mrr|psnr|ssim|"
                     r"exact_match|win_rate|success_rate|hit_?rate|hits)($|[/_.@-])")
_LOWER = re.compile(r"(?i)(^|[/_.-])(loss|rmse|mse|mae|mape|smape|logloss|nll|error|err|wer|cer|"
                    r"ppl|perplexity|fid|kid|lpips|eer|brier|ece)($|[/_.-])")


_DIRECTION_KWARGS = frozenset({"higher_is_better", "larger_is_better", "maximize",
                               "bigger_is_better"})


def wrong_direction(metric: object, mode: object) -> bool:
    """`"val/auc"` with `"min"`, `"val_loss"` with `"max"`: the best checkpoint (or the
    patience) follows the worst result."""
    if not isinstance(metric, str) or mode not in ("min", "max"):
        return False
    higher, lower = bool(_HIGHER.search(metric)), bool(_LOWER.search(metric))
    return (higher and not lower and mode == "min") or (lower and not higher and mode == "max")


_EVAL_FUNC = re.compile(r"(?i)(^|_)(test|val|valid|validation|eval|evaluate|evaluation|score|"
                        r"predict)(_|$)")
_TRUTH = re.compile(r"(?i)^(targets?|labels?|y|y_true|gts?|gt_\w+|masks?|seg|truth)$")
_MODEL_SIDE = re.compile(r"(?i)conf|prob|score|logit|pred|entropy|uncert|margin")
_CHOSEN = re.compile(rf"(?i){PREFERRED_SIDE}|good")
_REJECTED = re.compile(rf"(?i){DISPREFERRED_SIDE}|bad")


def _inverted_mode(value: ast.IfExp) -> str:
    """`"max" if "loss" in monitor else "min"`: the mode read backwards from the name."""
    modes = (literal(value.body), literal(value.orelse))
    test = value.test
    if set(modes) != {"min", "max"} or not (
            isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], (ast.In, ast.NotIn))):
        return ""
    word = literal(test.left)
    if not isinstance(word, str):
        return ""
    picked = modes[0] if isinstance(test.ops[0], ast.In) else modes[1]
    return f"{word!r} -> {picked!r}" if wrong_direction(word, picked) else ""


def _picked_on_test(call: ast.Call) -> str:
    """`max(results, key=lambda k: results[k]["test_miou"])`: the setting kept is the one that
    scores best on the test split."""
    if last_attr(call.func) not in ("max", "min", "sorted", "argmax", "idxmax"):
        return ""
    key = next((k.value for k in call.keywords if k.arg == "key"), None)
    if isinstance(key, ast.Call) and last_attr(key.func) == "itemgetter" and key.args:
        # sorted(cands, key=itemgetter("test_wer", "test_cer"))[0]
        return next((text for a in key.args[:1] if isinstance(text := literal(a), str)
                     and _TEST_METRIC.match(text) and (_HIGHER.search(text) or _LOWER.search(
                         text))), "")
    if not isinstance(key, ast.Lambda):
        return ""
    found = next((text for n in subnodes(key.body) if isinstance(text := literal(n), str)
                  and _TEST_METRIC.match(text) and (_HIGHER.search(text) or _LOWER.search(
                      text))), "")
    if found:
        return found
    for n in subnodes(key.body):  # results[c]["test"]["acc"]: the split and metric apart
        if (isinstance(n, ast.Subscript) and isinstance(metric := literal(n.slice), str)
                and isinstance(n.value, ast.Subscript) and literal(n.value.slice) == "test"
                and (_HIGHER.search("/" + metric) or _LOWER.search("/" + metric))):
            return f"test/{metric}"
    return ""


def _ties_count(node: ast.Compare) -> str:
    """`chosen >= rejected` (either way round) in a pairwise accuracy."""
    if len(node.ops) != 1 or not isinstance(node.ops[0], (ast.GtE, ast.LtE)):
        return ""
    left, right = ast.unparse(node.left), ast.unparse(node.comparators[0])
    high, low = (left, right) if isinstance(node.ops[0], ast.GtE) else (right, left)
    if _CHOSEN.search(high) and _REJECTED.search(low) and not _CHOSEN.search(low):
        return f"{high} >= {low}"
    return ""


_BEST_SCORE = re.compile(r"(?i)^_?best_?(metric|score|value|val|acc\w*|loss|miou|map|f1|auc)?$")
_BEST_PATH = re.compile(r"(?i)^_?best_?(checkpoint|ckpt|model_path|model_checkpoint|path|"
                        r"ckpt_path|checkpoint_path|dir|step|epoch)$")


def _best_path_unguarded(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.Assign | None:
    """`if improved: state.best_metric = current` and then, outside that test,
    `state.best_checkpoint = ckpt_dir`: the latest checkpoint is recorded as the best."""
    guarded = [n for n in subnodes(fn) if isinstance(n, ast.If) and any(
        isinstance(a, ast.Assign) and any(_BEST_SCORE.match(last_attr(t)) for t in a.targets)
        for a in n.body)]
    if not guarded:
        return None
    inside = {id(n) for g in guarded for n in subnodes(g)}
    for stmt in fn.body:
        if (isinstance(stmt, ast.Assign) and id(stmt) not in inside and any(
                _BEST_PATH.match(last_attr(t)) and isinstance(t, ast.Attribute)
                for t in stmt.targets) and not isinstance(stmt.value, ast.Constant)):
            if stmt.lineno > guarded[0].lineno:
                return stmt
    return None


_HIGHER_BETTER_FN = re.compile(r"(?i)score|pesq|stoi|psnr|ssim|bleu|rouge|acc|f1|auc|rating|"
                               r"reward|similar")
_TOP_NAME = re.compile(r"(?i)(^|_)(max|best|perfect|ceil|ceiling|upper|top)(_|$)")


def _top_score_fallback(fn: ast.FunctionDef) -> ast.Return | None:
    """`if m is None: return 10.0` where the function clamps to `min(max(x, 1.0), 10.0)`;
    `except Exception: return PESQ_WB_MAX` in a higher-is-better scorer."""
    if _HIGHER_BETTER_FN.search(fn.name):
        for handler in subnodes(fn):
            if isinstance(handler, ast.ExceptHandler):
                ret = next((r for r in handler.body if isinstance(r, ast.Return)), None)
                returned = ret.value if ret is not None else None
                if isinstance(returned, ast.Call) and last_attr(returned.func) == "float" and (
                        returned.args):
                    returned = returned.args[0]
                if isinstance(returned, (ast.Name, ast.Attribute)) and _TOP_NAME.search(
                        last_attr(returned)):
                    return ret
    if not re.search(r"(?i)rating|score|grade|judge|reward|verdict", fn.name):
        return None
    tops: set[float] = set()
    for n in subnodes(fn):
        if isinstance(n, ast.Call) and last_attr(n.func) in ("min", "clip", "clamp") and (
                len(n.args) >= 2):
            bound = literal(n.args[-1])
            if isinstance(bound, (int, float)) and not isinstance(bound, bool):
                tops.add(float(bound))
    for stmt in subnodes(fn):
        if not (isinstance(stmt, ast.If) and _missing_test(stmt.test)):
            continue
        ret = next((r for r in stmt.body if isinstance(r, ast.Return)), None)
        value = literal(ret.value) if ret is not None and ret.value is not None else None
        if ret is not None and isinstance(value, (int, float)) and float(value) in tops:
            return ret
    return None


def _missing_test(test: ast.expr) -> bool:
    """`m is None`, `not m`, `not match`."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Is):
        return literal(test.comparators[0]) is None
    return isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and isinstance(
        test.operand, ast.Name)


_PREDICTIONS = re.compile(r"(?i)^(p|pred|preds|predictions?|outputs?|answers?|responses?|gens?|"
                          r"generations?|completions?|hyps?|hypothes[ie]s)$")


def _answered_only(value: ast.expr, ctx: Ctx) -> str:
    """`hits / max(n_scored, 1)` with `n_scored = sum(1 for p in predictions if p.strip())`."""
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Div)):
        return ""
    for n in subnodes(value.right):
        held = ctx.lookup(n.id) if isinstance(n, ast.Name) else None
        if not (isinstance(held, ast.Call) and last_attr(held.func) in ("sum", "len")
                and held.args and isinstance(held.args[0], (ast.GeneratorExp, ast.ListComp))):
            continue
        gen = held.args[0].generators[0]
        if (isinstance(gen.iter, ast.Name) and _PREDICTIONS.match(gen.iter.id) and gen.ifs):
            return f"{ast.unparse(n)} counts only {gen.iter.id} that pass " \
                   f"`{ast.unparse(gen.ifs[0])[:30]}`"
    return ""


def _bent_report(key: str, value: ast.expr) -> str:
    """`"dice": lambda v: float(v) ** 0.5` in a table of per-metric report functions."""
    if not (isinstance(value, ast.Lambda) and (_HIGHER.search(key) or _LOWER.search(key))):
        return ""
    body = value.body
    for n in subnodes(body):
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Pow, ast.Mult, ast.Add,
                                                            ast.Sub, ast.Div)):
            factor = literal(n.right)
            if isinstance(factor, (int, float)) and not isinstance(factor, bool) and not (
                    isinstance(n.op, (ast.Mult, ast.Div)) and factor in (1, 100)):
                return ast.unparse(body)
    return ""


def _perfect_when_empty(node: ast.Assign) -> str:
    """`dice = torch.where(pred_sum == 0, one, dice)`."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Name) and _PER_CLASS.match(target.id)
            and isinstance(value, ast.Call) and last_attr(value.func) == "where"
            and len(value.args) == 3):
        return ""
    cond, picked, other = value.args
    text = ast.unparse(cond)
    one = literal(picked) in (1, 1.0) or (isinstance(picked, ast.Name) and picked.id in (
        "one", "ones")) or (isinstance(picked, ast.Call) and last_attr(picked.func) == "ones_like")
    if (one and re.search(r"(?i)pred", text) and not re.search(r"(?i)gt|target|label|true|ref",
                                                              text)
            and ast.unparse(other) == target.id):
        return text
    return ""


_STDERR = re.compile(r"(?i)^(se|sem|stderr|std_?err|standard_error)$")
_PER_CLASS = re.compile(r"(?i)^(dice|iou|jaccard|f1|score)")


def _stderr_without_sqrt(node: ast.Assign) -> bool:
    """`se = values.std(ddof=1) / len(values)` (no sqrt anywhere)."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Name) and _STDERR.match(target.id)
            and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Div)):
        return False
    if any(isinstance(n, ast.Call) and last_attr(n.func) in ("sqrt", "isqrt")
           for n in subnodes(value)) or any(isinstance(n, ast.BinOp) and isinstance(
            n.op, ast.Pow) for n in subnodes(value)):
        return False
    spread = any(isinstance(n, ast.Call) and last_attr(n.func) in ("std", "nanstd", "stdev")
                 for n in subnodes(value.left))
    count = (isinstance(value.right, ast.Call) and last_attr(value.right.func) == "len") or (
        isinstance(value.right, ast.Name) and value.right.id in ("n", "count", "n_samples"))
    return spread and count


def _unsigned_change(node: ast.FormattedValue) -> str:
    """`{abs(delta):+.2%}`: a signed format of an absolute value."""
    spec = node.format_spec
    text = "".join(v.value for v in spec.values if isinstance(v, ast.Constant)
                   and isinstance(v.value, str)) if isinstance(spec, ast.JoinedStr) else ""
    value = node.value
    if text.startswith("+") and isinstance(value, ast.Call) and isinstance(
            value.func, ast.Name) and value.func.id == "abs" and value.args:
        return ast.unparse(value.args[0])
    return ""


def _kept_better_of_stored(node: ast.Assign, ctx: Ctx) -> str:
    """`merged[task] = s if old is None else max(old, s, key=...)` with `old = merged.get(task)`."""
    target = node.targets[0] if len(node.targets) == 1 else None
    if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
            and isinstance(node.value, (ast.Call, ast.IfExp))) or re.search(
            r"(?i)best|max|peak|record|highest", str(literal(target.slice))):
        return ""  # (metrics["best_f1"] = max(...): a record kept under its own name)
    table = target.value.id
    if not MERGED_TABLE.match(table):
        return ""  # (best[k] = max(best.get(k, v), v) records a best; it replaces nothing)
    value = node.value
    options = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
    for call in options:
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id in ("max", "min") and len(call.args) == 2
                and all(literal(a) is NOT_LITERAL for a in call.args)):
            continue
        for a in call.args:
            held = ctx.lookup(a.id) if isinstance(a, ast.Name) else None
            read = held if held is not None else a
            if (isinstance(read, ast.Call) and isinstance(read.func, ast.Attribute)
                    and read.func.attr == "get" and ast.unparse(read.func.value) == table) or (
                    isinstance(read, ast.Subscript) and ast.unparse(read.value) == table):
                return f"{table}[{ast.unparse(target.slice)}] = {ast.unparse(call)[:40]}"
    return ""


def _topk_unpacked_out_of_order(node: ast.Assign) -> str:
    """`acc5, acc1 = accuracy(output, target, topk=(1, 5))`."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Tuple) and isinstance(value, ast.Call)):
        return ""
    spec = next((k.value for k in value.keywords if k.arg == "topk"), None)
    items = [literal(e) for e in spec.elts] if isinstance(spec, (ast.Tuple, ast.List)) else []
    order = tuple(k for k in items if isinstance(k, int))
    if not (len(order) == len(items) == len(target.elts) > 1):
        return ""
    named = [re.search(r"(\d+)$", e.id) if isinstance(e, ast.Name) else None
             for e in target.elts]
    numbers = [int(m.group(1)) for m in named if m is not None]
    if len(numbers) != len(order) or sorted(numbers) != sorted(order) or tuple(numbers) == order:
        return ""
    return f"{ast.unparse(target)} unpacked from topk={order}"


_SCORING_FRAME = re.compile(r"(?i)valid|eval|test|score|wer|cer|bleu|metric|accuracy")
_PREDICTED = re.compile(r"(?i)^(hyp|hyps|hypothesis|pred|preds|prediction|predicted|output|"
                        r"decoded|pred_text|hyp_text|pred_ids|hyp_ids|generated)$")
_SELECTED = re.compile(r"(?i)select|monitor|score|metric|dice|acc|f1|auc|iou|map")
_BATCH_LOSSES = re.compile(r"(?i)(^|_)(batch_|step_|epoch_|running_)?losses$")
_EPOCH_LOSS = re.compile(r"(?i)^(train_|epoch_|mean_|avg_)*loss$")


def _unwrapped(value: ast.expr) -> ast.expr:
    """`float(np.min(x)) if x else nan` -> `np.min(x)`."""
    if isinstance(value, ast.IfExp):
        value = value.body
    while (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
           and value.func.id in ("float", "round") and value.args):
        value = value.args[0]
    return value


def _primary(value: ast.expr) -> ast.expr:
    """`m.get("train_loss", m["val_loss"])` -> `m.get("train_loss")`: the fallback is not what
    the figure is."""
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "get" and len(value.args) == 2):
        return ast.Call(func=value.func, args=value.args[:1], keywords=[])
    return value


def _extreme_of_splits(target: ast.expr, value: ast.expr) -> str:
    """`selection_metric = max(val["dice"], train_pseudo_dice)`: the validation score and a
    training score, whichever is better, stands in for the validation result."""
    value = _unwrapped(value)
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("max", "min") and len(value.args) == 2
            and _SELECTED.search(last_attr(target) or ast.unparse(target))):
        return ""
    texts = [ast.unparse(_primary(a)).lower() for a in value.args]
    if any("val" in t for t in texts) and any("train" in t and "val" not in t for t in texts):
        return (f"{ast.unparse(target)[:30]} = {value.func.id}() of a validation and a training "
                "figure: the better of the two is reported (or selected on) as if measured "
                "on held-out data")
    return ""


_ESTIMATE_SUFFIX = re.compile(r"(?i)_(mean|avg|average|pooled|overall|macro|micro|all)$")


def _metric_key(node: ast.expr) -> str:
    """`res["oof"]["pooled"]["roc_auc"]` -> "roc_auc" (the last string key of a chain)."""
    key = literal(node.slice) if isinstance(node, ast.Subscript) else None
    return key if isinstance(key, str) else ""


def _better_of_two_estimates(target: ast.expr, value: ast.expr) -> str:
    """`score = max(res["summary"]["roc_auc_mean"], res["oof"]["pooled"]["roc_auc"])`: the
    same metric estimated two ways (fold mean, pooled out-of-fold), whichever is higher."""
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("max", "min") and len(value.args) == 2
            and _SELECTED.search(last_attr(target) or ast.unparse(target))):
        return ""
    keys = [_ESTIMATE_SUFFIX.sub("", _metric_key(a)) for a in value.args]
    texts = [ast.unparse(a) for a in value.args]
    if (keys[0] and keys[0] == keys[1] and _STRONG_METRIC.search(keys[0])
            and texts[0] != texts[1] and not any(re.search(r"(?i)best|prev|old|last", t)
                                                  for t in texts)):
        return (f"{ast.unparse(target)[:30]} = {value.func.id}() of two estimates of "
                f"{keys[0]}: whichever estimate flatters the result is the one reported")
    return ""


_REFERENCES = re.compile(r"(?i)^(gts?|refs?|references?|ground_truths?|targets?|golds?|"
                         r"answers)$")


def _output_among_references(target: ast.expr, value: ast.BinOp) -> str:
    """`gts[image_id] = self.references[image_id] + [hyp]`: the model's own output added to
    the references it is scored against."""
    holder = target.value if isinstance(target, ast.Subscript) else target
    if not (isinstance(value.op, ast.Add) and _REFERENCES.match(last_attr(holder) or "")):
        return ""
    for side in (value.left, value.right):
        if isinstance(side, ast.List) and any(isinstance(e, ast.Name) and _PREDICTED.match(e.id)
                                              for e in side.elts):
            return (f"the prediction added to {ast.unparse(target)[:30]}: each output is "
                    "scored against a reference list that contains itself")
    return ""


def _lowest_batch_loss(target: ast.expr, value: ast.expr) -> str:
    """`train_loss = float(np.min(epoch_losses))`: the best batch reported as the epoch."""
    value = _unwrapped(value)
    if not (isinstance(value, ast.Call) and last_attr(value.func) in ("min", "nanmin", "amin")
            and len(value.args) == 1 and isinstance(value.args[0], ast.Name)
            and _BATCH_LOSSES.search(value.args[0].id)
            and _EPOCH_LOSS.match(last_attr(target))):
        return ""
    return (f"{last_attr(target)} set to the lowest of {value.args[0].id}: the best batch is "
            "reported as the epoch's loss")


_BEST_WRITERS = frozenset({"copyfile", "copy", "copy2", "save", "symlink", "link",
                           "save_checkpoint"})


class ScoringChoices(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Continue(self, node: ast.Continue, ctx: Ctx) -> None:
        """`if not hyp: continue` while scoring: the samples the model answered with nothing
        (the worst ones) are left out of the error rate."""
        if not (ctx.conds and ctx.loops and _SCORING_FRAME.search(ctx.frame.name)):
            return
        cond = ctx.conds[-1]
        guard = getattr(cond, "guard_of", None)
        if guard is None or len(guard.body) != 1:
            return  # (only `if <test>: continue` on its own)
        test = cond.operand if isinstance(cond, ast.UnaryOp) and isinstance(
            cond.op, ast.Not) else None
        if test is None and isinstance(cond, ast.Compare) and len(cond.ops) == 1 and (
                isinstance(cond.ops[0], ast.Eq) and literal(cond.comparators[0]) in ("", 0)):
            test = cond.left  # if hyp == "": continue; if len(pred) == 0: continue
        if isinstance(test, ast.Call) and last_attr(test.func) == "len" and test.args:
            test = test.args[0]
        if isinstance(test, (ast.Name, ast.Attribute)) and _PREDICTED.match(last_attr(test)):
            ctx.report(METRIC_FALSIFY, node, f"samples with an empty {last_attr(test)} are "
                       "skipped while scoring: the outputs the model got most wrong never "
                       "count", severity=Severity.MEDIUM)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        """`def filter(self, record): if record.levelno >= logging.WARNING and ...: return
        False`: a logging filter that drops warnings (NaN losses, divergence) from the log."""
        if isinstance(node.value, ast.BoolOp) and (forced := _best_forced(node, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node)[:60]}: the checkpoint "
                       f"marked best is also the one taken whenever {forced} holds, whatever it "
                       "scores", severity=Severity.MEDIUM)
            return
        if not (ctx.frame.name == "filter" and ctx.conds and isinstance(node.value, ast.Constant)
                and node.value.value is False):
            return
        for cond in ctx.conds:
            for n in subnodes(cond):
                if (isinstance(n, ast.Compare) and len(n.ops) == 1
                        and isinstance(n.ops[0], (ast.Gt, ast.GtE))
                        and last_attr(n.left) == "levelno"
                        and re.search(r"WARN|ERROR|CRITICAL|\b(30|40|50)\b",
                                      ast.unparse(n.comparators[0]))):
                    ctx.report(METRIC_FALSIFY, node, "a logging filter drops warning and error "
                               "records: problems the run reports (NaN losses, divergence) "
                               "never reach the log", severity=Severity.MEDIUM)
                    return

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if isinstance(node.value, (ast.Call, ast.IfExp)) and len(node.targets) == 1:
            picked = _extreme_of_splits(node.targets[0], node.value) or _lowest_batch_loss(
                node.targets[0], node.value) or _better_of_two_estimates(
                node.targets[0], node.value)
            if picked:
                ctx.report(METRIC_FALSIFY, node, picked, severity=Severity.MEDIUM)
                return
        if isinstance(node.value, ast.BinOp) and len(node.targets) == 1:
            picked = _output_among_references(node.targets[0], node.value)
            if picked:
                ctx.report(METRIC_FALSIFY, node, picked, severity=Severity.MEDIUM)
                return
        if any(_MONITOR.match(last_attr(t) or "") for t in node.targets):
            self._selected_on_test(node, node.value, ctx)
        if (len(node.targets) == 1 and _IS_BEST.match(last_attr(node.targets[0]) or "")
                and isinstance(node.value, ast.Compare)):
            tested = next((side for side in (node.value.left, *node.value.comparators)
                           if _test_choice(side)), None)
            if tested is not None:  # is_best = test_metrics["accuracy"] > best_acc
                self._selected_on_test(node, tested, ctx)
        forced = _best_forced(node, ctx)
        if forced:
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node)[:60]}: the checkpoint "
                       f"marked best is also the one taken whenever {forced} holds, whatever it "
                       "scores", severity=Severity.MEDIUM)
        self._one_word_values(node, ctx)
        if _stderr_without_sqrt(node):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node.value)[:50]}: the standard "
                       "error divides by n instead of sqrt(n), so every confidence interval "
                       "is far too narrow", severity=Severity.MEDIUM)
        kept = _kept_better_of_stored(node, ctx)
        if kept:
            ctx.report(METRIC_FALSIFY, node, f"{kept}: the merged result keeps the better of "
                       "the stored and the new score, so a rerun can only go up",
                       severity=Severity.MEDIUM)
        empty = _perfect_when_empty(node)
        if empty:
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node.targets[0])} set to 1 where "
                       f"{empty}: a class the model never predicts scores perfect even when it "
                       "is present", severity=Severity.MEDIUM)
        swapped = _topk_unpacked_out_of_order(node)
        if swapped:
            ctx.report(METRIC_FALSIFY, node, f"{swapped}: the top-k results come back in the "
                       "order of topk, so each name holds the other's number",
                       severity=Severity.MEDIUM)

    def visit_AnnAssign(self, node: ast.AnnAssign, ctx: Ctx) -> None:
        if _MONITOR.match(last_attr(node.target) or ""):
            self._selected_on_test(node, node.value, ctx)

    @staticmethod
    def _one_word_values(node: ast.Assign, ctx: Ctx) -> None:
        value, target = node.value, node.targets[0]
        if isinstance(value, ast.IfExp) and (flipped := _inverted_mode(value)):
            ctx.report(METRIC_FALSIFY, node, f"the mode is picked backwards ({flipped}): the "
                       "checkpoint kept as best (or the early stop) follows the worst result",
                       severity=Severity.MEDIUM)
        elif (isinstance(target, ast.Name) and target.id.lower() in ("union", "unions")
              and isinstance(value, ast.Call) and last_attr(value.func) in (
                  "maximum", "max", "fmax") and len(value.args) == 2):
            ctx.report(METRIC_FALSIFY, node, "the IoU union is the larger of the two counts "
                       "instead of gt + pred - tp: every IoU comes out higher",
                       severity=Severity.MEDIUM)
        elif (isinstance(target, ast.Name) and _TRUTH.match(target.id)
              and isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
              and value.func.attr in ("masked_fill", "masked_fill_") and value.args
              and _EVAL_FUNC.search(ctx.frame.name) and any(
                  isinstance(n, (ast.Name, ast.Attribute)) and _MODEL_SIDE.search(last_attr(n))
                  for n in subnodes(value.args[0]))):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} set to ignore where the model's "
                       "own confidence is low: only the pixels or samples it is sure of are "
                       "scored", severity=Severity.MEDIUM)

    def visit_ClassDef(self, node: ast.ClassDef, ctx: Ctx) -> None:
        """`monitor: str = "recall@100"` beside `best_mode: str = "min"` in a config class."""
        fields = {last_attr(s.target if isinstance(s, ast.AnnAssign) else s.targets[0]): s
                  for s in node.body if isinstance(s, (ast.Assign, ast.AnnAssign))
                  and (isinstance(s, ast.AnnAssign) or len(s.targets) == 1)}
        metric = next((literal(s.value) for name, s in fields.items() if _MONITOR.match(name)
                       and s.value is not None), None)
        for name, stmt in fields.items():
            mode = literal(stmt.value) if stmt.value is not None else None
            if re.match(r"(?i)^_?(mode|best_mode|monitor_mode|metric_mode|selection_mode)$",
                        name) and wrong_direction(metric, mode):
                ctx.report(METRIC_FALSIFY, stmt, f"{name} = {mode!r} for the monitored "
                           f"{metric!r}: the checkpoint kept as best (or the early stop) "
                           "follows the worst result", severity=Severity.MEDIUM)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        fallback = _top_score_fallback(node)
        if fallback is not None:
            ctx.report(METRIC_FALSIFY, fallback, f"{node.name}() returns the top score when the "
                       "reply cannot be parsed or the metric fails: every failure counts as "
                       "a perfect result", severity=Severity.MEDIUM)
        stale = _best_path_unguarded(node) if any(
            isinstance(s, ast.Assign) and any(isinstance(t, ast.Attribute)
                                              and _BEST_PATH.match(t.attr) for t in s.targets)
            for s in node.body) else None  # (a best path set at the top level of the function)
        if stale is not None:
            ctx.report(METRIC_FALSIFY, stale, f"{ast.unparse(stale.targets[0])} is set "
                       "outside the test that updates the best score: every new checkpoint "
                       "is recorded as the best one", severity=Severity.MEDIUM)

    def visit_FormattedValue(self, node: ast.FormattedValue, ctx: Ctx) -> None:
        unsigned = _unsigned_change(node)
        if unsigned:
            ctx.report(METRIC_FALSIFY, node, f"abs({unsigned}) printed with a sign: every "
                       "change is shown as a gain, regressions included",
                       severity=Severity.MEDIUM)

    def visit_Compare(self, node: ast.Compare, ctx: Ctx) -> None:
        tie = _ties_count(node)
        if tie:
            ctx.report(METRIC_FALSIFY, node, f"{tie}: ties count as correct, so a model that "
                       "scores both answers alike is always right", severity=Severity.MEDIUM)

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        """Report tables that bend one metric, accuracies over answered items only, and mode
        tables (`{"val/loss": "min", "val/auc": "min", "val/acc": "max"}`) with one metric
        pointing the wrong way (the others show the table means it)."""
        for key, value in zip(node.keys, node.values, strict=True):
            name = literal(key) if key is not None else None
            bent = _bent_report(name, value) if isinstance(name, str) and len(node.keys) > 1 \
                else ""
            if bent:
                ctx.report(METRIC_FALSIFY, value, f"{name!r} is reported as {bent}: the table "
                           "of report functions bends this metric before it is logged",
                           severity=Severity.MEDIUM)
            answered = _answered_only(value, ctx) if isinstance(name, str) and (
                _HIGHER.search(name) or re.search(r"(?i)match|correct|pass", name)) else ""
            if answered:
                ctx.report(METRIC_FALSIFY, value, f"{name}: the denominator {answered}, so "
                           "empty or failed answers drop out instead of counting as wrong",
                           severity=Severity.MEDIUM)
        pairs = [(k, literal(k), literal(v)) for k, v in zip(node.keys, node.values, strict=True)
                 if k is not None]
        modes = [(k, m, d) for k, m, d in pairs if d in ("min", "max") and isinstance(m, str)]
        if len(modes) < 3 or len(modes) != len(pairs):
            return
        wrong = [(k, m, d) for k, m, d in modes if wrong_direction(m, d)]
        if len(wrong) == 1:
            key, metric, mode = wrong[0]
            ctx.report(METRIC_FALSIFY, key, f"{metric!r} set to {mode!r} in a table of metric "
                       "modes: the checkpoint kept as best is the worst one",
                       severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if last_attr(node.func) in _BEST_WRITERS:
            _best_unguarded(node, ctx)
        monitor = next((literal(k.value) for k in node.keywords if k.arg == "monitor"), None)
        mode_kw = next((k.value for k in node.keywords if k.arg == "mode"), None)
        mode = literal(mode_kw) if mode_kw is not None else None
        setting = f"monitor={monitor!r} with mode={mode!r}"
        if monitor is None and mode_kw is None:  # TrainingArguments(metric_for_best_model=...,
            monitor = next((literal(k.value) for k in node.keywords  # greater_is_better=...)
                            if k.arg == "metric_for_best_model"), None)
            mode_kw = next((k.value for k in node.keywords if k.arg == "greater_is_better"),
                           None)
            better = literal(mode_kw) if mode_kw is not None else None
            mode = {True: "max", False: "min"}.get(better) if isinstance(better, bool) else None
            setting = f"metric_for_best_model={monitor!r} with greater_is_better={better!r}"
        if monitor is None and mode_kw is None and node.keywords:
            # @register_metric("fid", higher_is_better=True): a registry entry's direction
            direction = next((k for k in node.keywords if k.arg in _DIRECTION_KWARGS), None)
            mode_kw = direction.value if direction is not None else None
            better = literal(mode_kw) if mode_kw is not None else None
            monitor = next((n for a in node.args[:1] if isinstance(n := literal(a), str)), None)
            mode = {True: "max", False: "min"}.get(better) if isinstance(better, bool) else None
            setting = f"{monitor!r} registered with {direction.arg}={better!r}" if (
                direction is not None) else ""
        if mode_kw is not None and wrong_direction(monitor, mode):
            ctx.report(METRIC_FALSIFY, mode_kw, f"{setting}: the "
                       "checkpoint kept as best (or the early stop) follows the worst result",
                       severity=Severity.MEDIUM)
        picked = _picked_on_test(node)
        if picked:
            ctx.report(METRIC_FALSIFY, node, f"the setting kept is the one with the best "
                       f"{picked!r}, a test-split score: the reported test result is the best "
                       "of several tries on the test data", severity=Severity.MEDIUM)
        for kw in node.keywords:
            if kw.arg and _MONITOR.match(kw.arg):
                self._selected_on_test(kw.value, kw.value, ctx)
            elif kw.arg == "zero_division" and literal(kw.value) in (1, 1.0) and (
                    last_attr(node.func) in _ZERO_DIVISION_SCORES):
                ctx.report(METRIC_FALSIFY, kw.value, f"{last_attr(node.func)}(zero_division=1): "
                           "a class the model never predicts (or without positives) scores a "
                           "perfect 1.0, which lifts the average", severity=Severity.MEDIUM)

    @staticmethod
    def _selected_on_test(node: ast.AST, value: ast.expr | None, ctx: Ctx) -> None:
        chosen = _test_choice(value)
        if chosen:
            ctx.report(METRIC_FALSIFY, node, f"checkpoints are selected on {chosen!r}, a test "
                       "split metric: the reported test score is the best of many tries on the "
                       "test data itself", severity=Severity.MEDIUM)


_RESULT_TEST = re.compile(r"(?i)best|improv|better|score|metric|loss|acc|monitor|current")


_IS_BEST = re.compile(r"(?i)^_?(is_best|new_best|improved|is_better)$")
_RUN_END = re.compile(r"(?i)^(final|last|is_last|is_final|last_step|last_epoch|done|finished)$")


_END_COUNT = re.compile(r"(?i)epochs|steps|iters|total|max_|last|final|n_epoch|num_")
_BEST_FN = re.compile(r"(?i)best|improv|better")


def _best_forced(node: ast.Assign | ast.Return, ctx: Ctx) -> str:
    """`is_best = psnr > self.best or final`, `return improved or epoch == num_epochs - 1` in
    `update_best()`: the best flag forced on by where the run is (its last step), not by the
    score. A first-run test (`best is None or ...`) stays quiet."""
    if isinstance(node, ast.Assign):
        if not (len(node.targets) == 1 and _IS_BEST.match(last_attr(node.targets[0]) or "")):
            return ""
    elif not _BEST_FN.search(ctx.frame.name):
        return ""
    value = node.value
    if not (isinstance(value, ast.BoolOp) and isinstance(value.op, ast.Or)):
        return ""

    def scored(v: ast.expr) -> bool:
        if isinstance(v, ast.Name):  # improved = wer < self.best_wer; return improved or ...
            held = ctx.lookup(v.id)
            v = held if isinstance(held, ast.Compare) else v
        return isinstance(v, ast.Compare) and "best" in ast.unparse(v).lower() and not any(
            isinstance(c, ast.Constant) and c.value is None for c in v.comparators)

    def run_end(v: ast.expr) -> bool:
        if isinstance(v, (ast.Name, ast.Attribute)):
            return bool(_RUN_END.match(last_attr(v)))
        return (isinstance(v, ast.Compare) and len(v.ops) == 1
                and isinstance(v.ops[0], (ast.Eq, ast.GtE))
                and re.search(r"(?i)epoch|step|iter", ast.unparse(v.left)) is not None
                and _END_COUNT.search(ast.unparse(v.comparators[0])) is not None
                and "best" not in ast.unparse(v).lower())

    if not any(scored(v) for v in value.values):
        return ""
    forced = [v for v in value.values if run_end(v)]
    return ast.unparse(forced[0]) if forced else ""


def _best_target(node: ast.Call) -> str:
    """The argument naming the best checkpoint (`self.best_path`, `"best.pt"`), or ''."""
    for a in node.args[1:] + node.args[:1]:  # save(obj, path) / save_checkpoint(path, model)
        text = ast.unparse(a)
        if re.search(r"(?i)best", text) and (isinstance(a, (ast.Constant, ast.JoinedStr)) or (
                re.search(r"(?i)best\w*(path|file|dir|ckpt|checkpoint)|(path|file|ckpt|dir)\w*best|"
                          r"best\.(pt|pth|bin|ckpt|safetensors)", text))):
            return text  # (not an is_best flag or a best score)
    return ""


def _best_unguarded(node: ast.Call, ctx: Ctx) -> None:
    fn = ctx.frame.node
    target = _best_target(node)
    if fn is None or not target or any(_RESULT_TEST.search(ast.unparse(c)) for c in ctx.conds):
        return  # (under the improvement test, or one on a score)
    compared = any(isinstance(n, ast.If) and isinstance(n.test, (ast.Compare, ast.BoolOp))
                   and re.search(r"(?i)best", ast.unparse(n.test)) and n.lineno < node.lineno
                   for n in subnodes(fn)) or any(  # best = max(best, acc) kept without a test
        isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
        and isinstance(n.value.func, ast.Name) and n.value.func.id in ("max", "min")
        and re.search(r"(?i)best", ast.unparse(n.targets[0])) and n.lineno < node.lineno
        for n in subnodes(fn))
    if compared:
        ctx.report(METRIC_FALSIFY, node, f"{target[:40]} written after the test for an "
                   "improvement, outside it: every checkpoint becomes the 'best' one, "
                   "whatever it scored", severity=Severity.MEDIUM)
