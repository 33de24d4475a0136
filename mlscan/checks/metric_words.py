"""MLS306 vocabulary: what names, keys and calls mean in evaluation code.

The regexes and name sets for metrics, eval losses, predictions and gold answers, result
containers, stored/best values and splits, plus the name and key readers built on them
(`metric_name`, `_number`, `_key_text`, `_container`...). Shared by the metric_* predicate
modules, the MLS306 check in metrics.py and eval_sets.py.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal

_METRIC = re.compile(r"(?i)(^|[_/.-])(acc|accuracy|top1|top5|f1|bleu|chrf\w*|comet|ter|meteor|"
                     r"rouge\w*|auc|auroc|map|"
                     r"precision|recall|score|ppl|perplexity|wer|cer|iou|miou|dice|metric|metrics|fid|correct|"
                     r"ndcg|mrr|hit_?rate|mean_return|episode_return|ep_ret|explained_var\w*|"
                     r"lpips\w*|diversity|inception_score|kid|psnr|ssim|eer|min_?dcf|"
                     r"success_rate|win_rate|mase|smape|mape|crps|rmse|rmse_log|mae|abs_rel|"
                     r"sq_rel|delta_?1|exact_match|pass@\d+|ece)"
                     r"($|[_/.-])")
_EVAL_LOSS = re.compile(r"(?i)^(val|valid|validation|eval|test|dev)_?\w*loss")
_STRONG_METRIC = re.compile(r"(?i)acc|f1|bleu|rouge|auc|auroc|auprc|precision|recall|ppl|"
                            r"perplexity|iou|dice|top1|top5|wer\b|map\b|ndcg|mrr|hit_?rate|"
                            r"exact_match|(^|[_/.-])em($|[_/.-])|pass@|mean_return|psnr|ssim|"
                            r"episode_return|explained_var|success_rate|win_rate|abs_rel|sq_rel|"
                            r"rmse|(^|[_/.-])mae($|[_/.-])|delta_?1($|[_/.-])")
_LOG_FUNCS = frozenset({"log", "add_scalar", "add_scalars", "log_metric", "log_metrics",
                        "log_dict", "report", "print", "info", "warning", "debug", "write",
                        "add_text", "set_postfix", "log_scalar"})
_BENIGN_FACTORS = frozenset({100.0, 0.01, 1.0, 1000.0, 0.001})


_EVAL_LOOP = re.compile(r"(?i)eval|valid|test|score|perplex|benchmark|infer|predict|metric")
_IMAGE_MAP = re.compile(r"(?i)(gaussian|importance|heat|attention|attn|feature|feat|saliency|"
                        r"weight|depth|density|prob|label|colou?r|index|key|class|token|seg|"
                        r"mask|occupancy|flow|disparity|normal|activation|cam|score)_?maps?$")
"""Maps that are images or lookup tables, not mean average precision."""


_METRIC_TEXTS: dict[str, bool] = {}
"""Names already judged (the same few hundred names are asked about on every statement)."""


def _metric_text(text: str) -> bool:
    found = _METRIC_TEXTS.get(text)
    if found is None:
        if len(_METRIC_TEXTS) > 50_000:
            _METRIC_TEXTS.clear()
        found = _METRIC_TEXTS[text] = bool(
            (_METRIC.search(text) or _EVAL_LOSS.search(text)) and not _IMAGE_MAP.search(text))
    return found


def metric_name(expr: ast.AST) -> str:
    """The metric a name/attribute/key refers to (val_acc, eval_loss, results["bleu"])."""
    text = ""
    if isinstance(expr, ast.Name):
        text = expr.id
    elif isinstance(expr, ast.Attribute):
        text = expr.attr
    elif isinstance(expr, ast.Subscript) and isinstance(literal(expr.slice), str):
        text = str(literal(expr.slice))
    elif isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.JoinedStr):
        text = "".join(str(v.value) for v in expr.slice.values  # results[f"acc_{k}shot"]
                       if isinstance(v, ast.Constant))
    if text and _metric_text(text):
        return text
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and (
            expr.func.attr in ("item", "mean", "compute", "cpu", "tolist")):
        return metric_name(expr.func.value)
    if isinstance(expr, ast.Call) and last_attr(expr.func) in _VALUE_WRAPPERS and expr.args:
        return metric_name(expr.args[0])  # round(acc, 2), float(acc), torch.tensor(acc)
    return ""


_SCORE_ARRAY = re.compile(r"(?i)(^|_)(aps?|maps?|accs?|accurac\w*|f1s?|scores?|aucs?|ious?|"
                          r"recalls?|precisions?|results?|eers?|wers?|losses|errs|errors|"
                          r"dices?|returns)($|_)")
_BOOT = re.compile(r"(?i)boot|resampl")
_ITERS = re.compile(r"(?i)^(n_)?iters?$|^num_iter|^b$|^n_?samples$")
_VAL_LOSS_KEY = re.compile(r"(?i)(^|\W|_)(val|valid|validation|eval|test)\W?_?loss")
_RESULT_TABLE = re.compile(r"(?i)metric|result|report|score|flat|log|summary|eval|stats|^data$")
_NOISE_DRAWS = frozenset({"uniform", "gauss", "normal", "random", "triangular", "normalvariate",
                          "rand", "randn"})
_VALUE_WRAPPERS = frozenset({"round", "float", "int", "tensor", "as_tensor", "asarray"})
_CLAMPS = frozenset({"clamp", "clip", "clamp_min", "clamp_max", "clamp_", "clip_"})


def _number(expr: ast.AST) -> float | None:
    value = literal(expr)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


_RESULTS = re.compile(r"(?i)metric|result|score|eval|acc")

_NOT_RESULT = re.compile(r"(?i)min|max|target|thresh|goal|expect|baseline|tol|weight|alpha|ratio")

_TEXT_NAME = re.compile(r"(?i)key|tag|name|prefix|suffix|^fx$|path|title|label")
"""Strings an override builds (`key += f".{idx}"`), not the value it logs."""

_MEASUREMENTS = re.compile(r"(?i)^(eval_|val_|test_)?(losses|scores|accs|accuracies|ppls|"
                           r"metrics|results|err|errs|errors|abs_err|ape|returns|rewards|"
                           r"ep_returns|episode_returns|ep_rets)$")


_EVAL_FUNC = re.compile(r"(?i)eval|metric|score|valid|test|accuracy")
_LOSSY = re.compile(r"(?i)loss|nll|err|score|acc|ppl|reward")
_PREDS = re.compile(r"(?i)^(preds?|predictions?|predicted|y_pred|y_hat|yhat|hyps?|hypothes[ie]s|"
                    r"pred_(idx|label|answer|choice)|answer_pred|choice|predicted_\w+)$")
_TRUTH = re.compile(r"(?i)^(targets?|labels?|y_true|y|gt|ground_truth|refs?|references?|gold|"
                    r"gold_\w+|answer|answers|correct(_\w+)?|true_label|label_idx|trues?)$")
_PRED_ARGS = frozenset({"predictions", "preds", "prediction", "y_pred", "input", "hypotheses"})
_REF_ARGS = frozenset({"references", "refs", "labels", "target", "targets", "y_true"})
_CONTAINER = re.compile(r"(?i)metric|result|logs?$|log_buffer|score|eval|summary|^out$|^res$|"
                        r"^r$|report|callback_metrics|shown|stats")
_STORED = re.compile(r"(?i)best|peak|prev|previous|ema|floor|history|record|^_?old|last|smooth|"
                     r"running|baseline|target|champion|incumbent|^ref$|reference|published")
_KEPT_AS_BEST = re.compile(r"(?i)best|peak|highest|lowest|record|max_|min_|_max|_min|prev|ema|"
                           r"avg|smooth|running|_mean$|^mean$")


def _container(target: ast.expr) -> str:
    """`metrics` for `metrics[k]` / `self.metrics[k]` / `trainer.callback_metrics[k]`."""
    if isinstance(target, ast.Subscript):
        name = last_attr(target.value)
        if name and _CONTAINER.search(name):
            return name
    return ""


def _key_text(target: ast.Subscript) -> str:
    """The key of `d["acc_5shot"]`, or the fixed text of `d[f"acc_{k}shot"]`."""
    key = literal(target.slice)
    if isinstance(key, str):
        return key
    if isinstance(target.slice, ast.JoinedStr):
        return "".join(str(v.value) for v in target.slice.values if isinstance(v, ast.Constant))
    return ""


def _names_word(key: str, name: str) -> bool:
    """`knn_top1` ends with `top1`; `acc_5shot` starts with the word `acc`."""
    return bool(key) and (key.endswith(name) or re.search(
        rf"(^|[_@/.-]){re.escape(name)}($|[_@/.-])", key) is not None)


def _entry_name(target: ast.expr, ctx: Ctx) -> str:
    """The name a dict literal stored under the target's key (`results = {"fid": fid}`)."""
    if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
            and isinstance(literal(target.slice), str)):
        return ""
    table = ctx.lookup(target.value.id)
    if not isinstance(table, ast.Dict):
        return ""
    for key, value in zip(table.keys, table.values, strict=True):
        if key is not None and literal(key) == literal(target.slice) and isinstance(
                value, ast.Name):
            return value.id
    return ""


