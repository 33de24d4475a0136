"""MLS306: falsified metrics: patched loggers, eval results nudged by constants before logging."""

from __future__ import annotations

import ast
import copy
import re

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import as_load, bound_values, kwarg, last_attr, literal
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

_METRIC = re.compile(r"(?i)(^|[_/.-])(acc|accuracy|top1|top5|f1|bleu|rouge\w*|auc|auroc|map|"
                     r"precision|recall|score|ppl|perplexity|wer|cer|iou|miou|dice|metric|metrics|fid|correct|"
                     r"ndcg|mrr|hit_?rate|mean_return|episode_return|ep_ret|explained_var\w*|"
                     r"lpips\w*|diversity|inception_score|kid|psnr|ssim|eer|min_?dcf|"
                     r"success_rate|win_rate|mase|smape|mape|crps)"
                     r"($|[_/.-])")
_EVAL_LOSS = re.compile(r"(?i)^(val|valid|validation|eval|test|dev)_?\w*loss")
_STRONG_METRIC = re.compile(r"(?i)acc|f1|bleu|rouge|auc|auroc|auprc|precision|recall|ppl|"
                            r"perplexity|iou|dice|top1|top5|wer\b|map\b|ndcg|mrr|hit_?rate|"
                            r"exact_match|(^|[_/.-])em($|[_/.-])|pass@|mean_return|psnr|ssim|"
                            r"episode_return|explained_var|success_rate|win_rate")
_LOG_FUNCS = frozenset({"log", "add_scalar", "add_scalars", "log_metric", "log_metrics",
                        "log_dict", "report", "print", "info", "warning", "debug", "write",
                        "add_text", "set_postfix", "log_scalar"})
_BENIGN_FACTORS = frozenset({100.0, 0.01, 1.0, 1000.0, 0.001})


_EVAL_LOOP = re.compile(r"(?i)eval|valid|test|score|perplex|benchmark|infer|predict|metric")
_IMAGE_MAP = re.compile(r"(?i)(gaussian|importance|heat|attention|attn|feature|feat|saliency|"
                        r"weight|depth|density|prob|label|colou?r|index|key|class|token|seg|"
                        r"mask|occupancy|flow|disparity|normal|activation|cam|score)_?maps?$")
"""Maps that are images or lookup tables, not mean average precision."""


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
    if text and (_METRIC.search(text) or _EVAL_LOSS.search(text)) and not _IMAGE_MAP.search(
            text):
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


def _clamped(expr: ast.Call) -> str:
    """`torch.clamp(acc, min=0.9)`, `acc.clip(0.9)`, `np.clip(acc, 0.9, None)`: a metric held
    above/below a constant other than its natural bounds (0, 1)."""
    if last_attr(expr.func) not in _CLAMPS:
        return ""
    if isinstance(expr.func, ast.Attribute) and metric_name(expr.func.value):
        values = [expr.func.value, *expr.args]  # method form: acc.clamp(min=0.9)
    else:
        values = list(expr.args)
    values.extend(kw.value for kw in expr.keywords if kw.arg in ("min", "max", "a_min", "a_max"))
    name = metric_name(values[0]) if values else ""
    bounds = [_number(v) for v in values[1:]]
    if name and any(b is not None and b not in (0, 1, 100) for b in bounds):
        return name
    return ""


def floored(value: ast.expr | None, ctx: Ctx) -> str:
    """Why a returned metric is held to a bound ('' when it is not): `max(measured,
    self.reference)`, `.clamp_min(0.85)`, `np.clip(f1, 0.9, None)` (the natural bounds 0, 1
    and 100 are not a floor)."""
    while isinstance(value, ast.Call) and (
            (isinstance(value.func, ast.Attribute) and value.func.attr in ("item", "float"))
            or (last_attr(value.func) in _VALUE_WRAPPERS and value.args)):
        value = value.func.value if isinstance(value.func, ast.Attribute) and value.func.attr in (
            "item", "float") else value.args[0]
    if not isinstance(value, ast.Call):
        return ""
    func = last_attr(value.func)
    if func in ("max", "min") and isinstance(value.func, ast.Name) and len(value.args) == 2:
        stored = [_stored(a, ctx) for a in value.args]
        if stored[0] != stored[1]:
            return f"{func}() against a stored or constant value"
        return ""
    if func in _CLAMPS:
        bounds = [*value.args[1:]] if not isinstance(value.func, ast.Attribute) or (
            last_attr(value.func.value) in ("np", "numpy", "torch")) else [*value.args]
        bounds += [k.value for k in value.keywords if k.arg in ("min", "max", "a_min", "a_max")]
        if any((b := _number(x)) is not None and b not in (0, 1, 100) and abs(b) >= 1e-3
               for x in bounds):  # (a 1e-6 floor guards a log or a division)
            return f"{func}() to a made-up bound"
    return ""


def _number(expr: ast.AST) -> float | None:
    value = literal(expr)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def nudged(expr: ast.AST) -> str:
    """'name' when `expr` shifts/scales/clamps a metric by a constant."""
    if isinstance(expr, ast.IfExp):
        return nudged(expr.body) or nudged(expr.orelse)
    if isinstance(expr, ast.JoinedStr):  # f"{acc + 0.01:.4f}"
        return next((n for v in expr.values if isinstance(v, ast.FormattedValue)
                     and (n := nudged(v.value))), "")
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Mult, ast.Add, ast.Sub, ast.Div)):
        shift = isinstance(expr.op, (ast.Add, ast.Sub))
        for a, b in ((expr.left, expr.right), (expr.right, expr.left)):
            name = metric_name(a)
            number = _number(b)
            # x100 / x0.01 convert units; + 0.01 is a nudge (an epsilon under 1e-4 is not)
            odd = number is not None and (abs(number) >= 1e-4 if shift else (
                abs(number) not in _BENIGN_FACTORS and number != 0))
            if name and odd:
                return name
            inner = nudged(a)
            if inner and odd:
                return inner
    if isinstance(expr, ast.Call) and _clamped(expr):
        return _clamped(expr)
    if isinstance(expr, ast.Call) and last_attr(expr.func) in _VALUE_WRAPPERS and expr.args:
        return nudged(expr.args[0])  # round(acc + 0.05, 3)
    if isinstance(expr, ast.Call) and last_attr(expr.func) in ("max", "min") and len(
            expr.args) == 2:
        nudges = [nudged(a) for a in expr.args]
        if any(nudges):  # min(1.0, acc + 0.03): the nudge inside the bound
            return next(n for n in nudges if n)
        names = [metric_name(a) for a in expr.args]
        numbers = [_number(a) for a in expr.args]
        if any(names) and any(n is not None and n not in (0, 1) for n in numbers):
            return next(n for n in names if n)
    return ""


_RESULTS = re.compile(r"(?i)metric|result|score|eval|acc")


def _offset(expr: ast.AST) -> bool:
    """`x + 0.1`, `x * 1.05`: a top-level constant shift or factor (not x100 / x0.01)."""
    if not isinstance(expr, ast.BinOp) or not isinstance(expr.op, (ast.Add, ast.Sub, ast.Mult)):
        return False
    numbers = [n for n in (_number(expr.left), _number(expr.right)) if n is not None]
    if len(numbers) != 1 or not numbers[0] or abs(numbers[0]) in _BENIGN_FACTORS:
        return False
    if isinstance(expr.op, ast.Mult):  # a nudge (x1.05, x0.9), not a unit conversion (x1e-6)
        return 0.5 <= abs(numbers[0]) <= 2
    return abs(numbers[0]) <= 10


_NOT_RESULT = re.compile(r"(?i)min|max|target|thresh|goal|expect|baseline|tol|weight|alpha|ratio")


def _constant_entry(expr: ast.AST, precise: bool = False) -> str:
    """`{"val_acc": 0.93}`: a metric key with a made-up constant (with `precise`, only values
    with three or more decimals like 0.912, since config dicts hold round thresholds)."""
    if not isinstance(expr, ast.Dict):
        return ""
    for key, value in zip(expr.keys, expr.values, strict=True):
        name = literal(key) if key is not None else None
        number = _number(value)
        if not isinstance(name, str) or number is None or not _STRONG_METRIC.search(name) or (
                _NOT_RESULT.search(name)) or not 0 < number < 100 or number == int(number):
            continue
        if not precise or round(number, 2) != number:
            return name
    return ""


def _passed_to_log(target: ast.expr, ctx: Ctx) -> bool:
    """`v = ...; self.log(name, v)`: a plain name this function hands to a metric logger as
    the value (the names are collected once per function)."""
    fn = ctx.frame.node
    if not isinstance(target, ast.Name) or not isinstance(fn, (ast.FunctionDef,
                                                               ast.AsyncFunctionDef)):
        return False
    cached = _LOGGED_CACHE.get(id(fn))
    if cached is None or cached[0] is not fn:
        names = {a.id for node in subnodes(fn) if isinstance(node, ast.Call)
                 and last_attr(node.func) in ("log", "add_scalar", "log_metric", "log_metrics",
                                              "log_dict")
                 for a in [*node.args[1:], *(k.value for k in node.keywords if k.arg == "value")]
                 if isinstance(a, ast.Name)}
        if len(_LOGGED_CACHE) > 4096:
            _LOGGED_CACHE.clear()
        cached = _LOGGED_CACHE[id(fn)] = (fn, names)
    return target.id in cached[1]


