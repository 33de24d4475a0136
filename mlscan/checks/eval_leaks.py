"""MLS306, evaluations that leak the answers or the test split into what they score.

- Predictions picked by the ground truth (`hit = logits.argmax(-1).eq(target)`, `pick =
  hit.argmax(0)`, `logits = logits[pick, ...]`): test-time augmentation that keeps whichever
  view was right scores an oracle.
- A score computed only on the samples the model is confident about (`keep = probs.amax(-1)
  >= t; accuracy(logits[keep], target[keep])`): the hard cases never count.
- A nearest-neighbour index that holds the queries themselves (`torch.cat([bank_feats,
  query_feats])`): every query finds itself at distance zero.
- An evaluation loader (or dataset) built from the training folder (`self.val_loader =
  build_eval_loader(os.path.join(args.data, "train"), ...)`), or a training loader scored
  under an evaluation split's name (`self.evaluate(train_eval_loader, "val")`).
- A threshold calibrated on validation and test data pooled together.
- Kept or published numbers laid over the measured results (`{**metrics, **self.peak}`,
  `ChainMap(published, metrics)`): every key they hold replaces what the run measured.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import last_attr, literal
from mlscan.model import Severity

_MODEL_OUT = re.compile(r"(?i)logit|pred|output|prob|score")
_TRUTH = re.compile(r"(?i)^(targets?|labels?|y|y_true|gts?|truth)$")
_CONFIDENCE = re.compile(r"(?i)softmax|amax|\bmax\(|prob|conf|sigmoid")
_SCORERS = re.compile(r"(?i)acc|accuracy|f1|score|auc|precision|recall|topk|top_k|metric")
_BANK = re.compile(r"(?i)bank|train|memory|gallery|support|index|ref")
_QUERY = re.compile(r"(?i)query|queries|test|val|probe|eval")


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


class EvalLeaks(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        kind = type(node.value)
        if len(node.targets) != 1:
            return
        if kind is ast.Subscript and (pick := oracle_view(node, ctx)):
            ctx.report(METRIC_FALSIFY, node, f"predictions picked by {pick}, which compares them "
                       "with the ground truth: the score is an oracle's (whichever view was "
                       "right counts)", severity=Severity.MEDIUM)
        elif kind is ast.Call and (folder := eval_from_train(node)):
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(node.targets[0])} is built from "
                       f"{folder}, the training data: the reported evaluation score is measured "
                       "on samples the model trained on", severity=Severity.MEDIUM)
        elif kind is ast.Call and (query := queries_in_index(node)):
            ctx.report(METRIC_FALSIFY, node, f"{query} put into the search index: every query "
                       "finds itself at distance zero, so neighbour accuracy is inflated",
                       severity=Severity.MEDIUM)

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        if None in node.keys and (over := merged_over_measured(node)):
            ctx.report(METRIC_FALSIFY, node, f"{over} merged over the measured results: every "
                       "key it holds replaces what this run measured", severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if last_attr(func) == "ChainMap" and (over := merged_over_measured(node)):
            ctx.report(METRIC_FALSIFY, node, f"ChainMap({over}, ...) puts {over} in front of "
                       "the measured results: every key it holds replaces what this run "
                       "measured", severity=Severity.MEDIUM)
            return
        if not node.args:
            return
        if pooled := pooled_with_test(node, ctx):
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(func)}() is fitted on {pooled}: the "
                       "test split helps choose the setting it is then scored with",
                       severity=Severity.MEDIUM)
        elif len(node.args) >= 2 and (wrongly := train_as_eval(node)):
            ctx.report(METRIC_FALSIFY, node, f"{wrongly}: the evaluation reported under that "
                       "name runs on training data", severity=Severity.MEDIUM)
        elif scored := confident_only(node, ctx):
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(func)}() scores only the samples the "
                       f"model is confident about ({scored}): the hard cases never count",
                       severity=Severity.MEDIUM)