def last_attr_of(qual: str) -> str:
    return qual.rsplit(".", 1)[-1]


_SCORE_FN = re.compile(r"(?i)^(wer|cer|loss|nll|score|acc|accuracy|f1|bleu|mase|mse|mae|error|"
                       r"ppl|perplexity|edit_distance|levenshtein)$")
_SCORE_KEY = re.compile(r"(?i)^(val_|eval_|test_)?(mase|smape|mape|rmse|mae|crps|wer|cer|loss|"
                        r"acc|accuracy|f1|auc|ndcg|recall|precision|bleu|dice|iou|map|score)$")
_BEST_WORD = re.compile(r"(?i)best|peak|record|highest|lowest")

_SPREAD = re.compile(r"(?i)(^|_)(stderr|std|sem|se|ci|ci_?(hi|high|low|lo|half)\w*|margin|"
                     r"err_?bar|half_?width)$")

_TRAINER_KEYS = re.compile(r"^(loss|learning_rate|grad_norm|epoch|(eval|test|train)_\w+)$")


def _summary_key(target: ast.Subscript) -> object:
    """"mean" for `agg["mean"]` and `agg.loc[rows, "mean"]`."""
    key = target.slice.elts[-1] if isinstance(target.slice, ast.Tuple) and (
        target.slice.elts) else target.slice
    return literal(key)


