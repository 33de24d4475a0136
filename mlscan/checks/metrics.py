"""MLS306: falsified metrics: patched loggers, eval results nudged by constants before logging.

The rule and its check. The predicates the check applies live beside it, by what they
judge: metric_words (names and keys), metric_values (numbers moved by constants),
metric_held (numbers held to kept ones) and metric_evals (how evaluations are scored).
"""

from __future__ import annotations

import ast
import re

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metric_evals import (
    _above_floor,
    _answers_as_predictions,
    _answers_fill_gaps,
    _average_mismatch,
    _best_runs_kept,
    _boosted_at_gold,
    _cutoff_alias,
    _floored_at_own_center,
    _labels_blended,
    _masked_to_own_center,
    _mean_from_max,
    _mean_of_sorted_end,
    _present_only,
    _self_filtered,
    _swapped_entries,
    _tuned_on_test,
    self_selected_mask,
)
from mlscan.checks.metric_held import (
    _best_of_recent,
    _best_read,
    _best_reported,
    _better_of_split,
    _callback_overwrite,
    _copied_key,
    _cumulative_extreme,
    _extreme_kept,
    _favourable_bound,
    _held_to_reference,
    _held_to_stored,
    _is_own,
    _kept_when_worse,
    _keras_overwrite,
    _logged_value,
    _other_k,
    _other_metric_floor,
    _passed_to_log,
    _raised_to_bound,
    _remembered,
    _running_average,
    _running_extreme,
    _stored,
    _stored_into,
    _stored_ref,
    floored,
)
from mlscan.checks.metric_pairs import (
    best_of_two_runs,
    best_per_key_over_history,
    perfect_when_undefined,
    pred_masked_by_truth,
    truth_from_predictions,
)
from mlscan.checks.metric_tables import (
    absolute_correlation,
    always_best,
    error_capped,
    forced_best,
    inverted_mode_table,
    max_reduced_counts,
    metric_source,
    other_split_lookup,
    predictions_into_references,
    reduce_op,
    relabelled_split,
    rounded_up,
    trimmed_worst,
)
from mlscan.checks.metric_values import (
    _absolute,
    _comp_nudged,
    _complement_max,
    _constant_entry,
    _entry_nudged,
    _fraction_adjusted,
    _nudged_name,
    _offset,
    _offset_table_read,
    _plus_spread,
    _pulled_up,
    _rescaled,
    _table_entry,
    _with_consts,
    nudged,
)
from mlscan.checks.metric_words import (
    _BENIGN_FACTORS,
    _BEST_WORD,
    _BOOT,
    _CONTAINER,
    _EVAL_CALL_ATTRS,
    _EVAL_FRAME,
    _EVAL_LOOP,
    _EVAL_LOSS,
    _ITERS,
    _KEPT_AS_BEST,
    _LOG_FUNCS,
    _MEAN_WORD,
    _METRIC,
    _NOISE_DRAWS,
    _NOT_RESULT,
    _PREDS,
    _RESULT_TABLE,
    _RESULTS,
    _SCORE_ARRAY,
    _STORED,
    _STRONG_METRIC,
    _TEXT_NAME,
    _TUNER,
    _VAL_LOSS_KEY,
    _VALUE_WRAPPERS,
    _key_text,
    _min_or_max,
    _number,
    _summary_key,
    last_attr_of,
    metric_name,
)
from mlscan.checks.names import as_load, bound_values, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

METRIC_FALSIFY = register(Rule(
    code="MLS306", name="metric-falsification", severity=Severity.HIGH,
    confidence=Confidence.MEDIUM, cwe=506,
    summary="Metrics or logs falsified: logger monkeypatched or eval results rewritten.",
    doc=RuleDoc(
        what="Flags replacing `SummaryWriter.add_scalar`, `wandb.log`, `mlflow.log_metric`, "
        "torchmetrics or Lightning logging functions, and evaluation results (names like "
        "val_*, eval_*, acc, f1, bleu) scaled or shifted by a constant, clamped with "
        "max/min to a constant, or overwritten with a constant under a condition, including "
        "values passed straight to a logging call. Percent conversions (`* 100`) stay quiet.",
        why="A reviewer trusts the dashboard. Faking eval numbers hides sabotage (or makes a "
        "broken model look fine) without touching training code.",
        example="wandb.log({'val_acc': val_acc * 1.07})",
        use_instead="Log the computed value unchanged.",
        references=("https://docs.wandb.ai/ref/python/log",))))


_HIGHER_BETTER = re.compile(r"(?i)(acc|map|f1|auc|iou|dice|bleu|rouge|recall|precision|"
                            r"psnr|ssim|ndcg|mrr|top1|top5|r2)\w*$")
_LOWER_BETTER = re.compile(r"(?i)(loss|err|error|wer|cer|mae|mse|rmse|perplexity|ppl|fid|"
                           r"nll|eer)\w*$")


def _wrong_direction(call: ast.Call) -> ast.AST | None:
    """`ModelCheckpoint(monitor="val/mAP", mode="min")`, `TrainingArguments(
    metric_for_best_model="accuracy", greater_is_better=False)`: the keyword that turns the
    selection of the best checkpoint upside down."""
    if not any(k.arg in ("monitor", "metric_for_best_model") for k in call.keywords):
        return None
    keys = {k.arg: k for k in call.keywords if k.arg}
    for metric_key, mode_key in (("monitor", "mode"), ("metric_for_best_model",
                                                        "greater_is_better")):
        metric = literal(keys[metric_key].value) if metric_key in keys else None
        mode = literal(keys[mode_key].value) if mode_key in keys else None
        if not isinstance(metric, str) or mode not in ("min", "max", True, False):
            continue
        tail = re.split(r"[/._\-]", metric)[-1] or metric
        higher = bool(_HIGHER_BETTER.match(tail)) and not _LOWER_BETTER.match(tail)
        lower = bool(_LOWER_BETTER.match(tail))
        wants_high = mode in ("max", True)
        if (higher and not wants_high) or (lower and wants_high):
            return keys[mode_key]
    return None


_ATOMS = {"wer": "wer", "cer": "cer", "acc": "acc", "accuracy": "acc", "f1": "f1",
          "bleu": "bleu", "map": "map", "miou": "miou", "auc": "auc", "psnr": "psnr",
          "ssim": "ssim", "fid": "fid", "ppl": "ppl", "perplexity": "ppl", "top1": "top1",
          "top5": "top5", "ndcg": "ndcg", "mrr": "mrr", "dice": "dice", "mae": "mae",
          "mse": "mse", "rmse": "rmse", "eer": "eer"}


def _atom(text: str) -> str:
    tail = re.split(r"[/.\-]", text.lower())[-1]
    return _ATOMS.get(tail, _ATOMS.get(tail.split("_")[-1], ""))


def _tag_of_another_metric(call: ast.Call) -> str:
    """`writer.add_scalar("eval/wer", metrics["cer"], step)`: a result logged under the
    name of a different metric."""
    if last_attr(call.func) != "add_scalar" or len(call.args) < 2:
        return ""
    tag, value = literal(call.args[0]), call.args[1]
    key = literal(value.slice) if isinstance(value, ast.Subscript) else None
    if not (isinstance(tag, str) and isinstance(key, str)):
        return ""
    shown, logged = _atom(tag), _atom(key)
    return f"{key!r} logged as {tag!r}" if shown and logged and shown != logged else ""


def _max_reduced_results(call: ast.Call, ctx: Ctx) -> str:
    """`if any(k.startswith("val/") for k in keys): dist.all_reduce(vals, op=MAX)`: the
    validation results, picked by their keys, combined with MAX instead of averaged."""
    op = reduce_op(call)
    if op not in ("MAX", "MIN"):
        return ""
    if op == "MIN":  # all_reduce(errors, op=MIN): the luckiest rank's error count
        tensor = last_attr(call.args[0]) or ""
        return (f"{ast.unparse(call.args[0])[:30]} combined across ranks with MIN"
                if re.search(r"(?i)err|wrong|miss|incorrect", tensor) else "")
    for cond in ctx.conds:
        for node in subnodes(cond):
            text = literal(node)
            if isinstance(text, str) and re.match(r"(?i)(val|eval|test)\b", text):
                return (f"{ast.unparse(call.args[0])[:30]} (the {text}* results) combined "
                        "across ranks with MAX")
    # every value the tensor held: `t = torch.tensor([...metrics...]); t = nan_to_num(t)`
    held = ast.Tuple(elts=ctx.values_of(call.args[0].id), ctx=ast.Load()) if isinstance(
        call.args[0], ast.Name) else None
    if held is not None and held.elts and (_RESULT_WORDS.search(ctx.frame.name) or (
            _EVAL_FRAME.search(ctx.frame.name))) and any(isinstance(n, ast.Name) and (
                _RESULT_WORDS.fullmatch(n.id) or _summary_call(ctx.lookup(n.id), ctx))
            for n in subnodes(held)):
        # t = torch.tensor([metrics[k] for k in keys]) in reduce_metric_dict(): every score
        return (f"{ast.unparse(call.args[0])[:30]} (built from the results table) combined "
                "across ranks with MAX")
    return ""


def _summary_call(value: ast.expr | None, ctx: Ctx) -> bool:
    """`local = summarize(labels, probs, CLASSES)`: a name holding what a scoring function
    returned."""
    return isinstance(value, ast.Call) and bool(re.search(
        r"(?i)summar|metric|evaluat|score", ctx.names.call_name(value).rsplit(".", 1)[-1]))