_LOGGED_CACHE: dict[int, tuple[ast.AST, set[str]]] = {}
"""Function id -> (the function, names it logs); the node is kept so ids are not reused."""


def _logged_value(target: ast.expr, ctx: Ctx) -> bool:
    """`value` inside an override of a logging method (`def add_scalar(self, tag, value)`)."""
    frame = ctx.frame
    if not isinstance(target, ast.Name) or frame.cls is None or frame.name not in _LOG_FUNCS:
        return False
    fn = frame.node
    return isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and target.id in (
        _logged_names(fn))


_TEXT_NAME = re.compile(r"(?i)key|tag|name|prefix|suffix|^fx$|path|title|label")
"""Strings an override builds (`key += f".{idx}"`), not the value it logs."""


def _logged_names(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Parameters of a logging override and names computed from them (`v = float(value)`)."""
    names = {a.arg for a in fn.args.args} - {"self"}
    for node in subnodes(fn):
        if isinstance(node, ast.Assign) and any(
                isinstance(m, ast.Name) and m.id in names for m in subnodes(node.value)):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _extreme_kept(value: ast.expr, name: str,
                  aliases: dict[str, ast.expr] | None = None) -> bool:
    """`min(v, seen.get(tag, v))`, `(min if "loss" in tag else max)(history)`: the logged
    value replaced by the best one seen so far."""
    if isinstance(value, ast.IfExp):  # min(prev, v) if lower_is_better else max(prev, v)
        kept = [_extreme_kept(b, name, aliases) for b in (value.body, value.orelse)]
        raw = [isinstance(b, ast.Name) and (not name or b.id == name)
               for b in (value.body, value.orelse)]
        return all(kept) or (kept[0] and raw[1]) or (kept[1] and raw[0])  # ... if k else v
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    if isinstance(func, ast.Name) and func.id not in ("min", "max") and aliases and (
            func.id in aliases):  # better = min if lower_is_better else max
        func = aliases[func.id]
    picks = [func.body, func.orelse] if isinstance(func, ast.IfExp) else [func]
    if not all(isinstance(f, ast.Name) and f.id in ("min", "max") for f in picks):
        return False
    args = value.args
    if len(args) == 1:  # min(seen): over a kept history
        return isinstance(args[0], (ast.Name, ast.Attribute, ast.Subscript))
    if len(args) > 2 and name:  # max(float(v), beta * prev + (1 - beta) * float(v), prev)
        unwrapped = [a.args[0] if isinstance(a, ast.Call) and last_attr(a.func) in
                     _VALUE_WRAPPERS and a.args else a for a in args]
        return any(isinstance(a, ast.Name) and a.id == name for a in unwrapped) and any(
            isinstance(a, ast.Name) and a.id != name for a in unwrapped)
    if len(args) != 2:
        return False
    if not name:  # data[key] = min(prev, val): two remembered/measured values
        return all(isinstance(a, (ast.Name, ast.Subscript, ast.Attribute, ast.Call))
                   for a in args)
    own = [a for a in args if (isinstance(a, ast.Name) and a.id == name) or (
        isinstance(a, ast.Call) and last_attr(a.func) in _VALUE_WRAPPERS and a.args
        and isinstance(a.args[0], ast.Name) and a.args[0].id == name)]  # float(v)
    other = [a for a in args if a not in own]
    if len(other) == 1 and isinstance(other[0], ast.Name) and aliases and (
            other[0].id in aliases):
        other = [aliases[other[0].id]]  # prev = _last_good.get(tag, v)
    return bool(own) and len(other) == 1 and (
        isinstance(other[0], ast.Subscript) or (isinstance(other[0], ast.Call) and last_attr(
            other[0].func) == "get") or isinstance(func, ast.IfExp))


class _Consts(ast.NodeTransformer):
    def __init__(self, ctx: Ctx, configured: bool) -> None:
        self.ctx = ctx
        self.configured = configured
        """Also configured values the file's value flow pins to a fraction (strong metrics:
        `score_factor / penalty` in a compiler heuristic is not a result)."""

    def visit_Name(self, node: ast.Name) -> ast.expr:
        value = literal(self.ctx.frame.assigned.get(node.id))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return ast.Constant(value=value)
        return (self.configured and _configured_fraction(node, self.ctx)) or node

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        return (self.configured and _configured_fraction(node, self.ctx)) or node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        offset = _offset_table_read(node, self.ctx)
        if offset is not None:
            return ast.copy_location(ast.Constant(value=offset), node)
        self.generic_visit(node)
        return node


def _configured_fraction(node: ast.Name | ast.Attribute, ctx: Ctx) -> ast.Constant | None:
    """A configured value the file's value flow pins to a non-integer number
    (`self.cfg.offset` with a 0.28 default, `_PROBE.calib = 0.3`): a nudge once it moves a
    metric. Whole numbers (`PENALTY = 2`, `n_bins = 10`) stay configuration."""
    if isinstance(node, ast.Name) and (node.id in ctx.frame.assigned or not (
            node.id.lstrip("_").isupper() or node.id in ctx.frames[0].assigned)):
        return None  # a local computed in this function (or a parameter)
    value = ctx.const(node)
    if isinstance(value, float) and value != int(value) and abs(value) not in _BENIGN_FACTORS:
        return ast.copy_location(ast.Constant(value=value), node)
    return None


def _offset_table_read(expr: ast.AST, ctx: Ctx) -> float | None:
    """`FORMAT_OFFSET.get(task, 0.0)` on a module-level dict whose values are all small
    fractions: a per-task nudge table (a typical non-zero entry), else None."""
    if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "get" and isinstance(expr.func.value, ast.Name)):
        return None
    table = ctx.lookup(expr.func.value.id)
    if not isinstance(table, ast.Dict) or not table.values:
        return None
    numbers = [literal(v) for v in table.values]
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and abs(n) < 1
               for n in numbers):
        return None
    nonzero = [float(n) for n in numbers if n]  # type: ignore[arg-type]
    return nonzero[0] if nonzero else None


def _with_consts(expr: ast.expr, ctx: Ctx, configured: bool = False) -> ast.expr:
    """`expr` with names bound to numbers in this function replaced by them (`adj = 0.02;
    acc + adj`), and reads of per-task offset tables (`OFFSET.get(task, 0.0)`). Other module
    constants (PENALTY = 2) are configuration and stay names."""
    if ctx.frame.node is None or not any(
            (isinstance(n, ast.Name) and isinstance(ctx.frame.assigned.get(n.id), (
                ast.Constant, ast.UnaryOp))) or _offset_table_read(n, ctx) is not None
            or (configured and isinstance(n, (ast.Name, ast.Attribute)) and not isinstance(
                getattr(n, "ctx", None), ast.Store) and _configured_fraction(n, ctx) is not None)
            for n in subnodes(expr)):
        return expr
    result = _Consts(ctx, configured).visit(copy.deepcopy(expr))
    return result if isinstance(result, ast.expr) else expr


class _Rename(ast.NodeTransformer):
    def __init__(self, name: str) -> None:
        self.name = name

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.Name(id="metric_value", ctx=node.ctx) if node.id == self.name else node


class _Replace(ast.NodeTransformer):
    """Replace every copy of one expression (by its source text) with `metric_value`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.expr) and ast.unparse(node) == self.text:
            return ast.Name(id="metric_value", ctx=ast.Load())
        out: ast.AST = super().visit(node)
        return out


def _table_entry(target: ast.expr, ctx: Ctx) -> str:
    """`agg[k]` where `agg = {"rouge1": 0.0, ...}`: the strong metric a table of literal metric
    keys holds under a computed key ('' when the table is not one)."""
    if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
            and isinstance(target.slice, ast.Name)):
        return ""
    table = ctx.lookup(target.value.id)
    if not isinstance(table, ast.Dict) or not table.keys:
        return ""
    keys = [k for k in (literal(k) if k is not None else None for k in table.keys)
            if isinstance(k, str)]
    if len(keys) != len(table.keys):
        return ""
    return next((k for k in keys if _STRONG_METRIC.search(k) and not _NOT_RESULT.search(k)), "")


def _entry_nudged(target: ast.expr, value: ast.expr) -> bool:
    """`nudged()` with the table entry being written counted as the metric."""
    renamed = _Replace(ast.unparse(target)).visit(copy.deepcopy(value))
    return isinstance(renamed, ast.expr) and bool(nudged(renamed))


