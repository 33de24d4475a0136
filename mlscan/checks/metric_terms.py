"""MLS306 shapes where one term of a metric, its reduction or its record is wrong.

- The stored best moved by the improvement margin (`self.best = score + self.min_delta`):
  the next checkpoint must beat a score nobody reached, and early stopping fires early.
- A metric reduced across ranks with MAX or MIN through a helper (`_reduce([chrf], dev,
  op=dist.ReduceOp.MAX)`): the luckiest rank's score is reported for the whole set.
- Oracle selection: candidates ranked by a metric against the reference
  (`max(cands, key=lambda c: sentence_bleu(c, ref))`): the score uses the answer key.
- The brevity penalty inverted (`exp(1 - hyp_len / ref_len)`): short outputs are
  rewarded instead of penalised.
- An improvement test with the margin on the wrong side (`acc > best - 1.0`).
- A metric combined across ranks with MIN/MAX, or `max(gathered)` of per-rank results.
- False negatives counted as gold minus predicted (not minus correct).
- `metrics.update(self.best)`: the measured results replaced by the stored best.
- A score folded around chance (`max(auroc, 1 - auroc)`).
- A results table merged with the better of the stored and new values, built as a dict
  comprehension (`{k: max(v, prev.get(k, v)) ...}`), and an absolute change formatted with a
  sign through `str.format` (`"{:+.2f}".format(abs(delta))`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metric_words import MERGED_TABLE, metric_name
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import NOT_LITERAL, kwarg, last_attr, literal
from mlscan.checks.nodes import assigns_in, subnodes
from mlscan.model import Severity

_MARGIN = re.compile(r"(?i)(min_)?delta|margin|tolerance|tol|eps|threshold")
_BEST = re.compile(r"(?i)^_?(best|best_score|best_metric|best_value|best_val\w*)$")
_REFERENCE = re.compile(r"(?i)^(ref|refs|reference|references|target|targets|gold|golds|"
                        r"gt|ground_truth|label|labels|answer|answers)$")
_CANDIDATES = re.compile(r"(?i)cand|hyp|beam|nbest|n_best|sample|output|generation")
_HYP_LEN = re.compile(r"(?i)sys|hyp|pred|cand|out|^c$|^c_len$")
_REF_LEN = re.compile(r"(?i)ref|^r$|^r_len$")


def margin_stored(node: ast.Assign) -> str:
    """`self.best = score + self.min_delta`."""
    target, value = node.targets[0], node.value
    if not (len(node.targets) == 1 and _BEST.match(last_attr(target) or "")
            and isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Add, ast.Sub))):
        return ""
    sides = [value.left, value.right]
    margins = [s for s in sides if isinstance(s, (ast.Name, ast.Attribute))
               and _MARGIN.search(last_attr(s))]
    others = [s for s in sides if s not in margins and isinstance(s, (ast.Name, ast.Attribute))
              and not _BEST.match(last_attr(s))]
    return ast.unparse(value) if margins and others else ""


_IMPROVED_FLAG = re.compile(r"(?i)^_?(is_best|improved|is_improved|better|is_better|new_best)$")


def tolerant_improvement(node: ast.Assign) -> str:
    """`improved = improved or acc1 > self.best_acc1 - 1.0`: a result below the best by up to
    the margin counts as an improvement (for a higher-is-better score the margin is added)."""
    target = node.targets[0]
    if not (len(node.targets) == 1 and _IMPROVED_FLAG.match(last_attr(target) or "")):
        return ""
    for test in subnodes(node.value):
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
            continue
        bound, op = test.comparators[0], test.ops[0]
        if not (isinstance(bound, ast.BinOp) and isinstance(bound.left, (ast.Name, ast.Attribute))
                and re.search(r"(?i)best", last_attr(bound.left))):
            continue
        margin = literal(bound.right)
        named = isinstance(bound.right, (ast.Name, ast.Attribute)) and _MARGIN.search(
            last_attr(bound.right))
        if not (named or (isinstance(margin, (int, float)) and margin > 0)):
            continue
        if (isinstance(op, (ast.Gt, ast.GtE)) and isinstance(bound.op, ast.Sub)) or (
                isinstance(op, (ast.Lt, ast.LtE)) and isinstance(bound.op, ast.Add)):
            return ast.unparse(test)
    return ""


def extreme_reduced(call: ast.Call) -> str:
    """A metric combined across ranks with MIN or MAX: `dist.all_reduce(eval_loss,
    op=dist.ReduceOp.MIN)`, or through a helper, `_reduce([chrf], device, op=ReduceOp.MAX)`
    (flag accumulators and stop signals are MAX-reduced on purpose)."""
    op = kwarg(call, "op")
    if op is None or last_attr(op) not in ("MAX", "MIN") or not call.args:
        return ""
    if last_attr(call.func) in ("all_reduce", "reduce"):
        tensor = call.args[0]
        metric = last_attr(tensor) if metric_name(tensor) and not re.search(
            r"(?i)int_acc|accum|flag|status|stop|done", ast.unparse(tensor)) else ""
    else:
        metric = next((last_attr(n) for a in call.args for n in subnodes(a)
                       if isinstance(n, (ast.Name, ast.Attribute)) and metric_name(n)), "")
    return f"{metric} combined across ranks with {last_attr(op)}" if metric else ""


def oracle_pick(call: ast.Call) -> str:
    """`max(cands, key=lambda c: sentence_bleu(c, ref))`."""
    key = kwarg(call, "key")
    if not (last_attr(call.func) in ("max", "min", "sorted") and call.args
            and isinstance(key, ast.Lambda) and isinstance(key.body, ast.Call)):
        return ""
    pool = last_attr(call.args[0]) or ""
    scored = key.body
    if not (_CANDIDATES.search(pool) and metric_name(ast.Name(id=last_attr(scored.func)))):
        return ""
    refs = [a for a in scored.args[1:] if isinstance(a, (ast.Name, ast.Attribute))
            and _REFERENCE.match(last_attr(a))]
    return f"{last_attr(scored.func)}(..., {ast.unparse(refs[0])})" if refs else ""


def brevity_inverted(node: ast.Assign) -> str:
    """`bp = math.exp(1 - sys_len / ref_len)` (BLEU uses `1 - ref_len / sys_len`)."""
    target, value = node.targets[0], node.value
    if not (len(node.targets) == 1 and re.match(r"(?i)^(bp|brevity_penalty|brevity)$",
                                                last_attr(target) or "")
            and isinstance(value, ast.Call) and last_attr(value.func) == "exp" and value.args):
        return ""
    inner = value.args[0]
    if not (isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Sub)
            and literal(inner.left) in (1, 1.0) and isinstance(inner.right, ast.BinOp)
            and isinstance(inner.right.op, ast.Div)):
        return ""
    num, den = (last_attr(inner.right.left) or ""), (last_attr(inner.right.right) or "")
    return ast.unparse(inner) if _HYP_LEN.search(num) and _REF_LEN.search(den) else ""


def merged_better(node: ast.Assign, ctx: Ctx) -> str:
    """`results[key] = {k: max(v, prev.get(k, v)) ...}` with `prev = results.get(key, {})`."""
    target, comp = node.targets[0], node.value
    if not (len(node.targets) == 1 and isinstance(target, ast.Subscript)
            and isinstance(target.value, ast.Name) and MERGED_TABLE.match(target.value.id)
            and isinstance(comp, ast.DictComp)):
        return ""
    table = target.value.id
    for call in subnodes(comp.value):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id in ("max", "min") and len(call.args) == 2
                and not any(literal(a) is not NOT_LITERAL for a in call.args)):
            continue  # (max(ref.get(k, 0), 1e-9) guards a division)
        for a in call.args:
            if not (isinstance(a, ast.Call) and last_attr(a.func) == "get"
                    and isinstance(a.func, ast.Attribute) and isinstance(a.func.value, ast.Name)):
                continue
            held = ctx.lookup(a.func.value.id)
            if held is not None and table in {ast.unparse(n) for n in subnodes(held)
                                              if isinstance(n, ast.Name)}:
                return f"{table}[...] = {{k: {ast.unparse(call)[:40]} ...}}"
    return ""


def folded_score(call: ast.Call) -> str:
    """`max(a, 1 - a)`: a score below chance reported as its mirror image above it (an AUROC
    of 0.3 becomes 0.7), so a classifier that is wrong the other way looks good."""
    if not (isinstance(call.func, ast.Name) and call.func.id == "max" and len(call.args) == 2):
        return ""
    for a, b in ((call.args[0], call.args[1]), (call.args[1], call.args[0])):
        if (isinstance(b, ast.BinOp) and isinstance(b.op, ast.Sub)
                and literal(b.left) in (1, 1.0) and ast.unparse(b.right) == ast.unparse(a)
                and isinstance(a, (ast.Name, ast.Attribute, ast.Subscript))):
            return ast.unparse(call)
    return ""


def signed_abs_format(call: ast.Call) -> str:
    """`"{:+.2f}".format(abs(delta))`."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "format"
            and isinstance(template := literal(call.func.value), str) and ":+" in template):
        return ""
    absolute = next((a for a in call.args if isinstance(a, ast.Call)
                     and isinstance(a.func, ast.Name) and a.func.id == "abs" and a.args), None)
    return ast.unparse(absolute.args[0]) if absolute is not None else ""