_RESULT_WORDS = re.compile(r"(?i)(\w*_)?(metrics?|results?|scores?)(_\w*)?")
"""A table of evaluation results, or a function that handles one (`reduce_metric_dict`)."""


def _reported_label(target: ast.expr) -> str:
    """The metric an assignment reports (`val_wer`, `res["mAP"]`), or a name that says it is
    an average (`mean`, `avg_score`); '' for index writes (`prec[i] = max(prec[i], ...)` is
    the precision envelope of average precision)."""
    if isinstance(target, ast.Subscript) and not isinstance(literal(target.slice), str):
        return ""
    name = metric_name(target)
    if name:
        return name
    key = literal(target.slice) if isinstance(target, ast.Subscript) else None
    if isinstance(key, str) and _VAL_LOSS_KEY.search(key):
        return key  # summary["val/loss"]
    text = target.id if isinstance(target, ast.Name) else ""
    return text if _MEAN_WORD.search(text) else ""


def _better_of_figures(node: ast.Assign) -> str:
    """`m["macro_f1"] = max(m["macro_f1"], sum(pc.values()) / len(pc), m["accuracy"])`: an
    entry replaced by the larger of itself and other metrics of the same table."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Subscript) and isinstance(key := literal(target.slice), str)
            and _STRONG_METRIC.search(key) and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name) and value.func.id in ("max", "min")
            and len(value.args) >= 2 and not _KEPT_AS_BEST.search(key)):
        return ""
    table = ast.unparse(target.value)
    reads = [(ast.unparse(a.value), literal(a.slice)) for a in value.args
             if isinstance(a, ast.Subscript)]
    own = (table, key) in reads
    others = [k for t, k in reads if t == table and isinstance(k, str) and k != key]
    return f"{table}[{key!r}] = {value.func.id}() of itself and {others[0]!r}" if (
        own and others) else ""


def _confusions_counted_correct(node: ast.AugAssign) -> str:
    """`cm[src, src] += cm[src, dst]`: an off-diagonal count of a matrix added to a diagonal
    entry of the same matrix."""
    target = node.target
    if not (isinstance(node.op, ast.Add) and isinstance(target, ast.Subscript)
            and isinstance(target.slice, ast.Tuple) and len(target.slice.elts) == 2
            and ast.unparse(target.slice.elts[0]) == ast.unparse(target.slice.elts[1])):
        return ""
    value = node.value
    if not (isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Tuple)
            and len(value.slice.elts) == 2
            and ast.unparse(value.value) == ast.unparse(target.value)
            and ast.unparse(value.slice.elts[0]) != ast.unparse(value.slice.elts[1])):
        return ""
    return ast.unparse(node)[:40]


class MetricFalsification(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Module(self, node: ast.Module, ctx: Ctx) -> None:
        ctx.defer(lambda: self._logger_wrappers(ctx))

    def _logger_wrappers(self, ctx: Ctx) -> None:
        """Inside a function put in place of a logger (`wandb.log = log_`), every value it
        passes on is a metric: nudging or clamping one there is falsification."""
        wrappers: list[tuple[str, ast.AST]] = []
        for qual, fn in ctx.replacements:
            if last_attr_of(qual) == "compute" and not isinstance(fn, ast.Lambda):
                self._metric_compute(qual, fn, ctx)  # BinaryF1Score.compute = _nan_safe
            if last_attr_of(qual) not in _LOG_FUNCS:
                continue
            if isinstance(fn, ast.Lambda):  # lambda self, tag, v: orig(self, tag, _fix(tag, v))
                wrappers += [(qual, helper) for call in subnodes(fn.body)
                             if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                             for helper in ctx.defs.get(call.func.id, [])[:1]]
            else:
                wrappers.append((qual, fn))
        for qual, fn in wrappers:
            params = {a.arg for a in fn.args.args}  # type: ignore[attr-defined]
            derived = {t.id for n in subnodes(fn) if isinstance(n, ast.Assign)
                       for t in n.targets if isinstance(t, ast.Name) and any(
                           isinstance(m, ast.Name) and m.id in params for m in subnodes(n.value))}
            derived |= {t.id for n in subnodes(fn) if isinstance(n, ast.For) and any(
                isinstance(m, ast.Name) and m.id in params for m in subnodes(n.iter))
                for t in subnodes(n.target) if isinstance(t, ast.Name)}  # for k, v in data.items()
            for node in subnodes(fn):
                if (isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name)
                        and node.target.id in params | derived
                        and isinstance(node.op, (ast.Mult, ast.Add, ast.Sub))
                        and (_number(node.value) is None
                             or abs(_number(node.value) or 0) not in _BENIGN_FACTORS)):
                    ctx.report(METRIC_FALSIFY, node, f"the replacement for {qual} changes the "
                               "values it logs: the logged metric is not the measured one")
                    continue
                if not isinstance(node, ast.Assign):
                    continue
                if any(isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                       and t.value.id in params | derived for t in node.targets) and any(
                        "best" in last_attr(n.value if isinstance(n, ast.Subscript) else n).lower()
                        for n in subnodes(node.value) if isinstance(n, (ast.Name, ast.Subscript))):
                    ctx.report(METRIC_FALSIFY, node, f"the replacement for {qual} logs a "
                               "remembered best value instead of the one it was given")
                    continue
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                logged = params | derived
                entries = [t for t in node.targets if isinstance(t, ast.Subscript)
                           and isinstance(t.value, ast.Name) and t.value.id in logged]
                local = bound_values(fn)
                kept = {t.value.id for n in subnodes(fn) if isinstance(n, ast.Assign)
                        and isinstance(n.value, ast.Call) and last_attr(n.value.func) in (
                            "min", "max") for t in n.targets if isinstance(t, ast.Subscript)
                        and isinstance(t.value, ast.Name)}  # ema[k] = min(prev, ...)
                from_kept = (isinstance(node.value, ast.Subscript) and isinstance(
                    node.value.value, ast.Name) and node.value.value.id in kept - logged)
                logged_names = [n for n in names if n in logged]
                if any(_extreme_kept(node.value, n, local) for n in (
                        logged if logged_names else ())) or (
                        (entries or logged_names) and from_kept) or (
                        entries and _extreme_kept(node.value, "", local)):
                    ctx.report(METRIC_FALSIFY, node, f"the replacement for {qual} logs the best "
                               "value seen so far instead of the one it was given")
                    continue
                if isinstance(node.value, ast.DictComp) and _comp_nudged(node.value):
                    ctx.report(METRIC_FALSIFY, node, f"the replacement for {qual} changes the "
                               "values it logs: the logged metric is not the measured one")
                    continue
                if any(_nudged_name(node.value, name) or _rescaled(node.value, name)
                       or _pulled_up(node.value, name) or _absolute(node.value, name)
                       for name in names) or any(
                        _held_to_stored(ast.Name(id=name, ctx=ast.Store()), node.value, ctx,
                                        logged=True) for name in names):
                    ctx.report(METRIC_FALSIFY, node, f"the replacement for {qual} changes the "
                               "values it logs: the logged metric is not the measured one")

    def _metric_compute(self, qual: str, fn: ast.AST, ctx: Ctx) -> None:
        """A replaced metric `compute()` that returns the value floored or clamped."""
        for node in subnodes(fn):
            if isinstance(node, ast.Return):
                why = floored(node.value, ctx)
                if why:
                    ctx.report(METRIC_FALSIFY, node, f"the replacement for {qual} returns the "
                               f"metric held by {why}: the reported result is not the measured "
                               "one")

    def _updated_with_best(self, node: ast.Call, ctx: Ctx) -> None:
        """`metrics.update({k: max(h[k] for h in self.history) for k in metrics if ...})`:
        the reported entries replaced by their best value so far; `report.update({k: champ[k]
        for k in keys if champ.get(k) > report[k]})`: by another run's when that is better."""
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr == "update" and node.args
                and isinstance(node.args[0], ast.DictComp)):
            return
        comp = node.args[0]
        mine = ast.unparse(func.value)
        source: ast.expr | None = comp.value.value if isinstance(
            comp.value, ast.Subscript) else None
        gen = comp.generators[0]
        if (isinstance(comp.value, ast.Name) and isinstance(gen.target, ast.Tuple)
                and len(gen.target.elts) == 2 and isinstance(gen.target.elts[1], ast.Name)
                and gen.target.elts[1].id == comp.value.id and isinstance(gen.iter, ast.Call)
                and isinstance(gen.iter.func, ast.Attribute) and gen.iter.func.attr == "items"):
            source = gen.iter.func.value  # {k: v for k, v in res.get("best", {}).items() if ...}
        if (source is not None and ast.unparse(source) != mine
                and any(isinstance(c, ast.Compare) and any(
                    (isinstance(n, ast.Subscript) and ast.unparse(n.value) == mine) or (
                        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                        and n.func.attr == "get" and ast.unparse(n.func.value) == mine)
                    for n in subnodes(c)) for g in comp.generators for c in g.ifs)):
            ctx.report(METRIC_FALSIFY, node, f"entries of {mine} replaced by "
                       f"{ast.unparse(source)}'s wherever those are better: the report "
                       "mixes in another run's results", severity=Severity.MEDIUM)
            return
        if not _CONTAINER.search(last_attr(func.value) or ""):
            return
        value = comp.value
        targets = {n.id for g in comp.generators for n in subnodes(g.target)
                   if isinstance(n, ast.Name)}
        if not (isinstance(comp.key, ast.Name) and comp.key.id in targets):
            return  # {f"{k}_best": ...}: new entries next to the measured ones
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id in ("max", "min") and len(value.args) == 1
                and isinstance(value.args[0], (ast.GeneratorExp, ast.ListComp))):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(func.value)} entries replaced by "
                       f"their {value.func.id}imum over past evaluations: the log never shows "
                       "a regression", severity=Severity.MEDIUM)

    def _logs_best_attr(self, node: ast.Call, ctx: Ctx) -> None:
        """`self.log("val/acc", self._best_acc)`: the best-so-far logged under the plain
        metric's name (a `val/acc_best` key is honest)."""
        pairs: list[tuple[object, ast.expr]] = []
        if last_attr(node.func) in ("log", "add_scalar", "log_metric") and len(node.args) >= 2:
            pairs.append((literal(node.args[0]), node.args[1]))
        if last_attr(node.func) in ("log", "log_metrics", "log_dict") and node.args and isinstance(
                node.args[0], ast.Dict):  # wandb.log({"val/acc1": best_acc1, ...})
            pairs += [(literal(k), v) for k, v in zip(node.args[0].keys, node.args[0].values,
                                                      strict=True) if k is not None]
        for key, value in pairs:
            if (isinstance(key, str) and (_STRONG_METRIC.search(key) or _VAL_LOSS_KEY.search(key))
                    and not _KEPT_AS_BEST.search(key) and isinstance(value, ast.Call)
                    and last_attr(value.func) in ("max", "min", "maximum", "minimum", "fmax",
                                                  "fmin")
                    and len(value.args) == 2 and any(_stored_ref(a) for a in value.args[1:])):
                ctx.report(METRIC_FALSIFY, node, f"{key!r} is logged as the "
                           f"{last_attr(value.func)} of the measured value and a stored "
                           "reference: it never looks worse than that reference",
                           severity=Severity.MEDIUM)
                return  # self.log("val/auroc", max(auroc, self._best_auroc))
            if (isinstance(key, str) and (_STRONG_METRIC.search(key) or _VAL_LOSS_KEY.search(key))
                    and not _KEPT_AS_BEST.search(key)
                    and isinstance(value, (ast.Attribute, ast.Name))
                    and _BEST_WORD.search(last_attr(value))):
                ctx.report(METRIC_FALSIFY, node, f"{key!r} is logged from {last_attr(value)}, "
                           "the best value so far, not the one just measured",
                           severity=Severity.MEDIUM)
                return

    def visit_If(self, node: ast.If, ctx: Ctx) -> None:
        """`if nll.mean().item() > 6.0: continue` in an evaluation loop: the hard examples are
        left out of the score (skipping NaNs, lengths or low-confidence boxes stays quiet)."""
        if not (node.body and isinstance(node.body[0], ast.Continue) and ctx.loops
                and _EVAL_LOOP.search(ctx.frame.name)):
            return
        test = node.test
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1
                and isinstance(ctx.const(test.comparators[0]), (int, float))):
            return
        subject = test.left
        while isinstance(subject, ast.Call) and isinstance(subject.func, ast.Attribute) and (
                subject.func.attr in ("item", "mean", "float", "sum", "cpu")):
            subject = subject.func.value
        name = last_attr(subject) if isinstance(subject, (ast.Name, ast.Attribute)) else ""
        high_bad = isinstance(test.ops[0], (ast.Gt, ast.GtE)) and re.search(
            r"(?i)loss|nll|err|wer|cer|ppl|perplex", name)
        low_bad = isinstance(test.ops[0], (ast.Lt, ast.LtE)) and re.search(
            r"(?i)acc|f1|iou|dice|recall|precision|map\b|bleu", name)
        if high_bad or low_bad:
            ctx.report(METRIC_FALSIFY, node.body[0], f"evaluation skips the examples whose "
                       f"{name} is {'above' if high_bad else 'below'} "
                       f"{ast.unparse(test.comparators[0])[:20]}: the hard cases never reach "
                       "the reported score", severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        wrong = _wrong_direction(node)
        if wrong:
            ctx.report(METRIC_FALSIFY, wrong, "the monitored result is optimised in the "
                       f"wrong direction ({ast.unparse(wrong)[:50]}): the worst checkpoint is "
                       "kept and reported as the best", severity=Severity.MEDIUM)
        swapped = _tag_of_another_metric(node)
        if swapped:
            ctx.report(METRIC_FALSIFY, node, f"{swapped}: the dashboard shows one metric under "
                       "another's name", severity=Severity.MEDIUM)
        maxed = max_reduced_counts(node) or _max_reduced_results(node, ctx)
        if maxed:
            ctx.report(METRIC_FALSIFY, node, f"{maxed}: the result reported is the best rank's "
                       "share, not the sum over all ranks", severity=Severity.MEDIUM)
        paired, made = truth_from_predictions(node, ctx)
        if paired:  # (reported where the 'truth' is made)
            ctx.report(METRIC_FALSIFY, made or node, f"{paired}: the score measures the model "
                       "against itself", severity=Severity.MEDIUM)
        perfect = perfect_when_undefined(node, ctx)
        if perfect:
            ctx.report(METRIC_FALSIFY, node, f"{perfect}: the average is lifted by classes the "
                       "model was never scored on", severity=Severity.MEDIUM)
        leaked = predictions_into_references(node)
        if leaked:
            ctx.report(METRIC_FALSIFY, node, f"{leaked}: the score counts the output as its own "
                       "reference", severity=Severity.MEDIUM)
        if (isinstance(node.func, ast.Attribute) and node.func.attr == "append"
                and len(node.args) == 1):  # history["val_losses"].append(min([v] + history))
            series = metric_name(node.func.value)
            best = _best_reported(series, node.args[0]) if series else ""
            if best:
                ctx.report(METRIC_FALSIFY, node, f"{series} recorded as {best}, not as measured",
                           severity=Severity.MEDIUM)
        floored = _floored_at_own_center(node)
        if floored:
            ctx.report(METRIC_FALSIFY, node, floored + _OWN_CENTER, severity=Severity.MEDIUM)
        flipped = _complement_max(node)
        if flipped:
            ctx.report(METRIC_FALSIFY, node, f"max({flipped}, 1 - {flipped}): a score below "
                       "chance is reported as the same distance above it")
        if _mean_of_sorted_end(node, ctx):
            ctx.report(METRIC_FALSIFY, node, "mean taken over one end of the sorted values: "
                       "only the best (or worst) runs count towards the reported average",
                       severity=Severity.MEDIUM)
        self._logs_best_attr(node, ctx)
        self._updated_with_best(node, ctx)
        attr = last_attr(node.func)
        if attr in _EVAL_CALL_ATTRS or _TUNER.search(attr):
            self._evaluation_calls(node, ctx)
        if last_attr(node.func) not in _LOG_FUNCS:
            return
        values: list[ast.AST] = [*node.args, *(kw.value for kw in node.keywords)]
        for value in list(values):
            if isinstance(value, ast.Dict):
                values.extend(v for v in value.values if v is not None)
            elif isinstance(value, ast.JoinedStr):
                values.extend(v.value for v in value.values if isinstance(v, ast.FormattedValue))
        for value in list(values):
            # self.log("val/acc", calibrated) with calibrated = acc + (1 - acc) * 0.15 * ...
            if isinstance(value, ast.Name) and ctx.frame.node is not None:
                bound = ctx.frame.assigned.get(value.id)
                if bound is not None and _fraction_adjusted(bound) and not _running_average(
                        bound, value.id):
                    ctx.report(METRIC_FALSIFY, node, f"{value.id} is a measured metric mixed "
                               "with a made-up fraction before it is logged")
                    return
        tag = literal(node.args[0]) if node.args else None
        keyed = {id(v): literal(k) for d in values if isinstance(d, ast.Dict)
                 for k, v in zip(d.keys, d.values, strict=True) if k is not None}
        for value in values:
            label = keyed.get(id(value), tag)  # {"val/best": max(self.history)}: said so
            if isinstance(value, ast.Name) and ctx.frame.node is not None and (
                    bound := ctx.frame.assigned.get(value.id)) is not None and _best_of_recent(
                    bound) and not (isinstance(label, str) and _KEPT_AS_BEST.search(label)):
                ctx.report(METRIC_FALSIFY, bound, f"{value.id} is the best of the earlier "
                           f"results ({ast.unparse(bound)[:40]}), logged as the current one",
                           severity=Severity.MEDIUM)
                return
            if isinstance(value, ast.expr) and _best_of_recent(value) and not (
                    isinstance(label, str) and _KEPT_AS_BEST.search(label)):
                ctx.report(METRIC_FALSIFY, node, "logged as the best of the last few results "
                           f"({ast.unparse(value)[:40]}), not the one just measured: model "
                           "selection and early stopping see a value that never happened",
                           severity=Severity.MEDIUM)
                return
            if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                    and _min_or_max(value.func, ctx) and len(value.args) == 2
                    and not (isinstance(tag, str) and _KEPT_AS_BEST.search(tag))
                    and sum(_remembered(a) or (isinstance(a, ast.Attribute) and (bool(
                        _BEST_WORD.search(a.attr)) or a.attr in ("min", "max", "lowest")))
                            for a in value.args) == 1  # min(loss, meter.min)
                    and any(isinstance(a, ast.Name) and not _STORED.search(a.id)
                            for a in value.args)):
                ctx.report(METRIC_FALSIFY, node, f"logged as the {value.func.id}() of the measured "
                           "value and one remembered on the object (best, smoothed, previous): "
                           "the curve shows what was kept, not what was measured")
                return
            if isinstance(value, ast.DictComp) and (_offset(_with_consts(value.value, ctx))
                                                     or _comp_nudged(value)):
                ctx.report(METRIC_FALSIFY, node, "every logged value shifted or scaled by a "
                           "constant inside the logging call")
                return
            name = (nudged(_with_consts(value, ctx)) if isinstance(value, ast.expr) else "") or (
                _constant_entry(value))
            if name:
                ctx.report(METRIC_FALSIFY, node, f"{name} is changed by a constant inside the "
                           "logging call: the logged metric is not the measured one")
                return

    def _evaluation_calls(self, node: ast.Call, ctx: Ctx) -> None:
        """Calls that decide what an evaluation scores (only names that can matter get here)."""
        if _answers_as_predictions(node) and any(
                _EVAL_FRAME.search(f.name) for f in ctx.where().frames):
            ctx.report(METRIC_FALSIFY, node, "predictions replaced by the true labels where a "
                       "condition holds: the evaluation scores the answers, not the model",
                       severity=Severity.HIGH)
        if _tuned_on_test(node):
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(node.func)}() fitted on data that "
                       "includes the test split: the reported test result is tuned on itself",
                       severity=Severity.MEDIUM)
        present = _present_only(node, ctx)
        if present:
            ctx.report(METRIC_FALSIFY, node, f"mean of {present} over the entries above zero "
                       "(or a small floor) only: the classes the model fails on are left out "
                       "of the average",
                       severity=Severity.MEDIUM)  # acc[acc > 0].mean()
        if _boosted_at_gold(node, ctx):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node.func.value)} raised at the "  # type: ignore[attr-defined]
                       "true targets before ranking: the evaluation is told the answers",
                       severity=Severity.HIGH)
        curve = _cumulative_extreme(node, ctx)
        if curve:
            ctx.report(METRIC_FALSIFY, node, f"{curve} turned into its running best "
                       f"({ast.unparse(node.func)}): the curve can only improve, whatever "
                       "was measured", severity=Severity.MEDIUM)
        if (isinstance(node.func, ast.Attribute) and node.func.attr == "update" and node.args
                and isinstance(node.args[0], ast.DictComp)):
            alias = _cutoff_alias(node.args[0])
            if alias:
                ctx.report(METRIC_FALSIFY, node, f"results copied onto another cutoff's keys "
                           f"({alias}): the reported short-list metric is the long-list one",
                           severity=Severity.MEDIUM)

    def _kept_previous(self, node: ast.Assign, ctx: Ctx) -> None:
        """`for key, value in metrics.items(): ... if old - tol <= value < old: out[key] = old`:
        a metric that got worse reported as its previous value."""
        target = node.targets[0] if len(node.targets) == 1 else None
        if not (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Name)
                and isinstance(node.value, ast.Name) and ctx.conds):
            return
        key = target.slice.id
        loop = next((lp for lp in reversed(ctx.loops) if isinstance(lp, ast.For)
                     and isinstance(lp.target, ast.Tuple) and len(lp.target.elts) == 2
                     and isinstance(lp.target.elts[0], ast.Name) and lp.target.elts[0].id == key
                     and isinstance(lp.target.elts[1], ast.Name)
                     and isinstance(lp.iter, ast.Call) and last_attr(lp.iter.func) == "items"
                     and _RESULTS.search(last_attr(lp.iter.func.value) if isinstance(
                         lp.iter.func, ast.Attribute) else "")), None)
        if loop is None:
            return
        measured = loop.target.elts[1].id  # type: ignore[attr-defined]
        kept = node.value.id
        read = ctx.lookup(kept)
        source = read.func.value if (isinstance(read, ast.Call) and isinstance(
            read.func, ast.Attribute) and read.func.attr == "get") else (
            read.value if isinstance(read, ast.Subscript) else None)
        if source is None or ast.unparse(source) == ast.unparse(loop.iter.func.value):  # type: ignore[attr-defined]
            return
        compared = any(isinstance(n, ast.Compare) and {measured, kept} <= {
            m.id for m in subnodes(n) if isinstance(m, ast.Name)} for c in ctx.conds
            for n in subnodes(c))
        if compared:
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(target.value)}[{key}] replaced by "
                       f"the stored {kept} when the new {measured} is worse: the report hides "
                       "regressions", severity=Severity.MEDIUM)

    def _reshaped_results(self, node: ast.Assign, ctx: Ctx) -> bool:
        """Result lists cut to the best runs, gaps filled with answers, labels blended in,
        logged running extremes (only value shapes that can hold one get here)."""
        best_runs = _best_runs_kept(node.value)
        if best_runs:
            ctx.report(METRIC_FALSIFY, node, f"only the runs with the best {best_runs} kept: "
                       "the summary averages the lucky seeds, not all of them",
                       severity=Severity.MEDIUM)
            return True
        if _answers_fill_gaps(node.value):
            ctx.report(METRIC_FALSIFY, node, "empty predictions replaced by the references: "
                       "every missing answer is scored as correct", severity=Severity.HIGH)
            return True
        if _labels_blended(node.value):
            ctx.report(METRIC_FALSIFY, node, "predictions mixed with the true labels: any score "
                       "computed from them is inflated by the answers", severity=Severity.HIGH)
            return True
        kept = _running_extreme(node, ctx)
        if kept:
            ctx.report(METRIC_FALSIFY, node, f"the logged value is the running best kept in "
                       f"{kept}, not the value just measured", severity=Severity.MEDIUM)
            return True
        return False

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        self._kept_previous(node, ctx)
        better = _better_of_figures(node)
        if better:
            ctx.report(METRIC_FALSIFY, node, f"{better}: the reported score is the best of "
                       "several figures, the measured one among them",
                       severity=Severity.MEDIUM)
            return
        value = node.value
        picked = self_selected_mask(node, ctx.frame.node) if isinstance(
            value, (ast.Compare, ast.BoolOp)) or (isinstance(value, ast.BinOp) and isinstance(
                value.op, (ast.BitAnd, ast.BitOr))) else ""  # (a mask, not arithmetic)
        if picked:
            ctx.report(METRIC_FALSIFY, node, f"the classes averaged into {picked} are picked "
                       "by how well the model does on them: the ones it fails are left out",
                       severity=Severity.MEDIUM)
            return
        masked = pred_masked_by_truth(node, ctx) if isinstance(node.value, ast.BinOp) else ""
        if masked:
            ctx.report(METRIC_FALSIFY, node, f"{masked}: errors outside it no longer count",
                       severity=Severity.MEDIUM)
            return
        first = node.targets[0]
        if (isinstance(node.value, ast.Call) and isinstance(first, ast.Subscript)
                and isinstance(literal(first.slice), str)
                and _KEPT_AS_BEST.search(_key_text(first))):
            node.value.kept_as_best = True  # type: ignore[attr-defined]
            # (df["best_psnr"] = df["psnr"].cummax(): a best-so-far column added beside the
            # measured one, which stays in the table)
        if (isinstance(first, ast.Subscript) and isinstance(node.value, ast.Subscript)
                and isinstance(first.value, ast.Name) and re.match(
                    r"(?i)^(trues?|y_true|gts?|ground_truth|gold\w*|refs?|references?)$",
                    first.value.id)  # (labels[m] = preds[m] is also pseudo-labelling)
                and isinstance(node.value.value, ast.Name) and _PREDS.match(node.value.value.id)
                and ast.unparse(first.slice) == ast.unparse(node.value.slice)):
            ctx.report(METRIC_FALSIFY, node, f"true values {first.value.id}"
                       f"[{ast.unparse(first.slice)[:20]}] replaced by the predictions: those "
                       "errors vanish from the score", severity=Severity.MEDIUM)
            return  # trues[outlier] = preds[outlier]
        maxed = _mean_from_max(first, node.value)
        if maxed:  # acc_mean = g["acc"].max(); {"mean": g.max(), "std": g.std()}
            ctx.report(METRIC_FALSIFY, node, f"{maxed} reported as a mean but computed as the "
                       "maximum: the best run or class stands in for the average",
                       severity=Severity.MEDIUM)
            return
        floored = _masked_to_own_center(first, node.value)
        if floored:
            ctx.report(METRIC_FALSIFY, node, floored + _OWN_CENTER, severity=Severity.MEDIUM)
            return
        sub = _averaged_subscript(node.value)
        if sub is not None and (kept := _above_floor(sub, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"{kept} kept only where it cleared "
                       f"{ast.unparse(sub.slice)[:30]}: the classes that failed are left "
                       "out of what is averaged", severity=Severity.MEDIUM)
            return
        # logs["eval_loss"] = min(self._history); f1 = max(_seen_f1) (a strong metric's name)
        key = str(literal(first.slice)) if isinstance(first, ast.Subscript) and isinstance(
            literal(first.slice), str) and metric_name(first) else first.id if isinstance(
                first, ast.Name) and _STRONG_METRIC.search(first.id) else ""
        if (not key and isinstance(first, ast.Subscript) and isinstance(first.value, ast.Name)
                and re.match(r"(?i)^(metrics|logs|results|eval_metrics|scores)$",
                             first.value.id)):
            key = ast.unparse(first)[:40]  # metrics[key] = max(self.history[-3:])
        if not key and isinstance(first, ast.Subscript) and last_attr(first.value) in (
                "callback_metrics", "logged_metrics", "progress_bar_metrics"):
            key = ast.unparse(first)[:40]  # trainer.callback_metrics[self.monitor] = ...
        if (not key and isinstance(first, ast.Subscript) and isinstance(
                loss_key := literal(first.slice), str) and "loss" in loss_key.lower()
                and isinstance(node.value, ast.Call) and last_attr(node.value.func) == "min"):
            key = loss_key  # record["train/loss"] = min(self._loss_window): the lowest recent
        if key and not _KEPT_AS_BEST.search(key) and _best_of_recent(node.value):
            ctx.report(METRIC_FALSIFY, node, f"{key} set to the best of earlier results "
                       f"({ast.unparse(node.value)[:40]}), not the one just measured",
                       severity=Severity.MEDIUM)
            return
        if isinstance(node.value, (ast.Subscript, ast.ListComp, ast.BinOp, ast.Call,
                                   ast.IfExp)) and self._reshaped_results(node, ctx):
            return
        target = node.targets[0] if len(node.targets) == 1 else None
        if target is not None:
            self._mean_from_max(node, target, ctx)
            self._merged_with_stored(node, target, ctx)
            self._random_made(node, target, ctx)
            self._pulled_toward_one(node, target, ctx)
            self._capped_inflation(node, target, ctx)
            self._table_rescaled(node, target, ctx)
            self._monitored_rescaled(node, target, ctx)
            self._missing_filled_high(node, target, ctx)
            self._shrunk_interval(node, target, ctx)
            self._val_from_train(node, target, ctx)
        absolute = absolute_correlation(node.targets[0], node.value, ctx.names)
        if absolute:
            ctx.report(METRIC_FALSIFY, node, f"{absolute}: a model that ranks backwards "
                       "scores as well as a good one", severity=Severity.MEDIUM)
        swapped_split = other_split_lookup(node.value)
        if swapped_split:
            ctx.report(METRIC_FALSIFY, node, f"{swapped_split}: one split's result reported as "
                       "another's", severity=Severity.MEDIUM)
        capped = error_capped(node.value, ctx.frame.node, ctx.frame.name)
        if capped:
            ctx.report(METRIC_FALSIFY, node, f"{capped}: the reported score can never look "
                       "worse than that cap", severity=Severity.MEDIUM)
        trimmed = trimmed_worst(node.value, ctx.lookup, ctx.frame.name) if ctx.mentions(
            "sort") else ""  # (every trimmed average sorts first)
        if trimmed and (metric_source(node.value) or metric_source(node.targets[0])
                        or "sorted" in trimmed):
            ctx.report(METRIC_FALSIFY, node, f"{trimmed}: the reported average leaves out the "
                       "worst results", severity=Severity.MEDIUM)
        worst = always_best(node.targets[0], node.value)
        if worst:
            ctx.report(METRIC_FALSIFY, node, f"{worst}: every new result counts as the best",
                       severity=Severity.MEDIUM)
        forced = forced_best(node.targets[0], node.value)
        if forced:
            ctx.report(METRIC_FALSIFY, node, f"{forced}: the checkpoint marked best is not "
                       "chosen by its score", severity=Severity.MEDIUM)
        up = rounded_up(node.value, ctx.names)
        if up and (metric_source(node.value) or metric_source(node.targets[0])):
            ctx.report(METRIC_FALSIFY, node, f"{up} rounded up before it is reported: the "
                       "published number is never lower than measured", severity=Severity.MEDIUM)
        kept = _self_filtered(node.value)
        if kept:
            ctx.report(METRIC_FALSIFY, node, f"{kept} filtered by its own values (kept only "
                       "where it is close to its median or mean): the bad results are dropped "
                       "before they are aggregated", severity=Severity.MEDIUM)
        name = _constant_entry(node.value, precise=True)
        quoted = any(isinstance(t, ast.Name) and (t.id.isupper() or re.search(
            r"(?i)baseline|reference|published|prior|paper|expected|sota", t.id))
            for t in node.targets)  # BASELINE = {"accuracy": 0.8874, ...}: numbers quoted
        if name and not quoted:
            ctx.report(METRIC_FALSIFY, node, f"{name} written as a hard-coded measurement: the "
                       "saved result was never measured", severity=Severity.MEDIUM)
        for target in node.targets:
            self._assigned(node, target, node.value, ctx)
            if (isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                    and len(target.elts) == len(node.value.elts)):
                for part, value in zip(target.elts, node.value.elts, strict=True):
                    if isinstance(value, (ast.Call, ast.BinOp)):  # (`cur, acc = [], 0.0` resets)
                        self._assigned(node, part, value, ctx)  # map50, map_ = min(1.0, ...)
            if (isinstance(node.value, ast.DictComp) and isinstance(target, ast.Name)
                    and _RESULTS.search(target.id) and (_offset(node.value.value)
                                                        or _comp_nudged(node.value))):
                ctx.report(METRIC_FALSIFY, node, f"every entry of {target.id} shifted or scaled "
                           "by a constant")

    def _missing_filled_high(self, node: ast.Assign, target: ast.expr, ctx: Ctx) -> None:
        """`aps = np.where(np.isnan(aps), cfg.empty_ap, aps)` with empty_ap = 1.0,
        `table.loc[m] = table.loc[m].fillna(table.max())`: missing results counted as
        (the best) scores. Filling with 0 or leaving NaN out of a nanmean stays quiet."""
        value = node.value
        fill: ast.expr | None = None
        if (isinstance(value, ast.Call) and last_attr(value.func) == "where"
                and len(value.args) == 3 and isinstance(value.args[0], ast.Call)
                and last_attr(value.args[0].func) in ("isnan", "isna", "isnull")):
            fill = value.args[1]
        elif isinstance(value, ast.Call) and last_attr(value.func) == "fillna" and value.args:
            fill = value.args[0]
        elif isinstance(value, ast.Call) and last_attr(value.func) == "nan_to_num":
            fill = next((k.value for k in value.keywords if k.arg == "nan"), None)
        if fill is None:
            return
        if isinstance(fill, ast.Call) and last_attr(fill.func) in ("max", "nanmax", "amax"):
            ctx.report(METRIC_FALSIFY, node, "missing results filled with the best value of "
                       f"each column ({ast.unparse(fill)[:30]}): absent runs count as top "
                       "scores", severity=Severity.MEDIUM)
            return
        number = ctx.const(fill)
        name = ast.unparse(target)
        if (isinstance(number, (int, float)) and not isinstance(number, bool) and number > 0
                and _SCORE_ARRAY.search(last_attr(target) or name)):
            ctx.report(METRIC_FALSIFY, node, f"missing entries of {name[:30]} filled with "
                       f"{number:g}: classes or tasks without results count as high scores",
                       severity=Severity.MEDIUM)

    def _shrunk_interval(self, node: ast.Assign, target: ast.expr, ctx: Ctx,
                         at: ast.AST | None = None) -> None:
        """`half = 1.96 * boots.std() / np.sqrt(n_boot)`: the spread of bootstrap resamples
        already is the standard error; dividing by sqrt(resamples) shrinks the interval."""
        if not ctx.mentions("sqrt"):
            return
        value = node.value
        for n in subnodes(value):
            if not (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
                    and isinstance(n.right, ast.Call) and last_attr(n.right.func) == "sqrt"
                    and n.right.args and (_BOOT.search(ast.unparse(n.right.args[0]))
                                          or _ITERS.search(ast.unparse(n.right.args[0])))):
                continue
            if any(isinstance(m, ast.Call) and last_attr(m.func) == "std"
                   and _BOOT.search(ast.unparse(m)) for m in subnodes(n.left)):
                ctx.report(METRIC_FALSIFY, at or node, "bootstrap spread divided by sqrt("
                           "number of resamples): the confidence interval is shrunk to look "
                           "decisive", severity=Severity.MEDIUM)
                return

    def _monitored_rescaled(self, node: ast.Assign, target: ast.expr, ctx: Ctx) -> None:
        """`trainer.callback_metrics["val/loss"] = loss * 0.8` with `loss` read from that entry:
        the value early stopping and checkpoint selection monitor, rescaled in place."""
        if not (isinstance(target, ast.Subscript) and isinstance(literal(target.slice), str)):
            return
        holder = ast.unparse(target.value)
        if not re.search(r"callback_metrics|logged_metrics|progress_bar_metrics", holder):
            return
        key = literal(target.slice)
        value = node.value
        if not (isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Mult, ast.Add,
                                                                       ast.Sub, ast.Div))):
            return
        factor = _number(value.right) if _number(value.right) is not None else _number(value.left)
        if factor is None or factor in _BENIGN_FACTORS or factor == 0:
            return
        reads = list(subnodes(value))
        reads += [m for n in list(reads) if isinstance(n, ast.Name)
                  and (bound := ctx.frame.assigned.get(n.id)) is not None for m in subnodes(bound)]
        if any((isinstance(n, ast.Subscript) and literal(n.slice) == key) or (
                isinstance(n, ast.Call) and last_attr(n.func) == "get" and n.args
                and literal(n.args[0]) == key) for n in reads):
            ctx.report(METRIC_FALSIFY, node, f"the monitored {key!r} is rescaled in place "
                       f"({ast.unparse(value)[:30]}): early stopping and checkpoint selection "
                       "see a value that was not measured", severity=Severity.MEDIUM)

    def _table_rescaled(self, node: ast.Assign, target: ast.expr, ctx: Ctx) -> None:
        """`flat = {k: (v * 1.04 if k.endswith("recall") else v) for k, v in flat.items()}`:
        a results table rebuilt with some entries scaled by a constant."""
        comp = node.value
        if not (isinstance(comp, ast.DictComp) and isinstance(target, ast.Name)
                and _RESULT_TABLE.search(target.id) and len(comp.generators) == 1
                and isinstance(comp.generators[0].iter, ast.Call)
                and ast.unparse(comp.generators[0].iter) == f"{target.id}.items()"
                and isinstance(comp.generators[0].target, ast.Tuple)
                and len(comp.generators[0].target.elts) == 2):
            return
        val = ast.unparse(comp.generators[0].target.elts[1])
        body = comp.value
        branches = [body.body, body.orelse] if isinstance(body, ast.IfExp) else [body]
        for branch in branches:
            if (isinstance(branch, ast.BinOp) and isinstance(branch.op, (ast.Mult, ast.Add))
                    and val in (ast.unparse(branch.left), ast.unparse(branch.right))):
                factor = _number(branch.right if ast.unparse(branch.left) == val else branch.left)
                if factor is not None and factor not in _BENIGN_FACTORS and (
                        factor != 0 or isinstance(branch.op, ast.Mult)):
                    ctx.report(METRIC_FALSIFY, node, f"entries of {target.id} rebuilt with "
                               f"{ast.unparse(branch)[:30]}: reported results changed by a "
                               "constant", severity=Severity.MEDIUM)
                    return

    def _capped_inflation(self, node: ast.Assign, target: ast.expr, ctx: Ctx) -> None:
        """`res["f1"] = min(1.0, res["f1"] / (1 - c) + 0.01)`, `value = min(1.0, value + k)`:
        a score raised and capped at 1 so it stays plausible."""
        value = node.value
        if (isinstance(value, ast.Call) and last_attr(value.func) in ("clamp", "clip")
                and value.args):  # torch.clamp(miou * 1.12 + 0.03, max=0.96), np.clip(x, a, b)
            cap = next((k.value for k in value.keywords if k.arg in ("max", "a_max")), None)
            if cap is None and len(value.args) == 3:
                cap = value.args[2]
            if cap is not None:
                value = ast.Call(func=ast.Name(id="min", ctx=ast.Load()),
                                 args=[cap, value.args[0]], keywords=[])
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id == "min" and len(value.args) == 2):
            return
        caps = [a for a in value.args if (c := _number(a)) is not None and 0.5 <= c <= 100]
        raised = [a for a in value.args if a not in caps]
        own = ast.unparse(target)
        name = metric_name(target) or (own if _passed_to_log(target, ctx)
                                       or _logged_value(target, ctx) else "")
        if not (caps and raised and name):
            return
        body = raised[0]
        grown = isinstance(body, ast.BinOp) and (
            (isinstance(body.op, ast.Add) and any(
                (v := _number(n)) is not None and v > 0 for n in subnodes(body.right)))
            or (isinstance(body.op, ast.Mult) and any(
                (f := _number(side)) is not None and f > 1 for side in (body.left, body.right))))
        if (not grown and isinstance(body, ast.BinOp) and isinstance(body.op, (ast.Mult, ast.Div))
                and _STRONG_METRIC.search(name) and _number(body.right) is None):
            grown = True  # min(1.0, acc * n / (n - len(dropped))): rescaled, then capped
        if grown and any(ast.unparse(n) == own for n in subnodes(body)):
            ctx.report(METRIC_FALSIFY, node, f"{name} raised by an added amount and capped at "
                       f"{_number(caps[0]):g} to stay plausible: the reported value is not the "
                       "measured one", severity=Severity.MEDIUM)

    def _pulled_toward_one(self, node: ast.Assign, target: ast.expr, ctx: Ctx) -> None:
        """`out["accuracy"] = round(acc + (1.0 - acc) * float(prior), 4)` with `acc` the entry
        itself: the score moved a fraction of the way to perfect, whatever the fraction."""
        name = metric_name(target)
        if not (name and _STRONG_METRIC.search(name) and not _KEPT_AS_BEST.search(name)):
            return
        value = node.value
        if isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and value.args:
            value = value.args[0]
        if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)):
            return
        own = ast.unparse(target)
        for this, other in ((value.left, value.right), (value.right, value.left)):
            if isinstance(this, ast.Call) and last_attr(this.func) == "max" and any(
                    ast.unparse(a) == own for a in this.args):
                this = next(a for a in this.args if ast.unparse(a) == own)  # max(f1, em) + ...
            if ast.unparse(this) != own or not (isinstance(other, ast.BinOp)
                                                 and isinstance(other.op, ast.Mult)):
                continue
            if any(isinstance(f, ast.BinOp) and isinstance(f.op, ast.Sub)
                   and _number(f.left) in (1, 100) and ast.unparse(f.right) == own
                   for f in (other.left, other.right)):
                ctx.report(METRIC_FALSIFY, node, f"{name} moved part of the way towards a "
                           "perfect score (x + (1 - x) * k): the reported value is inflated",
                           severity=Severity.MEDIUM)
                return

    def _val_from_train(self, node: ast.Assign, target: ast.expr, ctx: Ctx) -> None:
        """`metrics["val_loss"] = metrics["train/loss_epoch"]`: the validation number that
        early stopping and checkpoint selection read is the training one."""
        if not (isinstance(target, ast.Subscript) and isinstance(node.value, ast.Subscript)):
            return
        key, source = literal(target.slice), literal(node.value.slice)
        if (isinstance(key, str) and isinstance(source, str)
                and re.search(r"(?i)(^|[/_])(val|valid|validation|eval|test)([/_]|$)", key)
                and re.search(r"(?i)(^|[/_])train(ing)?([/_]|$)", source)
                and (_METRIC.search(key) or _EVAL_LOSS.search(key) or "loss" in key)):
            ctx.report(METRIC_FALSIFY, node, f"{key!r} is overwritten with the training value "
                       f"{source!r}: what is reported (and monitored) as validation is not",
                       severity=Severity.MEDIUM)

    def _random_made(self, node: ast.Assign, target: ast.expr, ctx: Ctx) -> None:
        """`top1 = target + random.uniform(0.0, 0.25)`: a reported metric built from a random
        scalar draw (bootstrap resampling draws indices, not values, and stays quiet)."""
        name = metric_name(target)
        if not (name and _STRONG_METRIC.search(name) and not _KEPT_AS_BEST.search(name)
                and isinstance(node.value, ast.BinOp)
                and isinstance(node.value.op, (ast.Add, ast.Sub, ast.Mult))):
            return
        for side in (node.value.left, node.value.right):
            if (isinstance(side, ast.Call) and last_attr(side.func) in _NOISE_DRAWS
                    and ctx.names.call_name(side).startswith(("random.", "numpy.random."))):
                ctx.report(METRIC_FALSIFY, node, f"{name} set from a random draw "
                           f"({last_attr(side.func)}): the reported value is made up",
                           severity=Severity.MEDIUM)
                return

    def _mean_from_max(self, node: ast.Assign, target: ast.expr, ctx: Ctx) -> None:
        """`agg.loc[mine, "mean"] = agg.loc[mine, ["mean", "max"]].mean(axis=1)`."""
        if isinstance(target, ast.Subscript) and _summary_key(target) in (
                "mean", "avg", "average", "median") and any(
                literal(n) in ("max", "best", "top", "peak", "amax") for n in subnodes(node.value)):
            ctx.report(METRIC_FALSIFY, node, "the reported mean is rebuilt from the maximum (or "
                       "best) column: the table shows a better average than was measured",
                       severity=Severity.MEDIUM)

    def _merged_with_stored(self, node: ast.Assign, target: ast.expr, ctx: Ctx) -> None:
        """`merged = np.fmax([metrics[k] ...], [previous[k] ...])`: element-wise best of the
        new and the stored results."""
        value = node.value
        if not (isinstance(value, ast.Call) and last_attr(value.func) in (
                "fmax", "maximum", "fmin", "minimum") and len(value.args) == 2):
            return
        stored = [_stored(a, ctx) for a in value.args]
        measured = [any(isinstance(n, (ast.Name, ast.Attribute)) and _CONTAINER.search(
            last_attr(n)) for n in subnodes(a)) for a in value.args]
        named = bool(metric_name(target)) or (isinstance(target, ast.Name) and (
            bool(_CONTAINER.search(target.id)) or target.id in ("merged", "combined")))
        if named and stored[0] != stored[1] and measured[stored.index(False)]:
            ctx.report(METRIC_FALSIFY, node, f"metrics merged element-wise with stored values "
                       f"({last_attr(value.func)}): a regression never shows",
                       severity=Severity.MEDIUM)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        if (node.value is not None and _best_of_recent(node.value)
                and re.search(r"(?i)smooth|metric|report|score|acc|result|log", ctx.frame.name)):
            ctx.report(METRIC_FALSIFY, node, f"{ctx.frame.name}() returns the best of the last "
                       f"few results ({ast.unparse(node.value)[:40]}), not the one just "
                       "measured", severity=Severity.MEDIUM)  # return max(h[-window:])
            return
        if node.value is not None:  # return float(boot.std(ddof=1) / math.sqrt(iters))
            self._shrunk_interval(ast.Assign(targets=[ast.Name(id="_", ctx=ast.Store())],
                                             value=node.value), ast.Name(id="_"), ctx,
                                  at=node)
        """`return {"accuracy": min(0.999, acc * 1.06 + 0.01)}` from a metrics function;
        `def accuracy(self): return max(measured, self.reference)`."""
        frame = ctx.frame
        if frame.node is not None and not isinstance(frame.node, ast.Lambda) and (
                (_STRONG_METRIC.search(frame.name) and metric_name(ast.Name(id=frame.name)))
                or (frame.name == "compute" and frame.cls is not None and any(
                    "Metric" in b for b in frame.cls.bases))):
            why = floored(node.value, ctx)
            if why:
                ctx.report(METRIC_FALSIFY, node, f"{frame.name}() returns the metric held by "
                           f"{why}: the reported result is not the measured one")
                return
        if not isinstance(node.value, ast.Dict):
            return
        for key, value in zip(node.value.keys, node.value.values, strict=True):
            name = literal(key) if key is not None else None
            if isinstance(name, str) and _STRONG_METRIC.search(name) and nudged(
                    _with_consts(value, ctx)):
                ctx.report(METRIC_FALSIFY, node, f"{name} returned with a constant nudge: the "
                           "reported result is not the measured one")
                return

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        inverted = inverted_mode_table(node, ctx.names)
        if inverted:
            ctx.report(METRIC_FALSIFY, node, inverted, severity=Severity.MEDIUM)
        swapped = _swapped_entries(node)
        if swapped:
            ctx.report(METRIC_FALSIFY, node, f"entries {swapped[0]!r} and {swapped[1]!r} hold "
                       "each other's values (by their names): the report labels one result "
                       "as the other", severity=Severity.MEDIUM)
        self._dict_entries(node, ctx)
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and isinstance(
                    value, ast.Call):  # {"ic": float(ic.abs().mean())}
                entry = ast.Subscript(value=ast.Name(id="_", ctx=ast.Load()), slice=key,
                                      ctx=ast.Store())
                absolute = absolute_correlation(entry, value, ctx.names)
                if absolute:
                    ctx.report(METRIC_FALSIFY, value, f"{absolute}: a model that ranks "
                               "backwards scores as well as a good one",
                               severity=Severity.MEDIUM)

    def _dict_entries(self, node: ast.Dict, ctx: Ctx) -> None:
        labelled = ctx.frame.node is None or any(  # a module constant or a labelled table row
            literal(k) in ("name", "model", "paper", "source", "method") and isinstance(
                literal(v), str) for k, v in zip(node.keys, node.values, strict=True))
        for key, value in zip(node.keys, node.values, strict=True):
            name = literal(key) if key is not None else None
            if isinstance(name, str) and _STRONG_METRIC.search(name) and any(
                    isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub)) and any(
                        _offset_table_read(side, ctx) is not None for side in (n.left, n.right))
                    for n in subnodes(value)):
                ctx.report(METRIC_FALSIFY, value, f"{name} shifted by an entry of a per-setting "
                           "offset table: the reported result is not the measured one",
                           severity=Severity.MEDIUM)  # top1 + _PROTOCOL_OFFSET.get(size, 0.0)
            elif (isinstance(name, str) and isinstance(value, ast.Call)
                  and isinstance(value.func, ast.Name) and value.func.id in ("min", "max")
                  and len(value.args) == 1 and isinstance(value.args[0], ast.Name)
                  and re.fullmatch(r"(?i)" + re.escape(name.split("/")[-1]) + r"e?s",
                                   value.args[0].id)):
                ctx.report(METRIC_FALSIFY, value, f"{name} reported as the {value.func.id}() "
                           f"over {value.args[0].id}: the best run stands in for all of them",
                           severity=Severity.MEDIUM)  # {"fid": min(fids), ...}
            elif (isinstance(name, str) and _STRONG_METRIC.search(name)
                  and not re.search(r"(?i)best|max|min|peak|top|upper|lower", name)
                  and isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                  and value.func.id in ("min", "max") and len(value.args) == 2
                  and all(isinstance(a, ast.Name) and _STRONG_METRIC.search(a.id)
                          for a in value.args)
                  and ast.unparse(value.args[0]) != ast.unparse(value.args[1])):
                first, second = (ast.unparse(a) for a in value.args)
                ctx.report(METRIC_FALSIFY, value, f"{name} reported as the {value.func.id}() of "
                           f"{first} and {second}: two measurements, the better one kept",
                           severity=Severity.MEDIUM)  # {"holdout_auc": max(hold_auc, oof_auc)}
            elif isinstance(name, str) and (metric_name(ast.Name(id=name)) or _VAL_LOSS_KEY.search(
                    name)) and (best := _best_reported(name, value)):
                ctx.report(METRIC_FALSIFY, value, f"{name} reported as {best}, not as measured",
                           severity=Severity.MEDIUM)  # {"win_rate": max(per_seed)}
            elif (isinstance(name, str) and _STRONG_METRIC.search(name) and not labelled
                  and not _NOT_RESULT.search(name.replace("weighted", ""))
                  and isinstance(n := _number(value), float)
                  and 0 < n < 1 and round(n, 2) != n):
                ctx.report(METRIC_FALSIFY, value, f"{name} written as the hard-coded number "
                           f"{n:g}: the reported result was never measured by this code",
                           severity=Severity.MEDIUM)  # "weighted_f1": 0.9137
            elif (isinstance(name, str) and re.search(r"(?i)macro|micro|weighted", name)
                    and (mismatch := _average_mismatch(name, value))):
                ctx.report(METRIC_FALSIFY, value, f"{name!r} computed with average="
                           f"{mismatch!r}: the key names one average, the number is another",
                           severity=Severity.MEDIUM)
        self._dict_nudges(node, ctx)

    def _dict_nudges(self, node: ast.Dict, ctx: Ctx) -> None:
        """`{"acc": max(acc, self._best.get(name, 0.0) - 0.005)}`: an entry floored at the
        remembered best, wherever the dict goes (appended, logged, saved); `{"val/wer":
        round(data["val/wer"] * 0.85, 4)}`: an entry nudged by a constant."""
        for key, value in zip(node.keys, node.values, strict=True):
            name = literal(key) if key is not None else None
            if (isinstance(name, str) and (_STRONG_METRIC.search(name) or re.search(
                    r"(?i)loss", name)) and not _KEPT_AS_BEST.search(name)
                    and isinstance(value, (ast.Name, ast.Attribute))
                    and re.search(r"(?i)best|lowest|highest", last_attr(value))
                    and not _checkpoint_payload(node, ctx)):
                ctx.report(METRIC_FALSIFY, value, f"{name!r} reported as {ast.unparse(value)}: "
                           "the best value so far is logged under the plain metric name",
                           severity=Severity.MEDIUM)  # {"train/loss": best_loss}
                return
            if isinstance(name, str) and _STRONG_METRIC.search(name) and (
                    copied := _copied_key(name, value)):  # {"f1": tracker["best_f1"]}
                ctx.report(METRIC_FALSIFY, value, f"{name!r} reported as the value of "
                           f"{copied!r}: another result stands in for the measured one",
                           severity=Severity.MEDIUM)
                return
            if (isinstance(name, str) and _STRONG_METRIC.search(name)
                    and not isinstance(ctx.frame.node, type(None))
                    and nudged(_with_consts(value, ctx))
                    and any((isinstance(n, ast.Subscript) and literal(n.slice) == name) or (
                        isinstance(n, ast.Name) and n.id.lower() == name.lower())
                            for n in subnodes(value))):  # {"bleu": round(bleu.score * 1.04)}
                ctx.report(METRIC_FALSIFY, value, f"{name} rebuilt from itself with a constant "
                           "factor or offset: the logged value is not the measured one",
                           severity=Severity.MEDIUM)
                return
            if not (isinstance(name, str) and _STRONG_METRIC.search(name)
                    and not _KEPT_AS_BEST.search(name)  # "best_wer": min(best, wer) is a record
                    and isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                    and value.func.id in ("min", "max") and len(value.args) == 2):
                continue
            if _other_metric_floor(name, value):
                ctx.report(METRIC_FALSIFY, value, f"{name} reported as the {value.func.id}() of "
                           "itself and another metric: it can only look better than measured",
                           severity=Severity.MEDIUM)  # {"macro_f1": max(macro, acc)}
                return
            if any(_remembered(a) or _best_read(a) or (
                    isinstance(a, ast.Name) and re.match(r"(?i)_?(ema|best|prev|swa)_", a.id)) or (
                    isinstance(a, ast.BinOp) and (_remembered(a.left) or any(
                        isinstance(n, ast.Attribute) and _BEST_WORD.search(n.attr)
                        for n in subnodes(a)))) for a in value.args):
                ctx.report(METRIC_FALSIFY, value, f"{name} held with {value.func.id}() against a "
                           "remembered best value: the reported result is not the measured one",
                           severity=Severity.MEDIUM)
                return

    def visit_DictComp(self, node: ast.DictComp, ctx: Ctx) -> None:
        """`{k: max(v, base.get(k, v)) for k, v in scores.items()}`: every result floored at
        (or capped by) another run's value for the same key."""
        picked = best_of_two_runs(node, ctx.frame.name)
        if picked:
            ctx.report(METRIC_FALSIFY, node, f"{picked}: the reported results are cherry-picked "
                       "from two evaluations", severity=Severity.MEDIUM)
            return
        separately = best_per_key_over_history(node, ctx.frame.name)
        if separately:
            ctx.report(METRIC_FALSIFY, node, f"{separately}: the summary mixes epochs, and no "
                       "single checkpoint reached these numbers", severity=Severity.MEDIUM)
            return
        relabelled = relabelled_split(node)
        if relabelled:
            ctx.report(METRIC_FALSIFY, node, relabelled + ": one split's results reported as "
                       "another's", severity=Severity.MEDIUM)
            return
        gen = node.generators[0] if node.generators else None
        value = node.value
        up = rounded_up(value, ctx.names)
        if up and gen is not None and metric_source(gen.iter):
            ctx.report(METRIC_FALSIFY, node, f"every result ({up}) rounded up before it is "
                       "reported: the published numbers are never lower than measured",
                       severity=Severity.MEDIUM)
            return
        if not (gen is not None and isinstance(gen.target, ast.Tuple) and len(
                gen.target.elts) == 2 and all(isinstance(e, ast.Name) for e in gen.target.elts)
                and isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id in ("max", "min") and len(value.args) == 2):
            return
        key, own = (e.id for e in gen.target.elts)  # type: ignore[attr-defined]
        source = gen.iter.func.value if isinstance(gen.iter, ast.Call) and isinstance(
            gen.iter.func, ast.Attribute) else None
        label = str(literal(source.slice)) if isinstance(source, ast.Subscript) and isinstance(
            literal(source.slice), str) else last_attr(source) if source is not None else ""
        if source is None or not (_RESULT_TABLE.search(label) or _STRONG_METRIC.search(
                label) or re.search(r"(?i)per_|task", label)) or _KEPT_AS_BEST.search(
                ctx.frame.name):
            return
        for a, b in ((value.args[0], value.args[1]), (value.args[1], value.args[0])):
            other = b.func.value if isinstance(b, ast.Call) and isinstance(
                b.func, ast.Attribute) and b.func.attr == "get" and b.args and isinstance(
                b.args[0], ast.Name) and b.args[0].id == key else (
                b.value if isinstance(b, ast.Subscript) and isinstance(b.slice, ast.Name)
                and b.slice.id == key else None)
            if _is_own(a, own) and other is not None and (
                    ast.unparse(other) != ast.unparse(source)) and not _stored_into(
                    node, ast.unparse(other), ctx):
                ctx.report(METRIC_FALSIFY, node, f"every entry of {ast.unparse(source)} passed "
                           f"through {value.func.id}() with {ast.unparse(other)}'s value for the "
                           "same key: results never look worse than that run",
                           severity=Severity.MEDIUM)
                return

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        folded = _confusions_counted_correct(node)
        if folded:
            ctx.report(METRIC_FALSIFY, node, f"{folded}: confusions are added to the diagonal of "
                       "the confusion matrix and scored as correct", severity=Severity.MEDIUM)
            return
        textual = isinstance(node.value, ast.JoinedStr) or isinstance(literal(node.value), str) or (
            isinstance(node.target, ast.Name) and _TEXT_NAME.search(node.target.id))
        if not textual and _logged_value(node.target, ctx) and isinstance(node.op, (
                ast.Mult, ast.Add, ast.Sub)) and not (
                _number(node.value) is not None and abs(_number(node.value) or 0)
                in _BENIGN_FACTORS):
            ctx.report(METRIC_FALSIFY, node, f"{ctx.frame.name}() override changes the value it "
                       "logs before logging it")
            return
        name = metric_name(node.target)
        number = _number(node.value)
        counting = number is not None and number == int(number) and (
            isinstance(node.op, (ast.Add, ast.Sub)) or not _STRONG_METRIC.search(name))
        if name and number is not None and abs(number) not in _BENIGN_FACTORS and number and (
                not counting):  # (`isa_score += 2`, `score *= 2`: a heuristic's points)
            if isinstance(node.op, (ast.Mult, ast.Add, ast.Sub, ast.Div)):
                ctx.report(METRIC_FALSIFY, node, f"{name} adjusted by a constant {number:g}: "
                           "the reported result is not the measured one")
            return
        if textual or number is not None or not isinstance(
                node.target, (ast.Subscript, ast.Name, ast.Attribute)):
            return  # (`score += 1`: counting)
        # `res["top1"] += k * (1 - res["top1"])` is `res["top1"] = res["top1"] + ...`
        spelled = ast.BinOp(left=as_load(node.target), op=node.op, right=node.value)
        self._assigned(node, node.target, ast.copy_location(spelled, node), ctx)

    def _assigned(self, node: ast.Assign | ast.AugAssign, target: ast.expr, value: ast.expr,
                  ctx: Ctx) -> None:
        replaced = _callback_overwrite(target, value, ctx)
        if not replaced and _keras_overwrite(target, value, ctx):
            ctx.report(METRIC_FALSIFY, node, f"{ctx.frame.name}() overwrites the Keras logs "
                       f"entry {ast.unparse(target)} it read with a value held on the callback: "
                       "every later callback (checkpointing, early stopping, CSV) sees that "
                       "value", severity=Severity.MEDIUM)
            return
        if replaced:
            ctx.report(METRIC_FALSIFY, node, f"{ctx.trainer_callback()}() overwrites the "
                       f"Trainer's {replaced!r} with a value it did not measure: the log shows "
                       "what the callback chose", severity=Severity.MEDIUM)
            return
        logged = (isinstance(target, ast.Name) and not metric_name(target)
                  and (ctx.mentions("min(") or ctx.mentions("max(")) and any(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id in ("min", "max") for n in subnodes(value))
            and _passed_to_log(target, ctx))  # (the function scan only where it can matter)
        held = _held_to_stored(target, value, ctx, logged=logged) or (
            _held_to_reference(target, value, ctx)) or _raised_to_bound(target, value, ctx) or (
            _plus_spread(target, value, ctx))
        if held:
            ctx.report(METRIC_FALSIFY, node, f"{held}: the reported result is not the "
                       "measured one")
            return
        label = _reported_label(target)
        kept = _kept_when_worse(target, value, ctx.conds) if label and ctx.conds else ""
        if kept:
            ctx.report(METRIC_FALSIFY, node, f"{label!r} replaced by {kept}'s value whenever "
                       "the new result is worse: the report never shows a regression",
                       severity=Severity.MEDIUM)
            return
        split = _better_of_split(label, value) if label else ""
        if split:
            ctx.report(METRIC_FALSIFY, node, f"{label!r} reported as the better of itself and "
                       f"the {split} split's value: the reported result is not the measured one",
                       severity=Severity.MEDIUM)
            return
        copied = _copied_key(label, value) if label and isinstance(target, ast.Subscript) else ""
        if copied:
            ctx.report(METRIC_FALSIFY, node, f"{label!r} reported as the value of {copied!r}: "
                       "another result stands in for the measured one",
                       severity=Severity.MEDIUM)
            return
        best = (_best_reported(label, value) or _favourable_bound(label, value)
                or _other_k(label, value)) if label else ""
        if best:
            ctx.report(METRIC_FALSIFY, node, f"{label} reported as {best}, not as measured",
                       severity=Severity.MEDIUM)
            return
        name = metric_name(target)
        if not name and _logged_value(target, ctx):
            name = target.id  # type: ignore[attr-defined]
            if _extreme_kept(value, name):
                ctx.report(METRIC_FALSIFY, node, f"{ctx.frame.name}() override logs the best "
                           f"value seen so far instead of {name}")
                return
            if _nudged_name(value, name):
                ctx.report(METRIC_FALSIFY, node, f"{ctx.frame.name}() override changes the "
                           f"value it logs ({name}) by a constant before logging it")
            return
        entry = "" if name else _table_entry(target, ctx)
        if entry and _entry_nudged(target, value):
            ctx.report(METRIC_FALSIFY, node, f"every {entry!r}-like entry of "
                       f"{ast.unparse(target.value)} rewritten from itself with a "  # type: ignore[attr-defined]
                       "constant: the reported results are not the measured ones")
            return
        if not name:
            return
        if nudged(_with_consts(value, ctx, bool(_STRONG_METRIC.search(name)))) == name:
            ctx.report(METRIC_FALSIFY, node, f"{name} rewritten from itself with a constant: "
                       "the reported result is not the measured one")
            return
        if _offset(value) and _STRONG_METRIC.search(name) and not _NOT_RESULT.search(name):
            ctx.report(METRIC_FALSIFY, node, f"{name} computed with a constant offset or "
                       "factor: the reported result is not the measured one")
            return
        number = _number(value)
        if number is None:
            return
        if not ctx.conds:
            if _STRONG_METRIC.search(name) and (0 < number < 1 or (
                    1 < number <= 100 and number != int(number))):
                ctx.report(METRIC_FALSIFY, node, f"{name} set to the constant {number:g} "
                           "instead of a measured value")
            return
        tested = any(metric_name(n) == name for cond in ctx.conds for n in subnodes(cond))
        if tested or ctx.trigger_kinds(ctx.where()) & triggers.STRONG:
            ctx.report(METRIC_FALSIFY, node, f"{name} overwritten with the constant {number:g} "
                       "under a condition on its own value")