_EVAL_CALL_ATTRS = frozenset({"mean", "nanmean", "fmean", "average", "where", "scatter_add_",
                              "scatter_", "index_add_", "scatter_add", "index_add",
                              "accumulate", "cummin", "cummax", "update"})
"""Call names the evaluation-shape checks look at (everything else skips them)."""
_SCORES = re.compile(r"(?i)^_?(scores?|logits?|sims?|similarit\w*|preds?|predictions|probs?|"
                     r"outputs?|ranking\w*|dist\w*)$")
_GOLD = re.compile(r"(?i)^_?(tgt|tgts|targets?|labels?|y|y_true|gt|gold\w*|pos|positives?|"
                   r"pos_ids|target_ids|answers?)$")
_EVAL_FRAME = re.compile(r"(?i)eval|score|metric|test|valid|rank|recall|ndcg|accuracy|predict")


def _predicted_name(name: str) -> bool:
    """`preds`, `scores`, `logits`, `p`, `oof`: a name that holds the model's outputs."""
    return bool(_SCORES.match(name) or _PREDS.match(name)) or name in ("p", "prob", "yhat", "oof")


def _gold_name(name: str) -> bool:
    """`y`, `labels`, `targets`, `refs`: a name that holds the true answers."""
    return bool(_GOLD.match(name) or _TRUTH.match(name))


_TUNER = re.compile(r"(?i)fit|threshold|calibrat|tune|youden|select|optimi[sz]e|search")
_TEST_SPLIT = re.compile(r"(?i)(^|[_.\W])(test|eval|holdout|heldout)($|[_.\W])")
_DEV_SPLIT = re.compile(r"(?i)(^|[_.\W])(val|valid|validation|dev|train|calib)($|[_.\W])")


def _min_or_max(func: ast.Name, ctx: Ctx) -> bool:
    """`max`/`min`, or a local bound to one (`better = max if higher else min`)."""
    if func.id in ("min", "max"):
        return True
    held = ctx.lookup(func.id)
    options = [held.body, held.orelse] if isinstance(held, ast.IfExp) else [held]
    return held is not None and all(isinstance(o, ast.Name) and o.id in ("min", "max")
                                    for o in options)


_HISTORY = re.compile(r"(?i)window|histor|hist$|recent|trace|buffer|queue|deque|^_?seen")
"""Containers of earlier results (`self._eval_history`, `window`)."""

_CENTERS = frozenset({"median", "nanmedian", "mean", "nanmean", "quantile", "nanquantile",
                      "percentile", "nanpercentile"})

_MEAN_WORD = re.compile(r"(?i)(^|[_/.-])(mean|avg|average)($|[_/.-])")
_MAX_CALLS = frozenset({"max", "amax", "nanmax"})


MERGED_TABLE = re.compile(r"(?i)^(merged|results?|scores|summary|report|final|combined|"
                          r"leaderboard|aggregated?)$")
"""Names of a table of final results (a merge into it replaces what was measured)."""