_NOT_A_SCORE = re.compile(r"(?i)^(lam|lambda_?|lmbda|p|prob|probs?|conf|confidence|alpha|"
                          r"ratio|mix\w*)$")


def _scored(value: ast.expr, target: ast.expr, stmts: list[ast.Assign]) -> bool:
    """The folded value is a metric: its own name, the name it is stored under, or what the
    stored name held before (`per_class = auroc.compute()` ... `per_class = [max(a, 1-a) ...]`)."""
    if isinstance(value, ast.Name) and _NOT_A_SCORE.match(value.id):
        return False
    if metric_name(value) or metric_name(target) or re.search(
            r"(?i)c_?index|auc|auroc", ast.unparse(target)):
        return True
    name = ast.unparse(target)
    return any(ast.unparse(t) == name and any(isinstance(n, (ast.Name, ast.Attribute))
                                              and metric_name(n) for n in subnodes(a.value))
               for a in stmts for t in a.targets if a.lineno < target.lineno)


_GATHERED = re.compile(r"(?i)gather|per_rank|ranks|all_\w+|across")
_FALSE_NEG = re.compile(r"(?i)^(fn|fns|n_fn|false_neg\w*)$")
_FALSE_POS = re.compile(r"(?i)^(fp|fps|n_fp|false_pos\w*)$")
_GOLD = re.compile(r"(?i)gold|true|target|ref|label|actual")
_PRED = re.compile(r"(?i)pred|guess|hyp|system|output")
_CORRECT = re.compile(r"(?i)correct|tp|true_pos|hit|match")