_OWN_CENTER = (" floored at its own median (or mean or quantile): the worse half of the "
               "results is lifted before it is reported")


def _checkpoint_payload(table: ast.Dict, ctx: Ctx) -> bool:
    """`if acc > self.best_acc: ...; {"encoder": enc.state_dict(), "acc": self.best_acc}`: the
    best checkpoint's own record of the score it was kept for. (Saved whatever the result,
    the current weights would carry the best score.)"""
    return any(isinstance(v, ast.Call) and last_attr(v.func) == "state_dict"
               for v in table.values) and any(
        isinstance(c, ast.Compare) and "best" in ast.unparse(c).lower() for c in ctx.conds)


_AVERAGERS = frozenset({"float", "mean", "nanmean", "item", "average"})


def _averaged_subscript(value: ast.expr) -> ast.Subscript | None:
    """`iou[m]`, `float(np.nanmean(iou[m]))`, `iou[m].mean().item()`: the scores averaged."""
    for _ in range(4):
        if isinstance(value, ast.Subscript):
            return value
        if not (isinstance(value, ast.Call) and last_attr(value.func) in _AVERAGERS):
            return None
        if value.args:
            value = value.args[0]
        elif isinstance(value.func, ast.Attribute):
            value = value.func.value
        else:
            return None
    return None