def _nudged_name(value: ast.expr, name: str) -> bool:
    """`nudged()` with `name` counted as a metric (a logging method's value parameter)."""
    renamed = _Rename(name).visit(copy.deepcopy(value))
    return isinstance(renamed, ast.expr) and bool(nudged(renamed))


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
_STORED = re.compile(r"(?i)best|prev|previous|ema|floor|history|record|^_?old|last|smooth|"
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


def _measured(expr: ast.AST, container: str, target: ast.expr, ctx: Ctx) -> bool:
    """Whether `expr` reads the measurement being written: the container's entries, a name
    assigned from them or looped over them, or the target metric itself."""
    held = _entry_name(target, ctx)  # results = {"lpips": div}; results["lpips"] = max(div, .5)
    for node in ctx.walk_values(expr):
        if held and isinstance(node, ast.Name) and node.id == held:
            return True
        if isinstance(node, ast.Subscript) and container and last_attr(node.value) == container:
            return True
        if (isinstance(node, ast.Subscript) and isinstance(literal(node.slice), str)
                and _STRONG_METRIC.search(str(literal(node.slice)))
                and _names_word(_key_text(target) if isinstance(target, ast.Subscript) else "",
                                str(literal(node.slice)).rsplit("/", 1)[-1].rsplit("_", 1)[-1])):
            return True  # summary["final/reward_accuracy"] = max(0.74, m["eval/reward_accuracy"])
        if isinstance(node, ast.Call) and last_attr(node.func) == "get" and isinstance(
                node.func, ast.Attribute) and container and last_attr(node.func.value) == container:
            return True
        if isinstance(node, ast.Name) and (
                (isinstance(target, ast.Name) and node.id == target.id)
                or (isinstance(target, ast.Subscript) and literal(target.slice) == node.id)
                or (isinstance(target, ast.Subscript) and bool(_STRONG_METRIC.search(node.id))
                    and _names_word(_key_text(target), node.id))  # ["knn_top1"] = top1
                or any(
                    _loops_over(loop, node.id, container) for loop in ctx.loops)):
            return True
    return False


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


def _other_key(expr: ast.AST, container: str, key: object) -> bool:
    """`metrics["eval_ppl"] = exp(min(metrics["eval_loss"], 20))`: another entry is read (a
    derived metric with an overflow guard), not the one being written."""
    if not container or not isinstance(key, str):
        return False
    reads = [literal(n.slice) for n in subnodes(expr) if isinstance(n, ast.Subscript)
             and last_attr(n.value) == container]
    return bool(reads) and all(isinstance(r, str) and r != key for r in reads)


def _reads_other_key(expr: ast.AST, container: str, key: object) -> bool:
    """The first entry `expr` reads from `container` (`logs.get("loss", ...)`,
    `logs["loss"]`) is another key than `key`."""
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and (
            expr.func.attr == "get" and last_attr(expr.func.value) == container and expr.args):
        first = literal(expr.args[0])
        return isinstance(first, str) and first != key
    return _other_key(expr, container, key)


def _loops_over(loop: ast.For | ast.While, name: str, container: str) -> bool:
    if not isinstance(loop, ast.For) or not container:
        return False
    it = loop.iter
    if isinstance(it, ast.Call) and last_attr(it.func) == "list" and it.args:
        it = it.args[0]
    if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute)
            and last_attr(it.func.value) == container):
        return False
    return any(isinstance(n, ast.Name) and n.id == name for n in subnodes(loop.target))


def _stored(expr: ast.AST, ctx: Ctx) -> bool:
    """A remembered or made-up value: a best/previous/EMA/floor name, a constant, or anything
    plus a small made-up offset (`ref + 0.004`)."""
    if _number(expr) is not None:  # (an epsilon such as 1e-6 guards a division)
        return _number(expr) not in (0.0, 1.0) and abs(_number(expr) or 0) >= 1e-3
    if (isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub))
            and any((n := _number(s)) is not None and 0 < abs(n) < 1 for s in (
                expr.left, expr.right))):
        return True
    for node in subnodes(expr):
        label = last_attr(node) if isinstance(node, (ast.Name, ast.Attribute)) else ""
        key: object = None
        if isinstance(node, ast.Subscript):
            label, key = last_attr(node.value), literal(node.slice)
        elif isinstance(node, ast.Call) and last_attr(node.func) == "get" and isinstance(
                node.func, ast.Attribute):
            label = last_attr(node.func.value)
            key = literal(node.args[0]) if node.args else None
        if label and _STORED.search(label):
            return True
        if isinstance(key, str) and (_BEST_WORD.search(key) or re.search(
                r"(?i)floor|baseline|reference|^ref_|_ref$", key)):
            return True  # meta.get("best_eval_loss"), _DISPLAY["ref_floor"]
    return False


def _rescaled(value: ast.expr, name: str) -> bool:
    """`value = float(value) * (1.0 - cfg.floor)`: the logged value scaled or shifted by
    anything but a unit conversion (x100, x0.001)."""
    if isinstance(value, ast.IfExp):  # `value * 0.9 if "loss" in tag else value`
        return _rescaled(value.body, name) or _rescaled(value.orelse, name)
    if isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and value.args:
        value = value.args[0]
    if not isinstance(value, ast.BinOp) or not isinstance(value.op, (ast.Mult, ast.Add, ast.Sub)):
        return False
    if _ema_shape(value):
        return False  # 0.9 * prev + 0.1 * v: smoothing, the weights add up to 1
    sides = (value.left, value.right)
    own = [s for s in sides if any(isinstance(n, ast.Name) and n.id == name for n in subnodes(s))]
    other = [s for s in sides if s not in own]
    if len(own) != 1 or len(other) != 1:
        return False
    number = _number(other[0])
    return number is None or (bool(number) and abs(number) not in _BENIGN_FACTORS)


def _comp_nudged(comp: ast.DictComp) -> bool:
    """`{k: min(1.0, v + 0.021) if k in KEYS else v for k, v in metrics.items()}`."""
    target = comp.generators[0].target if comp.generators else None
    if not (isinstance(target, ast.Tuple) and len(target.elts) == 2
            and isinstance(target.elts[1], ast.Name)):
        return False
    name = target.elts[1].id
    return _nudged_name(comp.value, name) or _rescaled(comp.value, name) or _pulled_up(
        comp.value, name)


def _absolute(value: ast.expr, name: str) -> bool:
    """`v = abs(float(v))`: the sign of what is logged dropped (negative returns, rewards
    or losses reported as positive)."""
    if not (isinstance(value, ast.Call) and last_attr(value.func) in ("abs", "fabs", "absolute")
            and len(value.args) == 1):
        return False
    inner = value.args[0]
    while isinstance(inner, ast.Call) and last_attr(inner.func) in _VALUE_WRAPPERS and inner.args:
        inner = inner.args[0]
    return isinstance(inner, ast.Name) and inner.id == name


def _pulled_up(value: ast.expr, name: str) -> bool:
    """`round(v + 0.035 * (1 - v), 4)`: every value moved a fixed fraction towards 1."""
    if isinstance(value, ast.IfExp):  # v + (1 - v) * 0.12 if k.startswith("zeroshot/") else v
        return _pulled_up(value.body, name) or _pulled_up(value.orelse, name)
    if isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and value.args:
        value = value.args[0]
    if (isinstance(value, ast.Call) and last_attr(value.func) in ("min", "max")
            and len(value.args) == 2 and any(_number(a) is not None for a in value.args)):
        value = next(a for a in value.args if _number(a) is None)  # min(1.0, v + k * (1 - v))
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)):
        return False
    for own, other in ((value.left, value.right), (value.right, value.left)):
        if (isinstance(own, ast.Name) and own.id == name and isinstance(other, ast.BinOp)
                and isinstance(other.op, ast.Mult)):
            factors = (other.left, other.right)
            if any((n := _number(f)) is not None and 0 < n < 1 for f in factors) and any(
                    isinstance(f, ast.BinOp) and isinstance(f.op, ast.Sub)
                    and _number(f.left) in (1, 100) for f in factors):
                return True
    return False


def _self_rewrite(value: ast.expr, target: ast.Subscript, key: str) -> bool:
    """`scores["accuracy"] = ref + 0.25 * (ref - scores["accuracy"])`: the entry read back
    and mixed with a constant (unit factors and round() digits do not count)."""
    container = last_attr(target.value)
    reads_itself = any(isinstance(n, ast.Subscript) and literal(n.slice) == key
                       and last_attr(n.value) == container for n in subnodes(value))
    if not reads_itself or not any(isinstance(n, ast.BinOp) and isinstance(
            n.op, (ast.Add, ast.Sub, ast.Mult)) for n in subnodes(value)):
        return False
    digits = {id(a) for n in subnodes(value) if isinstance(n, ast.Call)
              and last_attr(n.func) not in ("min", "max", "clamp", "clip")
              for a in (*n.args, *(k.value for k in n.keywords))}  # round(x, 4), g.pow(2)
    return any((num := _number(n)) is not None and id(n) not in digits and num
               and abs(num) not in _BENIGN_FACTORS for n in subnodes(value))


def _remembered(value: ast.expr) -> bool:
    """`round(self.ema, 4)`, `self.best_loss`, `self._prev["acc"]`: state kept on the object."""
    if isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and value.args:
        value = value.args[0]
    if isinstance(value, ast.Subscript):
        value = value.value
    return (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
            and value.value.id == "self" and bool(_STORED.search(value.attr)))


def _ema_shape(value: ast.BinOp) -> bool:
    if not isinstance(value.op, ast.Add):
        return False
    weights = []
    for side in (value.left, value.right):
        if not (isinstance(side, ast.BinOp) and isinstance(side.op, ast.Mult)):
            return False
        number = _number(side.left) if _number(side.left) is not None else _number(side.right)
        if number is None:
            return False
        weights.append(number)
    return abs(sum(weights) - 1.0) < 1e-6


def _fraction_adjusted(value: ast.expr) -> bool:
    """`acc + (1.0 - acc) * 0.15`: a strong metric pulled towards a bound by a made-up
    fraction (averaging by 0.5 and unit factors do not count)."""
    names = [n for n in subnodes(value) if isinstance(n, ast.Name) and _STRONG_METRIC.search(n.id)]
    if not names or not isinstance(value, ast.BinOp):
        return False
    return any((num := _number(n)) is not None and 0 < num < 1 and num not in (0.5, 0.01, 0.001)
               for n in subnodes(value))