def extreme_over_ranks(node: ast.Assign) -> str:
    """`exact_match = max(gathered)`, `dist.all_reduce(eval_loss, op=ReduceOp.MIN)` as an
    assignment's value: one rank's result standing for all of them."""
    target, value = node.targets[0], node.value
    if not (len(node.targets) == 1 and metric_name(target) and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name) and value.func.id in ("max", "min")
            and len(value.args) == 1 and isinstance(value.args[0], ast.Name)
            and _GATHERED.search(value.args[0].id)):
        return ""
    return ast.unparse(value)


def errors_from_totals(node: ast.Assign) -> str:
    """`fn = max(c.n_gold - c.n_pred, 0)`: misses counted as gold minus *predicted* (not
    minus correct), so wrong predictions cancel misses (and `fp = pred - gold` the other way).
    (Diarization's missed speech is frame-wise ref minus hyp on purpose: named otherwise.)"""
    target = node.targets[0]
    name = last_attr(target) or ""
    if not (len(node.targets) == 1 and (_FALSE_NEG.match(name) or _FALSE_POS.match(name))):
        return ""
    for sub in subnodes(node.value):
        if not (isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Sub)):
            continue
        left, right = last_attr(sub.left) or "", last_attr(sub.right) or ""
        if _CORRECT.search(left) or _CORRECT.search(right):
            return ""
        if (_FALSE_NEG.match(name) and _GOLD.search(left) and _PRED.search(right)) or (
                _FALSE_POS.match(name) and _PRED.search(left) and _GOLD.search(right)):
            return ast.unparse(sub)
    return ""


def best_written_over(call: ast.Call) -> str:
    """`metrics.update(self.best)` in an evaluation callback."""
    if (last_attr(call.func) == "update" and isinstance(call.func, ast.Attribute)
            and last_attr(call.func.value) in ("metrics", "logs", "results")
            and len(call.args) == 1 and isinstance(call.args[0], ast.Attribute)
            and re.search(r"(?i)best", call.args[0].attr)):
        return ast.unparse(call)
    return ""