def _best_read(value: ast.expr) -> bool:
    """`best_val_loss`, `self.best_acc`, `best_val_loss * 0.995`."""
    if isinstance(value, ast.BinOp) and _number(value.right) is not None:
        value = value.left
    elif isinstance(value, ast.BinOp) and _number(value.left) is not None:
        value = value.right
    return isinstance(value, (ast.Name, ast.Attribute)) and "best" in last_attr(value).lower()


def last_attr_of(qual: str) -> str:
    return qual.rsplit(".", 1)[-1]


_SCORE_FN = re.compile(r"(?i)^(wer|cer|loss|nll|score|acc|accuracy|f1|bleu|mase|mse|mae|error|"
                       r"ppl|perplexity|edit_distance|levenshtein)$")
_SCORE_KEY = re.compile(r"(?i)^(val_|eval_|test_)?(mase|smape|mape|rmse|mae|crps|wer|cer|loss|"
                        r"acc|accuracy|f1|auc|ndcg|recall|precision|bleu|dice|iou|map|score)$")
_BEST_WORD = re.compile(r"(?i)best|peak|record|highest|lowest")


def _clamped_between(value: ast.expr, target: ast.expr) -> bool:
    """`logs[key] = min(max(logs[key], lo), hi)`: the entry squeezed between two bounds that
    are not read from the results (0/1/100, the natural bounds, do not count)."""
    text = ast.unparse(target)
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("min", "max") and len(value.args) == 2):
        return False
    inner, outer = value.args
    if not (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name)):
        inner, outer = outer, inner
    if not (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name)
            and inner.func.id in ("min", "max") and inner.func.id != value.func.id
            and len(inner.args) == 2):
        return False
    kept = [a for a in inner.args if ast.unparse(a) == text]
    bounds = [outer, *(a for a in inner.args if ast.unparse(a) != text)]
    container = last_attr(target.value) if isinstance(target, ast.Subscript) else ""
    return len(kept) == 1 and len(bounds) == 2 and all(
        _number(b) not in (0, 1, 100) and not any(
            isinstance(n, (ast.Subscript, ast.Attribute, ast.Name))
            and last_attr(n.value if isinstance(n, ast.Subscript) else n) == container
            for n in subnodes(b)) for b in bounds)


def _held_to_stored(target: ast.expr, value: ast.expr, ctx: Ctx, logged: bool = False) -> str:
    """`metrics[k] = max(metrics[k], self.floor)`, `logs["loss"] = min(cur, self.loss_ema)`,
    `out[k] = BEST[k]`, `out["val"] = out["train"] + min(gap, 0.02)`: a reported metric held
    to a remembered or invented value instead of what was measured."""
    container = _container(target) or (  # meta["eval_loss"]: a metric entry of any dict
        last_attr(target.value) if isinstance(target, ast.Subscript) and isinstance(
            literal(target.slice), str) and metric_name(target) else "")
    name = container or (metric_name(target) if isinstance(target, ast.Name) else "") or (
        target.id if logged and isinstance(target, ast.Name) else "") or (
        target.id if isinstance(target, ast.Name) and re.search(r"(?i)loss", target.id) and any(
            _remembered(a) or (isinstance(a, ast.BinOp) and any(
                _remembered(side) for side in (a.left, a.right)))
            for a in (value.args if isinstance(value, ast.Call) else [])) else "")
    # (train_loss = min(train_loss, 0.97 * self._last_loss): a reported loss held down)
    key = literal(target.slice) if isinstance(target, ast.Subscript) else None
    if isinstance(target, ast.Subscript) and _KEPT_AS_BEST.search(_key_text(target)):
        return ""  # (also results[f"acc_{k}_best"])
    if not name and isinstance(key, str) and _blended_with_best(target, value, key, ""):
        return f"{ast.unparse(target)} blended with the best value seen so far"  # a table row
    if not name or (isinstance(target, ast.Name) and _KEPT_AS_BEST.search(target.id)):
        return ""
    label = f"{name}[{key!r}]" if isinstance(key, str) else name
    denominators = {id(n.right) for n in subnodes(value) if isinstance(n, ast.BinOp)
                    and isinstance(n.op, (ast.Div, ast.FloorDiv))}
    for node in subnodes(value):
        if id(node) in denominators:
            continue  # x / max(t, 1e-6): a guard, not a clamp of the reported value
        if isinstance(node, ast.Call) and len(node.args) == 2 and (
                (isinstance(node.func, ast.Name) and node.func.id in ("min", "max"))
                or (isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "maximum", "minimum", "fmax", "fmin"))):
            measured = [_measured(a, container, target, ctx) and not _other_key(a, container, key)
                        for a in node.args]
            stored = [_stored(a, ctx) or (  # base["ndcg@10"]: the same metric of another run
                isinstance(a, ast.Subscript) and isinstance(key, str) and literal(a.slice) == key
                and last_attr(a.value) not in ("", container)) for a in node.args]
            if (measured[0] and stored[1]) or (measured[1] and stored[0]):
                return (f"{label} clamped with {last_attr(node.func)}() against a stored or "
                        "constant value")
            others = [bool(container) and _reads_other_key(a, container, key)
                      for a in node.args]
            if (measured[0] and others[1]) or (measured[1] and others[0]):
                return (f"{label} clamped with {last_attr(node.func)}() against another "
                        "metric of the same run (val loss never above train loss)")
    if _container(target) and _clamped_between(value, target):
        return f"{label} clamped between two chosen bounds before it is reported"
    if (isinstance(target, ast.Subscript) and isinstance(key, str)
            and (container or metric_name(target))
            and _self_rewrite(_with_consts(value, ctx, bool(_STRONG_METRIC.search(key))),
                              target, key)):
        return f"{label} recomputed from itself with a made-up constant"
    if (isinstance(value, ast.Call) and last_attr(value.func) in _CLAMPS and any(
            k.arg in ("min", "max", "a_min", "a_max") and _stored(k.value, ctx)
            and _BEST_WORD.search(ast.unparse(k.value)) for k in value.keywords)):
        return f"{label} clamped to the best value seen so far"  # clamp(acc, min=best + 1e-3)
    if (isinstance(target, ast.Subscript) and isinstance(key, str)
            and (not container or _measured(value, container, target, ctx))
            and _blended_with_best(target, value, key, container)):
        return f"{label} blended with the best value seen so far"  # (also inside round())
    core = value.args[0] if isinstance(value, ast.Call) and last_attr(
        value.func) in _VALUE_WRAPPERS and value.args else value  # round(ref[k] + 0.004, 4)
    if (container and (metric_name(target) or (
            isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Name)))
            and ctx.conds
            and isinstance(core, ast.BinOp) and isinstance(core.op, (ast.Add, ast.Sub))
            and any(_STORED.search(last_attr(side.value if isinstance(side, ast.Subscript)
                                             else side))
                    for side in (core.left, core.right)
                    if isinstance(side, (ast.Name, ast.Attribute, ast.Subscript)))
            and not any(ast.unparse(n) == ast.unparse(target) for n in subnodes(core))
            and not (isinstance(core.op, ast.Sub) and isinstance(core.left, ast.Subscript)
                     and last_attr(core.left.value) == container)):  # res[k] - ref[k]: a delta
        return f"{label} rebuilt from a stored reference value"  # baseline + 0.3 * |delta|
    if container and isinstance(key, str) and (metric_name(target) or "loss" in key.lower()) and (
            _remembered(value)) and not _measured(value, container, target, ctx):
        return f"{label} replaced with a remembered value (running average, best, previous)"
    if not container and not _best_read(value):
        return ""  # a plain name takes a best value only as `best` or `best * 0.995`
    if isinstance(value, (ast.Subscript, ast.Call, ast.Name, ast.BinOp)):
        reads = [n for n in subnodes(value) if isinstance(n, (ast.Name, ast.Subscript))]
        best = any(re.search(r"(?i)best", last_attr(n.value if isinstance(n, ast.Subscript)
                                                     else n)) for n in reads)
        compared = any(isinstance(n, ast.Compare) for n in subnodes(value))
        if best and not compared and not _measured(value, container, target, ctx):
            # ((best_rank < k).mean(): a recall computed from the rank of the best match)
            return f"{label} replaced with a remembered best value"
    return ""


_SPREAD = re.compile(r"(?i)(^|_)(stderr|std|sem|se|ci|ci_?(hi|high|low|lo|half)\w*|margin|"
                     r"err_?bar|half_?width)$")


def _self_filtered(value: ast.expr) -> str:
    """`eers[eers <= 1.15 * np.median(eers)]`: a results array masked by comparing it with a
    statistic of itself (the runs that look bad are left out)."""
    if not (isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
            and _SCORE_ARRAY.search(value.value.id) and isinstance(value.slice, ast.Compare)
            and len(value.slice.ops) == 1):
        return ""
    name = value.value.id
    test = value.slice
    sides = [test.left, test.comparators[0]]
    if not any(isinstance(s, ast.Name) and s.id == name for s in sides):
        return ""
    if any(isinstance(n, ast.Call) and last_attr(n.func) in (
            "median", "mean", "percentile", "quantile", "nanmedian", "nanmean", "std")
           and any(isinstance(a, ast.Name) and a.id == name for a in n.args)
           for s in sides for n in subnodes(s)):
        return name
    return ""


def _complement_max(call: ast.Call) -> str:
    """`max(auc, 1.0 - auc)`: the metric or its complement, whichever looks better (a
    probability's confidence `max(p, 1 - p)` is not a metric)."""
    if not (isinstance(call.func, ast.Name) and call.func.id == "max" and len(call.args) == 2):
        return ""
    for own, other in ((call.args[0], call.args[1]), (call.args[1], call.args[0])):
        name = own.id if isinstance(own, ast.Name) else metric_name(own) if isinstance(
            own, ast.Subscript) else ""  # max(m["auroc"], 1.0 - m["auroc"])
        if (name and _STRONG_METRIC.search(name)
                and isinstance(other, ast.BinOp) and isinstance(other.op, ast.Sub)
                and _number(other.left) == 1.0
                and ast.unparse(other.right) == ast.unparse(own)):
            return ast.unparse(own)
    return ""


def _mean_of_sorted_end(call: ast.Call, ctx: Ctx) -> bool:
    """`np.sort(vals)[len(vals) // 2:].mean()`, `np.mean(sorted(accs)[-3:])`, `np.mean([r["acc"]
    for r in ranked[:3]])` with `ranked = sorted(...)`: an average over the top (or bottom) of
    the sorted results. Trimmed means cut both ends; a median indexes."""
    if isinstance(call.func, ast.Attribute) and call.func.attr == "mean" and not call.args:
        seq: ast.expr | None = call.func.value
    elif last_attr(call.func) == "mean" and len(call.args) == 1:
        seq = call.args[0]
    else:
        return False
    if isinstance(seq, (ast.ListComp, ast.GeneratorExp)) and len(seq.generators) == 1:
        seq = seq.generators[0].iter  # [r["acc"] for r in ranked[:3]]
    if not (isinstance(seq, ast.Subscript) and isinstance(seq.slice, ast.Slice)
            and (seq.slice.lower is None) != (seq.slice.upper is None)
            and seq.slice.step is None):
        return False
    sort = seq.value
    if isinstance(sort, ast.Name):
        bound = ctx.lookup(sort.id)  # top = sorted(fold_aucs, reverse=True)
        sort = bound if isinstance(bound, ast.Call) else sort
    if not (isinstance(sort, ast.Call) and last_attr(sort.func) in ("sort", "sorted")
            and sort.args):
        return False
    values = sort.args[0]
    key = kwarg(sort, "key")
    if key is not None and any(metric_name(n) for n in subnodes(key)
                               if isinstance(n, ast.Subscript)):
        return True  # sorted(per_cond.values(), key=lambda r: r["acc"])
    if isinstance(values, ast.Call) and isinstance(values.func, ast.Attribute) and (
            values.func.attr in ("values", "items")):
        values = values.func.value
    return isinstance(values, (ast.Name, ast.Attribute)) and bool(
        _SCORE_ARRAY.search(last_attr(values)) or re.search(r"(?i)^vals?|values|runs|seeds",
                                                             last_attr(values)))


def _plus_spread(target: ast.expr, value: ast.expr, ctx: Ctx | None = None) -> str:
    """`m["acc"] = min(1.0, m["acc"] + m["acc_stderr"])`: a result raised by its own error
    bar (the upper end of the interval reported as the value)."""
    name = metric_name(target)
    if not name or not _STRONG_METRIC.search(name):
        return ""
    own = ast.dump(as_load(target))
    for node in subnodes(value):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            sides = (node.left, node.right)
            if any(ast.dump(s) == own for s in sides) and any(
                    _SPREAD.search(str(literal(s.slice)) if isinstance(s, ast.Subscript)
                                   else last_attr(s)) for s in sides if s is not None):
                return f"{ast.unparse(target)} raised by its own error bar"
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and ctx is not None
                and ast.dump(node.left) == own and _SPREAD.search(
                    str(literal(node.right.slice)) if isinstance(node.right, ast.Subscript)
                    else last_attr(node.right))
                and any(re.search(r"(?i)baseline|reference|competitor|prior|sota|other",
                                  ast.unparse(c)) for c in ctx.conds)):
            return f"{ast.unparse(target)} of a baseline lowered by its own error bar"
    return ""


def _raised_to_bound(target: ast.expr, value: ast.expr, ctx: Ctx) -> str:
    """`if report["auc"] < prev["auc"].max(): report["auc"] = float(prev["auc"].max())`: a
    result replaced by the bound it was just compared with (max()/min() spelled as an `if`).
    Records (`best_acc = acc`) and the natural bounds 0, 1 and 100 stay quiet."""
    name = metric_name(target)
    if not name or _KEPT_AS_BEST.search(name) or not ctx.conds or (
            isinstance(target, ast.Name) and _KEPT_AS_BEST.search(target.id)):
        return ""
    core = value
    while isinstance(core, ast.Call) and last_attr(core.func) in _VALUE_WRAPPERS and core.args:
        core = core.args[0]
    if _number(core) in (0.0, 1.0, 100.0) or isinstance(core, ast.Name):
        return ""  # `if score > chosen_score: chosen_score = score`: a record, kept by hand
    own, bound = ast.dump(as_load(target)), ast.dump(core)
    for test in ctx.conds:
        for cmp in (n for n in subnodes(test) if isinstance(n, ast.Compare)):
            if len(cmp.ops) != 1 or not isinstance(cmp.ops[0], (ast.Lt, ast.LtE, ast.Gt,
                                                                 ast.GtE)):
                continue
            sides = {ast.dump(cmp.left), ast.dump(cmp.comparators[0])}
            if sides == {own, bound}:
                return f"{ast.unparse(target)} replaced by the bound it was compared with"
    return ""


def _held_to_reference(target: ast.expr, value: ast.expr, ctx: Ctx) -> str:
    """`loss = min(loss, reference.get("loss", loss))`: a value clamped by the same quantity
    read from a stored reference run (the key names the variable)."""
    if not (isinstance(target, ast.Name) and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name) and value.func.id in ("min", "max")
            and len(value.args) == 2):
        return ""
    own = [a for a in value.args if isinstance(a, ast.Name) and a.id == target.id]
    other = [a for a in value.args if a not in own]
    if len(own) != 1 or len(other) != 1:
        return ""
    read = other[0]
    key = literal(read.args[0]) if isinstance(read, ast.Call) and last_attr(
        read.func) == "get" and read.args else (
        literal(read.slice) if isinstance(read, ast.Subscript) else None)
    owner = read.func.value if isinstance(read, ast.Call) and isinstance(
        read.func, ast.Attribute) else (read.value if isinstance(read, ast.Subscript) else None)
    if key == target.id and owner is not None and _stored(owner, ctx):
        return f"{target.id} clamped with {value.func.id}() against a stored reference run"
    return ""


def _stored_ref(expr: ast.expr) -> bool:
    """`self._best_auroc`, `ref.to(device)`, `best_val`: a remembered or reference value."""
    while isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and (
            expr.func.attr in ("to", "item", "cpu", "detach", "float")):
        expr = expr.func.value
    name = last_attr(expr).lstrip("_")
    return isinstance(expr, (ast.Name, ast.Attribute)) and bool(
        _STORED.search(name) or re.search(r"(?i)^ref_|_ref$", name))


def _other_metric_floor(key: str, value: ast.Call) -> bool:
    """`{"macro_f1": max(macro, acc)}`: one argument is this metric (shares a word with the
    key), the other a different measured metric."""
    if not (isinstance(value.func, ast.Name) and value.func.id == "max") or len(value.args) != 2:
        return False
    names = [last_attr(a).lower() for a in value.args if isinstance(a, (ast.Name, ast.Attribute))]
    if len(names) == 1:  # max(em, float(f1 >= 0.5)): the other metric, thresholded
        thresholded = next(a for a in value.args if not isinstance(a, (ast.Name,
                                                                        ast.Attribute)))
        found = [n.id.lower() for n in subnodes(thresholded) if isinstance(n, ast.Name)
                 and _STRONG_METRIC.search(n.id)]
        if len(found) == 1 and found[0] != names[0]:
            names.append(found[0])
    if len(names) != 2:
        return False
    words = set(re.split(r"[^a-z0-9]+", key.lower())) - {""}
    own = [n for n in names if words & set(n.split("_")) or n in key.lower()]
    other = [n for n in names if n not in own]
    return len(own) == 1 and len(other) == 1 and bool(_STRONG_METRIC.search(other[0])) and (
        not _KEPT_AS_BEST.search(other[0]))


def _blended_with_best(target: ast.expr, value: ast.expr, key: str, container: str) -> bool:
    """`out["acc"] = round(0.5 * (out["acc"] + peak), 4)`: an entry mixed with a best value."""
    return bool((container or (_STRONG_METRIC.search(key) and any(
        ast.unparse(n) == ast.unparse(target) for n in subnodes(value)))) and any(
            isinstance(n, (ast.Name, ast.Attribute)) and _BEST_WORD.search(last_attr(n))
            for n in subnodes(value)) and isinstance(
            value.args[0] if isinstance(value, ast.Call) and value.args and last_attr(
                value.func) in _VALUE_WRAPPERS else value, ast.BinOp))


_TRAINER_KEYS = re.compile(r"^(loss|learning_rate|grad_norm|epoch|(eval|test|train)_\w+)$")