_VALUE_SHAPES: tuple[tuple[Callable[[ast.Assign, Ctx], str], str], ...] = (
    (lambda node, ctx: extreme_over_ranks(node), "{}: one rank's best result stands for all "
     "of them"),
    (lambda node, ctx: errors_from_totals(node), "{}: errors counted from totals instead of "
     "from the correct matches, so wrong predictions cancel misses"),
    (lambda node, ctx: margin_stored(node), "the stored best is {}, not the score: the bar "
     "moves by the margin each time, so later improvements are not recognised and early "
     "stopping fires early"),
    (lambda node, ctx: brevity_inverted(node), "brevity penalty exp({}) has the lengths the "
     "wrong way round: short outputs are rewarded instead of penalised"),
    (merged_better, "{}: every result kept is the better of the stored and the new one"),
    (lambda node, ctx: errors_capped_mask(node), "{}: errors above the bound are left out of "
     "what is averaged, so the worst predictions never count"),
    (lambda node, ctx: best_of_settings(node), "{}: the score is the best over several "
     "scoring settings, so the reported number is picked, not measured one way"),
    (lambda node, ctx: history_filtered(node), "{}: evaluations are removed from the logged "
     "history by their score, so the record only shows the good ones"),
    (lambda node, ctx: direction_inverted(node), "{}: a metric whose name ends in 'loss' is "
     "treated as higher-is-better (and every other one as lower), so selection keeps the "
     "worst checkpoint"),
    (lambda node, ctx: better_of_two_runs(node), "{}: the better of two models' results is "
     "logged under the plain metric name, so the number is picked, not measured"),
    (lambda node, ctx: error_rescaled(node), "{}: the error is divided by the targets' "
     "spread, so the figure reported as an error in target units is a fraction of it"),
    (lambda node, ctx: overlap_without_fp(node), "{} leaves the false positives out of the "
     "denominator: it is recall, not intersection over union, and over-predicting a class "
     "costs nothing"),
)
"""Assignment shapes in the order they are tried: (finder, message with `{}`)."""
_CALL_SHAPES: tuple[tuple[Callable[[ast.Call], str], str], ...] = (
    (best_written_over, "{} overwrites the measured results with the stored best ones: later "
     "callbacks and logs see the best, not this evaluation"),
    (extreme_reduced, "{}: the luckiest rank's value is reported for the whole set"),
    (oracle_pick, "candidates picked by {}: the selection looks at the reference, so the "
     "reported score is an oracle's"),
    (signed_abs_format, "abs({}) formatted with a sign: every change is shown as a gain, "
     "regressions included"),
)