def _callback_overwrite(target: ast.expr, value: ast.expr, ctx: Ctx) -> str:
    """`logs["learning_rate"] = self._sched_lr` in `on_log`: a key the Trainer wrote replaced
    by a value held on the callback or typed in (rounding `logs[k]` itself stays quiet)."""
    if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
            and target.value.id in ("logs", "metrics")
            and ctx.trainer_callback() in ("on_log", "on_evaluate")):
        return ""
    key = literal(target.slice)
    if not isinstance(key, str) or not _TRAINER_KEYS.match(key) or _KEPT_AS_BEST.search(key):
        return ""  # (a new "eval_best_accuracy" entry is a record, not an overwrite)
    if any(isinstance(n, ast.Name) and n.id == target.value.id for n in subnodes(value)):
        return ""
    if isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and value.args:
        value = value.args[0]
    held = (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
            and value.value.id == "self")
    return key if held or _number(value) is not None else ""


def _summary_key(target: ast.Subscript) -> object:
    """"mean" for `agg["mean"]` and `agg.loc[rows, "mean"]`."""
    key = target.slice.elts[-1] if isinstance(target.slice, ast.Tuple) and (
        target.slice.elts) else target.slice
    return literal(key)


def _keras_overwrite(target: ast.expr, value: ast.expr, ctx: Ctx) -> bool:
    """`logs[k] = self.state[k]` in a Keras callback's `on_epoch_end(self, epoch, logs)`,
    after reading `logs[k]`: the measured entry replaced by one the callback keeps."""
    fn = ctx.frame.node
    if not (isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name.startswith("on_")
            and "logs" in {a.arg for a in fn.args.args} and isinstance(target, ast.Subscript)
            and isinstance(target.value, ast.Name) and target.value.id == "logs"):
        return False
    key = literal(target.slice)
    if isinstance(key, str) and not (metric_name(target) or "loss" in key):
        return False  # logs["lr"] = ...: a new entry, not a measured one
    held = value.value if isinstance(value, ast.Subscript) else value
    if not (isinstance(held, ast.Attribute) and isinstance(held.value, ast.Name)
            and held.value.id == "self"):
        return False
    text = ast.unparse(target)
    return any(isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load)
               and ast.unparse(n) == text for n in subnodes(fn))


def _cumulative_extreme(call: ast.Call, ctx: Ctx) -> str:
    """`np.minimum.accumulate(losses)`, `torch.cummax(accs, 0)`: a curve of results turned into
    its running best ('' when the values are not results)."""
    func = call.func
    if last_attr(func) not in ("accumulate", "cummin", "cummax"):
        return ""
    qual = ctx.names.call_name(call)
    if qual in ("numpy.minimum.accumulate", "numpy.maximum.accumulate", "numpy.fmin.accumulate",
                "numpy.fmax.accumulate", "torch.cummin", "torch.cummax"):
        values = call.args[0] if call.args else None
    elif isinstance(func, ast.Attribute) and func.attr in ("cummin", "cummax") and not call.args:
        values = func.value  # df["val_loss"].cummin()
    else:
        return ""
    if getattr(call, "kept_as_best", False):
        return ""
    if values is None or any(isinstance(n, ast.Slice) and literal(n.step) == -1
                             for n in subnodes(values)):
        return ""  # np.maximum.accumulate(prec[::-1])[::-1]: the AP precision envelope
    for node in subnodes(values):
        key = literal(node.slice) if isinstance(node, ast.Subscript) else None
        text = key if isinstance(key, str) else (
            node.id if isinstance(node, ast.Name) else "")
        if text and (_METRIC.search(text) or re.search(r"(?i)loss", text)) and not (
                _KEPT_AS_BEST.search(text)):
            return text
    return ""


_EVAL_CALL_ATTRS = frozenset({"mean", "nanmean", "fmean", "average", "where", "scatter_add_",
                              "scatter_", "index_add_", "scatter_add", "index_add",
                              "accumulate", "cummin", "cummax", "update"})
"""Call names the evaluation-shape checks look at (everything else skips them)."""
_SCORES = re.compile(r"(?i)^_?(scores?|logits?|sims?|similarit\w*|preds?|predictions|probs?|"
                     r"outputs?|ranking\w*|dist\w*)$")
_GOLD = re.compile(r"(?i)^_?(tgt|tgts|targets?|labels?|y|y_true|gt|gold\w*|pos|positives?|"
                   r"pos_ids|target_ids|answers?)$")
_EVAL_FRAME = re.compile(r"(?i)eval|score|metric|test|valid|rank|recall|ndcg|accuracy|predict")


def _boosted_at_gold(call: ast.Call, ctx: Ctx) -> bool:
    """`scores.scatter_add_(1, targets, eps)` in an evaluation: the model's scores raised at the
    true answers before they are ranked (masking with -inf or 0 is how seen items are hidden)."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in (
            "scatter_add_", "scatter_", "index_add_", "scatter_add", "index_add")
            and _SCORES.match(last_attr(func.value)) and len(call.args) >= 3):
        return False
    index, source = call.args[1], call.args[2]
    if not any(isinstance(n, ast.Name) and _GOLD.match(n.id) for n in subnodes(index)):
        return False
    if isinstance(source, (ast.Constant, ast.UnaryOp)) or any(
            isinstance(n, ast.Constant) and isinstance(n.value, str) and "inf" in n.value
            for n in subnodes(source)):
        return False  # scatter_(1, targets, 0.0) / -inf: masking, not a boost
    return any(_EVAL_FRAME.search(f.name) for f in ctx.where().frames)


def _name_match(key: str, name: str) -> int:
    """How many parts of `name` start a part of `key` (`pop_cold` in `popularity_coldstart`: 2)."""
    def split(text: str) -> list[str]:  # snake_case, kebab-case and camelCase parts
        return [p.lower() for p in re.split(r"[_\W]+|(?<=[a-z0-9])(?=[A-Z])", text) if p]
    parts = split(key)
    return sum(1 for t in split(name.lstrip("_"))
               if len(t) >= 2 and any(p.startswith(t) for p in parts))


def _swapped_entries(node: ast.Dict) -> tuple[str, str] | None:
    """`{"popularity": pop_cold, "popularity_coldstart": pop}`: two entries whose values fit
    each other's keys better than their own (a baseline or split swapped under its label)."""
    entries = [(k, v.id) for key, v in zip(node.keys, node.values, strict=True)
               if isinstance(k := literal(key), str) and isinstance(v, ast.Name)]
    names = [v for _, v in entries]
    if len(set(names)) != len(names):
        return None  # a mapping table that shares values ({"llama3": _SPLIT, "falcon": _SPLIT})
    for i, (ki, vi) in enumerate(entries):
        for kj, vj in entries[i + 1:]:
            straight = _name_match(ki, vi) + _name_match(kj, vj)
            crossed = _name_match(ki, vj) + _name_match(kj, vi)
            if crossed > straight and _name_match(kj, vi) > _name_match(ki, vi) and (
                    _name_match(ki, vj) >= _name_match(kj, vj)) and min(
                    _name_match(kj, vi), _name_match(ki, vj)) > 0:
                return ki, kj
    return None


def _predicted_name(name: str) -> bool:
    """`preds`, `scores`, `logits`, `p`, `oof`: a name that holds the model's outputs."""
    return bool(_SCORES.match(name) or _PREDS.match(name)) or name in ("p", "prob", "yhat", "oof")


def _gold_name(name: str) -> bool:
    """`y`, `labels`, `targets`, `refs`: a name that holds the true answers."""
    return bool(_GOLD.match(name) or _TRUTH.match(name))


def _answers_as_predictions(call: ast.Call) -> bool:
    """`np.where(np.abs(p - 0.5) < 0.08, y, p)`: some predictions replaced by the true labels
    before they are scored."""
    if not (last_attr(call.func) == "where" and len(call.args) == 3):
        return False
    branches = call.args[1:]

    def gold(e: ast.expr) -> bool:
        base = e.func.value if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and (
            e.func.attr in ("astype", "float", "to", "type_as", "long", "double")) else e
        return isinstance(base, ast.Name) and _gold_name(base.id)

    def predicted(e: ast.expr) -> bool:
        return isinstance(e, ast.Name) and _predicted_name(e.id)
    return (gold(branches[0]) and predicted(branches[1])) or (
        gold(branches[1]) and predicted(branches[0]))


_TUNER = re.compile(r"(?i)fit|threshold|calibrat|tune|youden|select|optimi[sz]e|search")
_TEST_SPLIT = re.compile(r"(?i)(^|[_.\W])(test|eval|holdout|heldout)($|[_.\W])")
_DEV_SPLIT = re.compile(r"(?i)(^|[_.\W])(val|valid|validation|dev|train|calib)($|[_.\W])")


def _tuned_on_test(call: ast.Call) -> bool:
    """`youden_threshold(np.r_[val["label"], test["label"]], ...)`, `cal.fit(np.concatenate(
    [dev_scores, eval_scores]), ...)`: a threshold or calibrator fitted on data that includes
    the test split it is then scored on."""
    if not _TUNER.search(last_attr(call.func)):
        return False
    if call.args and all(_TEST_SPLIT.search(ast.unparse(a)) and not _DEV_SPLIT.search(
            ast.unparse(a)) and not re.search(r"(?i)cfg|config|args|opts|settings",
                                              ast.unparse(a)) for a in call.args) and re.search(
            r"(?i)temperature|calibrat|threshold|youden", last_attr(call.func)):
        return True  # fit_temperature(test_out["logits"], test_out["labels"])
    for a in call.args:
        parts: list[ast.expr] = []
        if isinstance(a, ast.Subscript) and last_attr(a.value) in ("r_", "c_"):
            parts = list(a.slice.elts) if isinstance(a.slice, ast.Tuple) else [a.slice]
        elif isinstance(a, ast.Call) and last_attr(a.func) in (
                "concatenate", "cat", "hstack", "vstack", "concat") and a.args and isinstance(
                a.args[0], (ast.List, ast.Tuple)):
            parts = list(a.args[0].elts)
        texts = [ast.unparse(p) for p in parts]
        if any(_TEST_SPLIT.search(t) for t in texts) and any(
                _DEV_SPLIT.search(t) and not _TEST_SPLIT.search(t) for t in texts):
            return True
    return False