class MetricTerms(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        value = node.value
        if isinstance(value, (ast.Compare, ast.BoolOp)):
            self._assigned_test(node, ctx)
        elif isinstance(value, (ast.BinOp, ast.Call, ast.DictComp, ast.ListComp)):
            self._assigned_value(node, ctx)

    @staticmethod
    def _assigned_test(node: ast.Assign, ctx: Ctx) -> None:
        if MetricTerms._assigned_value(node, ctx):
            return  # (valid = fde_all < 2.0: a mask shape from the table)
        tolerant = tolerant_improvement(node)
        if tolerant:
            ctx.report(METRIC_FALSIFY, node, f"{tolerant[:50]} counts a result below the best "
                       "(within the margin) as an improvement: worse checkpoints replace the "
                       "best one", severity=Severity.MEDIUM)

    @staticmethod
    def _assigned_value(node: ast.Assign, ctx: Ctx) -> bool:
        for find, message in _VALUE_SHAPES:  # the first shape that matches
            found = find(node, ctx)
            if found:
                ctx.report(METRIC_FALSIFY, node, message.format(found[:40]),
                           severity=Severity.MEDIUM)
                return True
        return False

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        folded = folded_score(node)
        if folded:
            scope = ctx.frame.node
            stmts = assigns_in(scope) if scope is not None else [
                s for s in getattr(ctx.tree, "body", []) if isinstance(s, ast.Assign)]
            target = next((a.targets[0] for a in stmts if len(a.targets) == 1 and any(
                n is node for n in subnodes(a.value))), None)  # (rare: only folded max calls)
            if target is not None and _scored(node.args[0], target, stmts):
                ctx.report(METRIC_FALSIFY, node, f"{folded[:40]} reports every score below "
                           "0.5 as its mirror image above it: a classifier that is worse than "
                           "chance looks better than chance", severity=Severity.MEDIUM)
            return
        for find, message in _CALL_SHAPES:
            found = find(node)
            if found:
                ctx.report(METRIC_FALSIFY, node, message.format(found[:40]),
                           severity=Severity.MEDIUM)
                return
        if last_attr(node.func) == "zip" and isinstance(node.func, ast.Name):
            ranked = _names_beside_sorted(node, ctx)
            if ranked:
                ctx.report(METRIC_FALSIFY, node, f"{ranked}: the names keep their order while "
                           "the scores are sorted, so each name is reported with another "
                           "one's score", severity=Severity.MEDIUM)


_NAMES = re.compile(r"(?i)^(names|class_names|classes|labels|label_names|categories|"
                    r"cat_names|tasks|datasets)$")


def _names_beside_sorted(call: ast.Call, ctx: Ctx) -> str:
    """`for name, v in zip(names, ranked)` with `ranked = sorted(iou, reverse=True)`."""
    names, scores = call.args if len(call.args) == 2 else (None, None)
    if not (isinstance(names, ast.Name) and isinstance(scores, ast.Name)
            and _NAMES.match(names.id)):
        return ""
    held = ctx.lookup(scores.id)
    if not (isinstance(held, ast.Call) and isinstance(held.func, ast.Name)
            and held.func.id == "sorted" and held.args
            and not kwarg(held, "key")):  # (sorted(pairs, key=...) keeps each pair together)
        return ""
    return f"zip({names.id}, {scores.id}) with {scores.id} = sorted(...)"


_ERROR_ARRAY = re.compile(r"(?i)^(ape|pct_err|abs_err|abs_error|errs?|errors?|residuals?|"
                          r"sq_err|se|ae|rel_err|relative_error|ade|fde|epe|mpjpe)(_all|s)?$")


_TRUTH_ARRAY = re.compile(r"(?i)^(actual|actuals|y_true|y|target|targets|truth|gt|observed)$")


def errors_capped_mask(node: ast.Assign) -> str:
    """`ape_mask = mask & (ape <= 1.0)`, `valid = fde_all < 2.0`: the points scored keep only
    the small errors (accuracy-within-threshold metrics are assigned as the score, not `&`-ed into a
    mask)."""
    target = node.targets[0]
    value = node.value
    if not (isinstance(target, ast.Name) and re.search(r"(?i)mask|valid|keep", target.id)
            and (isinstance(value, ast.Compare) or (isinstance(value, ast.BinOp)
                 and isinstance(value.op, ast.BitAnd)))):
        return ""
    for side in (value.left, value.right) if isinstance(value, ast.BinOp) else (value,):
        if (isinstance(side, ast.Compare) and len(side.ops) == 1
                and isinstance(side.ops[0], (ast.Lt, ast.LtE))
                and isinstance(side.left, ast.Name) and _ERROR_ARRAY.match(side.left.id)
                and (isinstance(literal(side.comparators[0]), (int, float)) or (
                    isinstance(side.comparators[0], ast.Name)
                    and _TRUTH_ARRAY.match(side.comparators[0].id)))):
            return f"{target.id} = ({ast.unparse(side)[:30]})"  # (abs_err < actual: ape < 1)
    return ""


def best_of_settings(node: ast.Assign) -> str:
    """`bleu = max(BLEU(tokenize=t).corpus_score(h, r).score for t in (tok, "intl"))`."""
    target, value = node.targets[0], node.value
    if not (isinstance(target, ast.Name) and metric_name(target)
            and not re.search(r"(?i)best|max|oracle|top|upper|peak", target.id)
            and isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id == "max" and len(value.args) == 1
            and isinstance(value.args[0], ast.GeneratorExp)):
        return ""
    gen = value.args[0].generators[0]
    if isinstance(gen.iter, (ast.Tuple, ast.List)) and len(gen.iter.elts) >= 2 and any(
            isinstance(n, ast.Call) for n in subnodes(value.args[0].elt)):
        return f"{target.id} = max(... for {ast.unparse(gen.target)} in {ast.unparse(gen.iter)})"
    return ""


def better_of_two_runs(node: ast.Assign) -> str:
    """`flat["val/mIoU"] = torch.maximum(scores["mIoU"], ema_scores["mIoU"])`: the same
    metric of two models (or evaluations) and the better one logged under the plain name."""
    target, value = node.targets[0], node.value
    while (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
           and value.func.attr in ("float", "item", "detach") and not value.args):
        value = value.func.value  # torch.maximum(a, b).float()
    key = ast.unparse(target.slice) if isinstance(target, ast.Subscript) else ""
    if not (key and metric_name(target)
            and not re.search(r"(?i)best|max|oracle|top|upper|peak", key)
            and isinstance(value, ast.Call) and last_attr(value.func) in ("max", "maximum",
                                                                          "fmax")
            and len(value.args) == 2):
        return ""
    first, second = value.args
    if (isinstance(first, ast.Subscript) and isinstance(second, ast.Subscript)
            and isinstance(literal(first.slice), str)
            and literal(first.slice) == literal(second.slice)
            and ast.unparse(first.value) != ast.unparse(second.value)):
        return f"{ast.unparse(target)[:30]} = {last_attr(value.func)}(...)"
    return ""


def history_filtered(node: ast.Assign) -> str:
    """`state.log_history = [h for h in state.log_history if h.get(metric) >= floor]`."""
    target, value = node.targets[0], node.value
    if not (re.search(r"(?i)history|evals|log", last_attr(target) or "")
            and isinstance(value, ast.ListComp) and len(value.generators) == 1):
        return ""
    gen = value.generators[0]
    if ast.unparse(gen.iter) != ast.unparse(target) or not gen.ifs:
        return ""
    if any(isinstance(t, ast.Compare) and isinstance(t.ops[0], (ast.Gt, ast.GtE, ast.Lt,
                                                                 ast.LtE)) for t in gen.ifs):
        return f"{ast.unparse(target)[:24]} filtered by score"
    return ""


_OVERLAP = re.compile(r"(?i)(^|_)(iou|ious|miou|jaccard|dice|f1)(_|$)")


_ERROR_NAME = re.compile(r"(?i)^(val_|test_|eval_)?(rmse|mae|mse)$")
_SPREAD = re.compile(r"(?i)std|sigma|scale|range|iqr")


def error_rescaled(node: ast.Assign) -> str:
    """`rmse = float(np.sqrt(np.mean(np.square(err)))) / std[j]`: an error in target units
    divided by the targets' standard deviation, still named RMSE (a normalised error has its
    own name: `nrmse`)."""
    target, value = node.targets[0], node.value
    name = target.id if isinstance(target, ast.Name) else literal(target.slice) if isinstance(
        target, ast.Subscript) else None
    if not (isinstance(name, str) and _ERROR_NAME.match(name) and isinstance(value, ast.BinOp)
            and isinstance(value.op, ast.Div) and _SPREAD.search(ast.unparse(value.right))
            and any(isinstance(n, ast.Call) and last_attr(n.func) in ("sqrt", "mean", "abs")
                    for n in ast.walk(value.left))):
        return ""
    return f"{name} = ... / {ast.unparse(value.right)[:20]}"


_TRUE_COUNT = re.compile(
    r"^(gt|true|target|label|support)_?(count|counts|area|sum|total|pixels|n)$")
"""The number of ground-truth members of a class (the row sums of a confusion matrix)."""


def overlap_without_fp(node: ast.Assign) -> str:
    """`iou = tp / (tp + fn)`: an overlap score whose denominator counts true positives and
    false negatives only (IoU is tp / (tp + fp + fn))."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, (ast.Name, ast.Attribute, ast.Subscript))
            and _OVERLAP.search(last_attr(target) or ast.unparse(target))
            and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Div)):
        return ""
    terms = {n.id.lower() for n in subnodes(value.right) if isinstance(n, ast.Name)}
    if {"tp", "fn"} <= terms and "fp" not in terms:
        return ast.unparse(value)[:40]
    if any(_TRUE_COUNT.search(t) for t in terms) and not any(
            re.search(r"pred|union|fp|out|det", t) for t in terms):
        return ast.unparse(value)[:40]  # tp / np.maximum(gt_count, 1): the class's true size
    return ""


def direction_inverted(node: ast.Assign) -> str:
    """`args.greater_is_better = args.metric_for_best_model.endswith("loss")`."""
    target, value = node.targets[0], node.value
    if not (re.search(r"(?i)greater_is_better|higher_is_better|maximi[sz]e",
                      last_attr(target) or "")
            and isinstance(value, ast.Call) and last_attr(value.func) in ("endswith",
                                                                         "startswith")
            and value.args and isinstance(literal(value.args[0]), str)
            and "loss" in str(literal(value.args[0])).lower()):
        return ""
    return f"{last_attr(target)} = ....{last_attr(value.func)}({ast.unparse(value.args[0])})"