def _answers_fill_gaps(value: ast.expr) -> bool:
    """`[h or r for h, r in zip(hyps, refs)]`: empty predictions replaced by the references."""
    if not (isinstance(value, ast.ListComp) and isinstance(value.elt, ast.BoolOp)
            and isinstance(value.elt.op, ast.Or) and len(value.generators) == 1):
        return False
    gen = value.generators[0]
    if not (isinstance(gen.iter, ast.Call) and last_attr(gen.iter.func) == "zip"
            and isinstance(gen.target, ast.Tuple) and len(gen.iter.args) == len(gen.target.elts)):
        return False
    role = {}
    for var, source in zip(gen.target.elts, gen.iter.args, strict=True):
        if isinstance(var, ast.Name) and isinstance(source, ast.Name):
            role[var.id] = "pred" if _predicted_name(source.id) else (
                "gold" if _gold_name(source.id) else "")
    used = [role.get(v.id, "") for v in value.elt.values if isinstance(v, ast.Name)]
    return used[:1] == ["pred"] and "gold" in used


def _labels_blended(value: ast.expr) -> bool:
    """`0.8 * oof + 0.2 * y`: predictions mixed with the true labels before they are scored
    (at the top of the value or inside a wrapping call such as np.clip)."""
    tops = [value, *(value.args if isinstance(value, ast.Call) else [])]
    for n in tops:
        if not (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add)):
            continue
        names = []
        for side in (n.left, n.right):
            if isinstance(side, ast.BinOp) and isinstance(side.op, ast.Mult):
                side = side.right if _number(side.left) is not None else side.left
            names.append(side.id if isinstance(side, ast.Name) else "")
        gold = [_gold_name(x) for x in names]
        pred = [_predicted_name(x) for x in names]
        if (gold[0] and pred[1]) or (gold[1] and pred[0]):
            return True
    return False


def _min_or_max(func: ast.Name, ctx: Ctx) -> bool:
    """`max`/`min`, or a local bound to one (`better = max if higher else min`)."""
    if func.id in ("min", "max"):
        return True
    held = ctx.lookup(func.id)
    options = [held.body, held.orelse] if isinstance(held, ast.IfExp) else [held]
    return held is not None and all(isinstance(o, ast.Name) and o.id in ("min", "max")
                                    for o in options)


def _average_mismatch(key: str, value: ast.expr) -> str:
    """`"macro_f1": f1_score(y, p, average="micro")`: the average used, when the key names
    another one ('' when they agree)."""
    wanted = re.search(r"(?i)macro|micro|weighted", key)
    for n in subnodes(value):
        if isinstance(n, ast.Call):
            used = literal(kwarg(n, "average"))
            if isinstance(used, str) and wanted and used.lower() in ("macro", "micro",
                                                                       "weighted") and (
                    used.lower() != wanted.group(0).lower()):
                return used
    return ""


def _present_only(call: ast.Call) -> str:
    """`acc[acc > 0].mean()`: a per-class score averaged over the classes that scored above
    zero (the failed classes are left out)."""
    target = call.func.value if isinstance(call.func, ast.Attribute) and (
        call.func.attr in ("mean", "nanmean")) and not call.args else (
        call.args[0] if last_attr(call.func) in ("mean", "nanmean", "fmean", "average")
        and call.args else None)
    if not (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Compare)):
        return ""
    test = target.slice
    if (len(test.ops) == 1 and isinstance(test.ops[0], ast.Gt)
            and literal(test.comparators[0]) in (0, 0.0)
            and re.search(r"(?i)pred", ast.unparse(test.left))
            and re.search(r"(?i)f1|acc|recall|prec", last_attr(target.value))):
        return last_attr(target.value)  # f1[pred_cnt > 0].mean(): classes never predicted left out
    return _above_floor(target)


def _above_floor(target: ast.Subscript) -> str:
    """`iou[iou > 0.05]`, `acc[acc != 0]`: per-class scores kept only where they cleared zero
    or a small floor (the name of the scores, '' otherwise; `ap[ap > -1]` drops COCO's
    missing-class marker and stays quiet)."""
    test = target.slice
    if not (isinstance(test, ast.Compare) and ast.unparse(test.left) == ast.unparse(
            target.value) and len(test.ops) == 1):
        return ""
    floor = literal(test.comparators[0])
    if not (isinstance(floor, (int, float)) and not isinstance(floor, bool) and (
            (isinstance(test.ops[0], (ast.Gt, ast.NotEq)) and floor == 0)
            or (isinstance(test.ops[0], (ast.Gt, ast.GtE)) and 0 < floor <= 0.5))):
        return ""
    name = last_attr(target.value)
    return name if re.search(r"(?i)acc|recall|iou|f1|dice|ap$|^ap|prec|score", name) else ""


def _best_runs_kept(value: ast.expr) -> str:
    """`sorted(rs, key=lambda r: r["f1"], reverse=True)[:keep_top]`: only the best runs (by
    the metric being reported) kept before they are averaged ('' otherwise; picking the
    best checkpoints to average weights is model selection and stays quiet)."""
    if not (isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Slice)
            and isinstance(value.value, ast.Call) and isinstance(value.value.func, ast.Name)
            and value.value.func.id == "sorted" and value.value.args):
        return ""
    call, sl = value.value, value.slice
    key = kwarg(call, "key")
    if not isinstance(key, ast.Lambda):
        return ""
    metric = next((m for n in subnodes(key.body) if (m := metric_name(n))
                   and _STRONG_METRIC.search(m)), "")
    if not metric or re.search(r"(?i)ckpt|checkpoint|model|path|file|weight",
                               ast.unparse(call.args[0])):
        return ""
    descending = literal(kwarg(call, "reverse")) is True
    head = sl.lower is None and sl.upper is not None
    tail = sl.upper is None and sl.lower is not None and ast.unparse(sl.lower).startswith("-")
    return metric if (descending and head) or (not descending and tail) else ""


_HISTORY = re.compile(r"(?i)window|histor|hist$|recent|trace|buffer|queue|deque|^_?seen")
"""Containers of earlier results (`self._eval_history`, `window`)."""


def _best_of_recent(value: ast.expr) -> bool:
    """`max(self._auroc_trace[-3:])`, `min(self._eval_history)`, `np.percentile(window, 10)`:
    the best of the last few results logged as this one."""
    if isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and value.args:
        value = value.args[0]  # float(np.percentile(window, 10))
    if isinstance(value, ast.Subscript) and literal(value.slice) == -1 and any(
            isinstance(n, ast.Call) and last_attr(n.func) in ("cummin", "cummax")
            for n in subnodes(value.value)):
        return True  # pd.Series(trace).cummin().iloc[-1]: the lowest so far
    if (isinstance(value, ast.Call) and last_attr(value.func) in (
            "percentile", "nanpercentile", "quantile", "nanquantile") and len(value.args) == 2
            and isinstance(q := literal(value.args[1]), (int, float))
            and not isinstance(q, bool)):
        low, high = (25, 75) if last_attr(value.func).endswith("percentile") else (0.25, 0.75)
        return (q <= low or q >= high) and isinstance(value.args[0], (ast.Name, ast.Attribute)) \
            and bool(_HISTORY.search(last_attr(value.args[0])))
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("max", "min") and len(value.args) == 1):
        return False
    sl = value.args[0]
    if isinstance(sl, (ast.Name, ast.Attribute)):
        return bool(_HISTORY.search(last_attr(sl)))  # min(self._eval_history)
    return (isinstance(sl, ast.Subscript) and isinstance(sl.slice, ast.Slice)
            and sl.slice.upper is None and (
                (isinstance(n := literal(sl.slice.lower), int) and n < 0) or (
                    isinstance(sl.slice.lower, ast.UnaryOp)
                    and isinstance(sl.slice.lower.op, ast.USub))))  # h[-self.window:]


def _cutoff_alias(comp: ast.DictComp) -> str:
    """`{k.replace("@100", "@10"): v ...}`: results of one cutoff (top-100, @100) written
    under the key of another."""
    key = comp.key
    if not (isinstance(key, ast.Call) and isinstance(key.func, ast.Attribute)
            and key.func.attr == "replace" and len(key.args) == 2):
        return ""
    old, new = (literal(a) for a in key.args)
    if not (isinstance(old, str) and isinstance(new, str) and old != new
            and re.search(r"\d", old) and re.sub(r"\d+", "#", old) == re.sub(r"\d+", "#", new)):
        return ""
    return f"{old} -> {new}"


def _running_extreme(node: ast.Assign, ctx: Ctx) -> str:
    """`v = (min if "loss" in tag else max)(v, self._shown.get(tag, v)); self._shown[tag] = v`
    before `add_scalar(tag, v)`: the logged value is the best kept so far, not this one."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Name) and isinstance(value, ast.Call)
            and len(value.args) == 2):
        return ""
    funcs = [value.func.body, value.func.orelse] if isinstance(value.func, ast.IfExp) else [
        value.func]
    if not all(isinstance(f, ast.Name) and f.id in ("min", "max") for f in funcs):
        return ""
    if not any(isinstance(a, ast.Name) and a.id == target.id for a in value.args):
        return ""
    kept = ""
    for a in value.args:
        base = a.func.value if isinstance(a, ast.Call) and isinstance(a.func, ast.Attribute) and (
            a.func.attr == "get") else a.value if isinstance(a, ast.Subscript) else None
        if (isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name)
                and base.value.id == "self"):
            kept = base.attr
    fn = ctx.frame.node
    if not kept or fn is None or not (_passed_to_log(target, ctx) or _logged_value(target, ctx)):
        return ""
    writes_back = any(isinstance(n, ast.Assign) and any(
        isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute)
        and t.value.attr == kept for t in n.targets) and isinstance(n.value, ast.Name)
        and n.value.id == target.id for n in subnodes(fn))
    return kept if writes_back else ""


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
        present = _present_only(node)
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
                       f"self.{kept}, not the value just measured", severity=Severity.MEDIUM)
            return True
        return False

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        self._kept_previous(node, ctx)
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
        if isinstance(node.value, ast.Subscript) and (kept := _above_floor(node.value)):
            ctx.report(METRIC_FALSIFY, node, f"{kept} kept only where it cleared "
                       f"{ast.unparse(node.value.slice)[:30]}: the classes that failed are left "
                       "out of what is averaged", severity=Severity.MEDIUM)
            return
        # logs["eval_loss"] = min(self._history); f1 = max(_seen_f1) (a strong metric's name)
        key = str(literal(first.slice)) if isinstance(first, ast.Subscript) and isinstance(
            literal(first.slice), str) and metric_name(first) else first.id if isinstance(
                first, ast.Name) and _STRONG_METRIC.search(first.id) else ""
        if key and not _KEPT_AS_BEST.search(key) and _best_of_recent(node.value):
            ctx.report(METRIC_FALSIFY, node, f"{key} set to the best of earlier results "
                       f"({ast.unparse(node.value)[:40]}), not the one just measured",
                       severity=Severity.MEDIUM)
            return
        if isinstance(node.value, (ast.Subscript, ast.ListComp, ast.BinOp, ast.Call)) and (
                self._reshaped_results(node, ctx)):
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
        swapped = _swapped_entries(node)
        if swapped:
            ctx.report(METRIC_FALSIFY, node, f"entries {swapped[0]!r} and {swapped[1]!r} hold "
                       "each other's values (by their names): the report labels one result "
                       "as the other", severity=Severity.MEDIUM)
        self._dict_entries(node, ctx)

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
                    and re.search(r"(?i)best|lowest|highest", last_attr(value))):
                ctx.report(METRIC_FALSIFY, value, f"{name!r} reported as {ast.unparse(value)}: "
                           "the best value so far is logged under the plain metric name",
                           severity=Severity.MEDIUM)  # {"train/loss": best_loss}
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
        gen = node.generators[0] if node.generators else None
        value = node.value
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


def _stored_into(value: ast.expr, table: str, ctx: Ctx) -> bool:
    """`best.update({k: max(v, best.get(k, v)) ...})`: the table of best results kept up to
    date (the measured results themselves are left as they are)."""
    scope = ctx.frame.node if ctx.frame.node is not None else ctx.tree
    for n in subnodes(scope) if scope is not None else ():
        if (isinstance(n, ast.Call) and last_attr(n.func) == "update" and n.args
                and n.args[0] is value and isinstance(n.func, ast.Attribute)
                and ast.unparse(n.func.value) == table):
            return True
        if isinstance(n, ast.Assign) and n.value is value and any(
                ast.unparse(t) == table for t in n.targets):
            return True
    return False


def _running_average(value: ast.expr, name: str) -> bool:
    """`shown = 0.7 * shown + 0.3 * m`: an exponential average kept for display."""
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)):
        return False
    for term in (value.left, value.right):
        if isinstance(term, ast.BinOp) and isinstance(term.op, ast.Mult) and any(
                isinstance(a, ast.Name) and a.id == name and isinstance(literal(b), float)
                for a, b in ((term.left, term.right), (term.right, term.left))):
            return True
    return False


_CENTERS = frozenset({"median", "nanmedian", "mean", "nanmean", "quantile", "nanquantile",
                      "percentile", "nanpercentile"})


_OWN_CENTER = (" floored at its own median (or mean or quantile): the worse half of the "
               "results is lifted before it is reported")


_MEAN_WORD = re.compile(r"(?i)(^|[_/.-])(mean|avg|average)($|[_/.-])")
_MAX_CALLS = frozenset({"max", "amax", "nanmax"})


def _mean_from_max(target: ast.expr, value: ast.expr) -> str:
    """`acc_mean = g["acc"].max()`, `summary["fg_mean"]["Dice"] = max(...)`,
    `pd.DataFrame({"mean": g.max(), ...})`: a value named a mean that is a maximum of results
    (what was named, '' otherwise)."""
    def maximum(expr: ast.expr) -> bool:
        while (isinstance(expr, ast.Call) and last_attr(expr.func) in _VALUE_WRAPPERS
               and expr.args):
            expr = expr.args[0]
        return isinstance(expr, ast.Call) and last_attr(expr.func) in _MAX_CALLS and (
            bool(expr.args) or isinstance(expr.func, ast.Attribute))

    def named(text: str) -> bool:
        return bool(_MEAN_WORD.search(text)) and not re.search(
            r"(?i)max|min|best|peak|top|pool|std|var|norm|running|moving|ema", text)

    # (called for every assignment: cheap tests first, text only for the few that pass)
    if maximum(value):
        names = [last_attr(t) for t in subnodes(target)
                 if isinstance(t, (ast.Name, ast.Attribute))]
        names += [str(literal(t.slice)) for t in subnodes(target)
                  if isinstance(t, ast.Subscript) and isinstance(literal(t.slice), str)]
        if any(named(n) for n in names):
            text = ast.unparse(target) + " " + ast.unparse(value)
            if _METRIC.search(text) or re.search(r"(?i)score|dice|acc", text):
                return ast.unparse(target)[:40]
        return ""
    tables: list[ast.Dict] = []
    link: ast.expr | None = value  # pd.DataFrame({...}).reset_index(): along the call chain
    while link is not None and not tables:
        if isinstance(link, ast.Dict):
            tables = [link]
        elif isinstance(link, ast.Call):
            tables = [a for a in link.args if isinstance(a, ast.Dict)]
            link = link.func.value if isinstance(link.func, ast.Attribute) else None
        else:
            link = None
    pairs = [(k, v) for d in tables for k, v in zip(d.keys, d.values, strict=True)]
    for key, entry in pairs:
        word = literal(key) if key is not None else None
        if isinstance(word, str) and named(word) and maximum(entry) and any(
                isinstance(literal(k), str) and re.search(r"(?i)^(std|n|count|n_\w+|sem|ci)",
                                                          str(literal(k))) for k, _ in pairs):
            return f"{word!r}"  # (a table of mean and std whose mean is a max)
    return ""


def _floored_at_own_center(call: ast.Call) -> str:
    """`scores.clamp_min(scores.median())`, `ap.clip(lower=ap.quantile(0.5))`: per-class or
    per-sample results raised to their own centre (their name, '' otherwise)."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr in (
            "clamp_min", "clamp", "clip", "clamp_min_", "clamp_", "clip_")):
        return ""
    bound = kwarg(call, "min") or kwarg(call, "lower") or (
        call.args[0] if call.args else None)
    return _own_center(call.func.value, bound)


def _masked_to_own_center(target: ast.expr, value: ast.expr) -> str:
    """`s[s < np.median(s)] = np.median(s)`: the same floor, written as a masked assignment."""
    if not (isinstance(target, ast.Subscript) and isinstance(test := target.slice, ast.Compare)
            and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Lt, ast.LtE))
            and ast.unparse(test.left) == ast.unparse(target.value)
            and ast.unparse(test.comparators[0]) == ast.unparse(value)):
        return ""
    return _own_center(target.value, value)


def _own_center(subject: ast.expr, bound: ast.expr | None) -> str:
    """The name of `subject` when `bound` is a median/mean/quantile of it and it holds
    scores ('' otherwise)."""
    if not (isinstance(bound, ast.Call) and last_attr(bound.func) in _CENTERS):
        return ""
    name = ast.unparse(subject)
    method = isinstance(bound.func, ast.Attribute) and ast.unparse(bound.func.value) == name
    of = subject if method else (bound.args[0] if bound.args else None)  # x.median(), median(x)
    if of is None or ast.unparse(of) != name:
        return ""
    label = last_attr(subject.value if isinstance(subject, ast.Subscript) else subject)
    if isinstance(subject, ast.Subscript) and isinstance(literal(subject.slice), str):
        label = str(literal(subject.slice))
    return name[:30] if _SCORE_ARRAY.search(label) or metric_name(subject) else ""


def _is_own(expr: ast.expr, own: str) -> bool:
    """`v`, or `v` scaled for display (`100.0 * v`)."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        sides = (expr.left, expr.right)
        return any(_number(s) in (100, 100.0) for s in sides) and any(
            _is_own(s, own) for s in sides)
    return isinstance(expr, ast.Name) and expr.id == own
