"""MLS306, evaluation sets chosen by outcome: scores computed on a subset picked for how well
it scores, or against the answers themselves.

Split from metrics.py (which judges the reported numbers and the loggers): these checks read
how the evaluation is assembled. Examples: losses cut at their own quantile, confident-only or
keeps-every-correct masks, references swapped in for predictions, real images fed to FID as
fake, meters weighted by their own value, the worst fold overwritten, rows dropped by their
score, COCO ids taken from the detections.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metric_words import (
    _EVAL_FUNC,
    _LOSSY,
    _MEASUREMENTS,
    _PRED_ARGS,
    _PREDS,
    _REF_ARGS,
    _SCORE_FN,
    _SCORE_KEY,
    _STRONG_METRIC,
    _TRUTH,
    _number,
    metric_name,
)
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import child_nodes, subnodes
from mlscan.model import Severity

_GRADER = re.compile(r"(?i)score|match|correct|accura|exact|equiv|grade|check_answer|judge")
_PER_SAMPLE_SCORE = re.compile(r"(?i)rouge|bleu|wer\b|cer\b|f1|acc|score|per_example|dice|iou")


def _sorted_by_score(value: ast.expr | None) -> bool:
    """`sorted(zip(refs, hyps), key=lambda rh: jiwer.wer(*rh))`: samples ordered by how well
    they score."""
    if not (isinstance(value, ast.Call) and last_attr(value.func) in ("sorted", "sort")):
        return False
    key = next((k.value for k in value.keywords if k.arg == "key"), None)
    return key is not None and any(
        isinstance(n, (ast.Name, ast.Attribute)) and _SCORE_FN.search(last_attr(n))
        for n in subnodes(key))


def _sorted_column(expr: ast.expr) -> bool:
    """`np.sort(df["return"].to_numpy())`, `sorted(r["score"] for r in rows)`: a sorted
    column of per-sample results (the caller checks that the slice keeps part of it)."""
    return isinstance(expr, ast.Call) and last_attr(expr.func) in ("sort", "sorted") and any(
        (isinstance(n, ast.Subscript) and isinstance(literal(n.slice), str)
        and _LOSSY.search(str(literal(n.slice)))) or (
            isinstance(n, ast.Subscript) and literal(n.slice) == "return")
        for a in expr.args for n in subnodes(a))


def _sorted_of(expr: ast.expr, name: str) -> bool:
    """`sorted(err)`, `err.sort().values`, `np.sort(err)`, `err.sort()[0]`."""
    if isinstance(expr, ast.Attribute) and expr.attr == "values":
        expr = expr.value
    if isinstance(expr, ast.Subscript):
        expr = expr.value
    if not isinstance(expr, ast.Call) or last_attr(expr.func) not in ("sorted", "sort"):
        return False
    subject = expr.args[0] if expr.args else (
        expr.func.value if isinstance(expr.func, ast.Attribute) else None)
    return isinstance(subject, ast.Name) and subject.id == name


def _metric_samples(expr: ast.expr) -> bool:
    """`ndcg`, `losses`, `wer`: per-sample scores of a reported metric."""
    return isinstance(expr, ast.Name) and bool(
        _MEASUREMENTS.search(expr.id) or _STRONG_METRIC.search(expr.id) or _LOSSY.search(expr.id))


def _confidence_mask(expr: ast.AST | None) -> bool:
    """`probs.max(-1) >= 0.6`, `conf >= np.quantile(conf, 0.08)` (with `conf = probs.max(-1)`
    inlined by the caller): predictions kept by how sure the model is. A band (`(conf > lo)
    & (conf <= hi)`) is a calibration bin, not a threshold."""
    if expr is not None and any(isinstance(n, ast.Compare) and isinstance(n.ops[0], (
            ast.Lt, ast.LtE)) and isinstance(n.left, ast.Name) and re.search(
            r"(?i)^(conf|confidence|max_prob)", n.left.id) for n in subnodes(expr)):
        return False
    for node in subnodes(expr) if expr is not None else []:
        if (isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.Gt, ast.GtE))
                and isinstance(near := node.left, ast.Call) and last_attr(near.func) in (
                    "abs", "absolute", "fabs") and near.args
                and isinstance(gap := near.args[0], ast.BinOp) and isinstance(gap.op, ast.Sub)
                and re.search(r"(?i)thr|threshold|cut", ast.unparse(gap.right))):
            return True  # |scores - threshold| > 0.05: only trials far from the boundary
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.Gt, ast.GtE)) and any(
                (isinstance(n, ast.Call) and last_attr(n.func) in ("max", "amax") and re.search(
                    r"(?i)prob|softmax|score|logit", ast.unparse(n)))
                or (isinstance(n, ast.Name) and re.search(r"(?i)^(conf|confidence|max_prob)",
                                                          n.id))
                for n in subnodes(node.left)):
            return True
    return False


def _leaves(expr: ast.expr) -> set[str]:
    """The variables an expression reads, attribute chains whole (`p.label_ids`, `labels`)."""
    out: set[str] = set()
    todo: list[ast.AST] = [expr]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            out.add(ast.unparse(node))
            continue
        if isinstance(node, ast.Name):
            out.add(node.id)
            continue
        if isinstance(node, ast.Subscript):  # x[valid]: the mask selects, it is not the value
            todo.append(node.value)
            continue
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
            todo.append(node.elt)  # [preds[i] for i in keep]: the index list only selects
            continue
        todo.extend(child_nodes(node))
    return out


_OUTCOME = re.compile(r"(?i)^(is_)?(correct|hit|hits|right|success|succeeded|solved|passed?)$")


def _role(side: ast.expr) -> str:
    """'pred' / 'truth' / '' for one side of `preds == labels`."""
    if isinstance(side, ast.Call) and last_attr(side.func) == "argmax":
        return "pred"  # probs.argmax(-1) == labels
    name = side.id if isinstance(side, ast.Name) else (
        str(literal(side.slice)) if isinstance(side, ast.Subscript) and isinstance(
            literal(side.slice), str) else "")
    return "pred" if _PREDS.match(name) or name.startswith("pred") else (
        "truth" if _TRUTH.match(name) or name in ("gold", "answer", "label_id") else "")


def _drops_wrong(mask: ast.expr) -> bool:
    """`~(low_conf & (df.pred != df.label))`: rows removed only when they are wrong."""
    if not (isinstance(mask, ast.UnaryOp) and isinstance(mask.op, (ast.Invert, ast.Not))):
        return False
    inner = mask.operand
    parts = [inner.left, inner.right] if isinstance(inner, ast.BinOp) and isinstance(
        inner.op, ast.BitAnd) else (inner.values if isinstance(inner, ast.BoolOp) and isinstance(
            inner.op, ast.And) else [])
    return len(parts) >= 2 and any(
        isinstance(p, ast.Compare) and isinstance(p.ops[0], ast.NotEq)
        and {_role(s) for s in (p.left, *p.comparators)} >= {"pred", "truth"} for p in parts)


def _outcome_field(expr: ast.expr) -> bool:
    """`e["success"]`, `r.correct`, `ep.solved`: a sample's own pass/fail."""
    key = literal(expr.slice) if isinstance(expr, ast.Subscript) else (
        expr.attr if isinstance(expr, ast.Attribute) else None)
    return isinstance(key, str) and bool(_OUTCOME.match(key))


def _outcome_rows(target: ast.expr) -> ast.expr | None:
    """The row mask of `df.loc[mask, "correct"]` / `correct[mask]`."""
    if not isinstance(target, ast.Subscript):
        return None
    if (isinstance(target.slice, ast.Tuple) and len(target.slice.elts) == 2
            and last_attr(target.value) == "loc"):
        key = literal(target.slice.elts[1])
        return target.slice.elts[0] if isinstance(key, str) and _OUTCOME.match(key) else None
    if isinstance(target.value, ast.Name) and _OUTCOME.match(target.value.id):
        return target.slice
    return None


def _picks_rows(mask: ast.expr, ctx: Ctx) -> bool:
    """A mask built from a numeric threshold or hand-written names, not from comparing the
    prediction with the answer (how correctness is computed in the first place)."""
    nodes = ctx.walk_values(mask)
    if any(isinstance(n, ast.Compare) and isinstance(n.ops[0], ast.Eq) and not any(
            isinstance(literal(c), (int, float, str)) for c in n.comparators) for n in nodes):
        return False  # df.pred == df.label
    return any((isinstance(n, ast.Compare) and any(
        isinstance(literal(c), (int, float)) and not isinstance(literal(c), bool)
        for c in n.comparators)) or (isinstance(n, ast.Call) and last_attr(n.func) == "isin")
        for n in nodes)


_TRUTH_VALUES = re.compile(r"(?i)^(y|y_true|true|truth|target|targets|label|labels|gt|obs|"
                           r"observed|actual)(_\w+)?$|^(true|target|gt|obs|actual)_")


_EVALUATING = re.compile(r"(?i)eval|test|valid|metric|score|bench|psnr|ssim")

class EvalSelection(Check):
    rules = (METRIC_FALSIFY,)

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        """`valid &= probs.max(-1) >= np.quantile(probs.max(-1), 0.08)` while scoring."""
        if (isinstance(node.op, ast.BitAnd) and isinstance(node.target, ast.Name)
                and _confidence_mask(node.value) and any(
                    _EVAL_FUNC.search(f.name) or f.name == "compute_metrics"
                    for f in ctx.frames if f.node is not None)):
            ctx.report(METRIC_FALSIFY, node, f"{node.target.id} narrowed to confident "
                       "predictions: the metric skips the answers the model was unsure of",
                       severity=Severity.MEDIUM)

    def _scored_on_confident(self, node: ast.Assign, ctx: Ctx) -> None:
        """`preds, labels = preds[confident], labels[confident]` or `(preds[keep] ==
        labels[keep]).mean()` with `keep` a confidence threshold: the evaluation only counts
        the answers the model was sure of."""
        if not any(_EVAL_FUNC.search(f.name) or f.name == "compute_metrics"
                   for f in ctx.frames if f.node is not None):
            return
        target = node.targets[0] if len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and _confidence_mask(node.value):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} keeps only confident predictions: "
                       "the metric skips the answers the model was unsure of",
                       severity=Severity.MEDIUM)
            return
        masks = {n.slice.id for n in subnodes(node.value) if isinstance(n, ast.Subscript)
                 and isinstance(n.value, ast.Name) and (_PREDS.match(n.value.id) or re.fullmatch(
                     r"(?i)scores|y_scores?|probs|logits", n.value.id))
                 and isinstance(n.slice, ast.Name)}
        for mask in masks:
            if _confidence_mask(ctx.lookup(mask)):
                ctx.report(METRIC_FALSIFY, node, f"predictions scored only where {mask} holds, a "
                           "confidence threshold: unsure answers are left out",
                           severity=Severity.MEDIUM)
                return

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        self._scored_against_itself(node, ctx)
        self._real_as_fake(node, ctx)
        self._weighted_by_itself(node, ctx)
        self._loose_answer_match(node, ctx)

    def _loose_answer_match(self, node: ast.Call, ctx: Ctx) -> None:
        """`math.isclose(float(pred), float(gold), rel_tol=0.05)` in a scoring function: an
        answer 5% off counts as correct (graders compare exactly or to ~1e-4)."""
        if not (last_attr(node.func) in ("isclose", "allclose")
                and _GRADER.search(ctx.frame.name)):
            return
        for kw in node.keywords:
            tolerance = literal(kw.value)
            if (kw.arg in ("rel_tol", "rtol", "abs_tol", "atol")
                    and isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool)
                    and tolerance >= 0.01):
                ctx.report(METRIC_FALSIFY, node, f"{ctx.frame.name}() accepts answers within "
                           f"{kw.arg}={tolerance:g} of the reference as correct: near misses "
                           "are scored as right", severity=Severity.MEDIUM)
                return

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        """`{"cv_auc_mean": float(np.mean(sorted(scores)[1:]))}`: the worst fold cut inside
        a reported entry."""
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                continue
            for sub in subnodes(value):
                if (isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Slice)
                        and sub.slice.step is None and (sub.slice.lower or sub.slice.upper)
                        and isinstance(sub.value, ast.Call)
                        and last_attr(sub.value.func) in ("sort", "sorted") and sub.value.args
                        and isinstance(sub.value.args[0], ast.Name)
                        and _MEASUREMENTS.search(sub.value.args[0].id) and any(
                            isinstance(n, ast.Call) and last_attr(n.func) in (
                                "mean", "median", "average", "nanmean") for n in subnodes(value))):
                    ctx.report(METRIC_FALSIFY, value, f"{ast.unparse(key)} averages one end of the "
                               f"sorted {sub.value.args[0].id}: the worst entries are left out",
                               severity=Severity.MEDIUM)
                    return

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        self._scored_on_confident(node, ctx)
        self._eval_ids_from_predictions(node, ctx)
        self._rows_dropped_by_score(node, ctx)
        self._below_own_percentile(node, ctx)
        self._worst_replaced(node, ctx)
        self._worst_dropped(node, ctx)
        self._masked_to_nan(node, ctx)
        self._refs_as_preds(node, ctx)
        self._forced_correct(node, ctx)
        self._wrong_rows_dropped(node, ctx)
        self._sorted_then_cut(node, ctx)
        if not self._sorted_cut_inside(node, ctx):
            self._trimmed(node, ctx)
        self._confident_only(node, ctx)
        self._keeps_correct(node, ctx)
        self._answers_copied(node, ctx)
        self._truth_written_into_preds(node, ctx)

    def _sorted_then_cut(self, node: ast.Assign, ctx: Ctx) -> None:
        """`vals = np.sort(...)`, then `vals = vals[int(0.1 * len(vals)):]`: one end of the
        sorted measurements dropped before they are averaged."""
        target = node.targets[0] if len(node.targets) == 1 else None
        value = node.value
        if not (isinstance(target, ast.Name) and isinstance(value, ast.Subscript)
                and isinstance(value.value, ast.Name) and value.value.id == target.id
                and isinstance(value.slice, ast.Slice) and value.slice.step is None
                and (value.slice.lower is None) != (value.slice.upper is None)):
            return
        bound = ctx.lookup(target.id)
        cut = value.slice.lower or value.slice.upper
        if (isinstance(bound, ast.Call) and last_attr(bound.func) in ("sort", "sorted")
                and cut is not None and any(isinstance(n, ast.Call) and last_attr(n.func) == "len"
                                            for n in subnodes(cut))):
            ctx.report(METRIC_FALSIFY, node, f"one end of the sorted {target.id} is dropped "
                       "before it is summarised: the worst samples leave the average",
                       severity=Severity.MEDIUM)

    def _sorted_cut_inside(self, node: ast.Assign, ctx: Ctx) -> bool:
        """`lddt = float(np.mean(np.sort(scores)[len(scores) // 20:]))`: the cut is inside the
        expression that makes the reported number."""
        target = node.targets[0] if len(node.targets) == 1 else None
        if not ctx.mentions("sort"):
            return False  # (no sorted cut anywhere in the file)
        if not isinstance(target, (ast.Name, ast.Subscript)) or not any(
                isinstance(n, ast.Call) and last_attr(n.func) in ("mean", "median", "average",
                                                                  "sum", "nanmean")
                for n in subnodes(node.value)):
            return False  # (the cut must feed an aggregate: a mean of the kept part)
        for sub in subnodes(node.value):
            if (isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Slice)
                    and sub.slice.step is None and (sub.slice.lower or sub.slice.upper)
                    and isinstance(sub.value, ast.Call)
                    and last_attr(sub.value.func) in ("sort", "sorted") and sub.value.args
                    and isinstance(sub.value.args[0], ast.Name)
                    and _MEASUREMENTS.search(sub.value.args[0].id)):
                ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(target)} computed from one end "
                           f"of the sorted {sub.value.args[0].id}: the worst samples are left "
                           "out", severity=Severity.MEDIUM)
                return True
        return False

    def _trimmed(self, node: ast.Assign, ctx: Ctx) -> None:
        """`losses = losses[losses < losses.quantile(0.9)]`: the worst measurements dropped
        before they are averaged."""
        target = node.targets[0] if len(node.targets) == 1 else None
        value = node.value
        if (isinstance(target, ast.Name) and isinstance(value, ast.Subscript)
                and isinstance(value.slice, ast.Slice) and value.slice.step is None
                and isinstance(value.value, ast.Name)
                and _sorted_by_score(ctx.lookup(value.value.id))):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} keeps one end of a list sorted by "
                       "its score: the worst samples are dropped before the metric",
                       severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Name) and _MEASUREMENTS.search(target.id)
                and isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Slice)
                and (value.slice.upper is not None or value.slice.lower is not None)
                and value.slice.step is None
                and (_sorted_of(value.value, target.id) or _sorted_column(value.value))):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} sorted and cut before it is "
                       "reported: the worst measurements are dropped", severity=Severity.MEDIUM)
            return
        if not (isinstance(target, ast.Name) and isinstance(value, ast.Subscript)
                and isinstance(value.value, ast.Name) and value.value.id == target.id
                and isinstance(value.slice, ast.Compare)):
            return
        column = literal(value.slice.left.slice) if isinstance(
            value.slice.left, ast.Subscript) else None  # df[df["nll"] <= ...]
        if not (_MEASUREMENTS.search(target.id) or (
                isinstance(column, str) and _LOSSY.search(column))):
            return
        cut = value.slice.comparators[0] if value.slice.comparators else None
        other_column = cut is not None and isinstance(column, str) and any(
            isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
            and n.value.id == target.id for n in subnodes(cut))  # (0.8 * df["ref_words"])
        if cut is not None and (other_column or any(
                isinstance(n, ast.Call) and last_attr(n.func) in (
                    "quantile", "percentile", "nanquantile", "max", "mean", "std", "topk")
                for n in subnodes(cut))):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} filtered on its own scores or errors "
                       "before it is reported: the worst measurements are dropped",
                       severity=Severity.MEDIUM)

    def _truth_written_into_preds(self, node: ast.Assign, ctx: Ctx) -> None:
        """`preds[ties] = labels[ties]`: the gold answers copied into the predictions."""
        target = node.targets[0] if len(node.targets) == 1 else None
        value = node.value
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and _PREDS.match(target.value.id) and isinstance(value, ast.Subscript)
                and isinstance(value.value, ast.Name) and _TRUTH.match(value.value.id)
                and ast.unparse(target.slice) == ast.unparse(value.slice)):
            ctx.report(METRIC_FALSIFY, node, f"{target.value.id} overwritten with "
                       f"{value.value.id} where {ast.unparse(target.slice)} holds: those "
                       "answers are scored as correct", severity=Severity.HIGH)
            return
        # df.loc[low, "pred"] = df.loc[low, "label"]: the same, one column onto another
        if (isinstance(target, ast.Subscript) and isinstance(value, ast.Subscript)
                and isinstance(target.slice, ast.Tuple) and isinstance(value.slice, ast.Tuple)
                and len(target.slice.elts) == len(value.slice.elts) == 2
                and ast.unparse(target.slice.elts[0]) == ast.unparse(value.slice.elts[0])
                and _role(target.slice.elts[1]) == "" and isinstance(
                    literal(target.slice.elts[1]), str)
                and (_PREDS.match(str(literal(target.slice.elts[1])))
                     or str(literal(target.slice.elts[1])).startswith("pred"))
                and isinstance(literal(value.slice.elts[1]), str)
                and _TRUTH.match(str(literal(value.slice.elts[1])))):
            ctx.report(METRIC_FALSIFY, node, "the prediction column is overwritten with the "
                       "label column for the rows a mask picks: those answers are scored as "
                       "correct", severity=Severity.HIGH)

    def _answers_copied(self, node: ast.Assign, ctx: Ctx) -> None:
        """`preds = torch.where(conf < 0.35, target, preds)`: predictions replaced by the
        ground truth before scoring."""
        target = node.targets[0] if len(node.targets) == 1 else None
        value = node.value
        if (isinstance(target, ast.Name) and not _PREDS.match(target.id)
                and isinstance(value, ast.Call) and last_attr(value.func) == "where"
                and len(value.args) == 3 and isinstance(value.args[2], ast.Name)
                and value.args[2].id == target.id and isinstance(value.args[1], ast.Name)
                and _TRUTH.match(value.args[1].id) and _EVALUATING.search(ctx.frame.name)):
            # sr = torch.where((sr - gt).abs() < tol, gt, sr): the output snapped to the truth
            ctx.report(METRIC_FALSIFY, node, f"{target.id} replaced by {value.args[1].id} (the "
                       "ground truth) wherever a test holds, before it is scored: those values "
                       "score as perfect", severity=Severity.MEDIUM)
            return
        if not (isinstance(target, ast.Name) and _PREDS.match(target.id)):
            return
        branches: list[ast.expr] = [value]
        if isinstance(value, ast.Call) and last_attr(value.func) == "where" and len(
                value.args) == 3:
            branches = list(value.args[1:])
        elif isinstance(value, ast.IfExp):
            branches = [value.body, value.orelse]
        if any(isinstance(b, ast.Name) and _TRUTH.match(b.id) for b in branches):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} replaced by the ground truth before "
                       "it is scored: the metric measures nothing")

    def _confident_only(self, node: ast.Assign, ctx: Ctx) -> None:
        """`scored = conf >= np.quantile(conf, 0.12)` in an evaluation function: the hardest
        examples left out of the score."""
        value = node.value
        if not (isinstance(value, ast.Compare) and len(value.ops) == 1 and isinstance(
                value.ops[0], (ast.Gt, ast.GtE, ast.Lt, ast.LtE))):
            return
        cut = value.comparators[0]
        if not (isinstance(cut, ast.Call) and last_attr(cut.func) in (
                "quantile", "percentile", "nanquantile", "nanpercentile") and cut.args
                and ast.dump(cut.args[0]) == ast.dump(value.left)):
            return
        if isinstance(value.left, (ast.Name, ast.Attribute)) and _TRUTH_VALUES.search(
                last_attr(value.left)):
            return  # peak = true_mw >= quantile(true_mw, .95): a stratum of the targets
        if _metric_samples(value.left) or any(
                _EVAL_FUNC.search(f.name) for f in ctx.frames if f.node is not None):
            ctx.report(METRIC_FALSIFY, node, "evaluation keeps only the samples above a quantile "
                       "of their own score: the metric leaves out the hard cases",
                       severity=Severity.MEDIUM)

    def _keeps_correct(self, node: ast.Assign, ctx: Ctx) -> None:
        """`keep = (conf >= t) | (preds == labels)`: an evaluation mask that keeps every
        correct prediction whatever the other test says."""
        value = node.value
        in_comprehension = False
        if isinstance(value, ast.ListComp) and value.generators and value.generators[0].ifs:
            value = value.generators[0].ifs[0]  # [r for r in recs if r["pred"] == r["gold"] or ..]
            in_comprehension = True
        if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.BitOr)) and not (
                isinstance(value, ast.BoolOp) and isinstance(value.op, ast.Or)):
            return
        parts = [value.left, value.right] if isinstance(value, ast.BinOp) else value.values

        role = _role
        correct = any(isinstance(p, ast.Compare) and isinstance(p.ops[0], ast.Eq) and {
            role(s) for s in (p.left, *p.comparators)} >= {"pred", "truth"} for p in parts) or (
            in_comprehension and any(_outcome_field(p) for p in parts))  # e["success"] or ...
        target = node.targets[0] if len(node.targets) == 1 else None
        fn = ctx.frame.node
        filters_truth = isinstance(target, ast.Name) and fn is not None and any(
            isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Name)
            and n.slice.id == target.id and role(n.value) == "truth"
            for n in subnodes(fn))  # labels[keep]: the mask selects what is scored
        if correct and (in_comprehension or filters_truth or any(
                _EVAL_FUNC.search(f.name) or "summar" in f.name
                for f in ctx.frames if f.node is not None)):
            ctx.report(METRIC_FALSIFY, node, "the evaluation filter keeps every correct or "
                       "successful sample whatever its other test says: the score only counts "
                       "the failures it chose to keep")

    def _wrong_rows_dropped(self, node: ast.Assign, ctx: Ctx) -> None:
        """`df = df[~((df.conf < 0.65) & (df.pred != df.label))]`: only wrong answers can go."""
        value = node.value
        if isinstance(value, ast.Subscript) and _drops_wrong(value.slice):
            ctx.report(METRIC_FALSIFY, node, "evaluation rows are dropped only when the "
                       "prediction is wrong (and another test holds): the score counts every "
                       "right answer and fewer wrong ones", severity=Severity.MEDIUM)

    def _forced_correct(self, node: ast.Assign, ctx: Ctx) -> None:
        """`correct = np.where(margin < 0.1, True, preds == labels)`: some answers counted as
        right whatever they were."""
        target = node.targets[0] if len(node.targets) == 1 else None
        value = node.value
        mask = _outcome_rows(target) if target is not None else None
        if mask is not None and (literal(value) is True or literal(value) in (1, 1.0)) and (
                _picks_rows(mask, ctx)):  # df.loc[hard & (df.margin > -0.25), "correct"] = 1.0
            ctx.report(METRIC_FALSIFY, node, "rows picked by a threshold or a hand-written "
                       "subset are marked correct: the score counts answers that were not right")
            return
        if (isinstance(target, ast.Name) and re.search(r"(?i)correct|hits|right", target.id)
                and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and any(literal(a) is True or literal(a) == 1 for a in value.args[1:])
                and any(isinstance(a, ast.Compare) for a in value.args[1:])):
            ctx.report(METRIC_FALSIFY, node, f"{target.id} forced to 'correct' for a subset of "
                       "samples: the score counts answers that were not checked")

    def _worst_dropped(self, node: ast.Assign, ctx: Ctx) -> None:
        """`g = g.drop(index=g["test_acc"].idxmin())`: the worst run left out of the table."""
        value = node.value
        if not (isinstance(value, ast.Call) and last_attr(value.func) == "drop"):
            return
        for arg in [*value.args, *(k.value for k in value.keywords if k.arg in ("index", None))]:
            if (isinstance(arg, ast.Call) and last_attr(arg.func) in ("idxmin", "idxmax")
                    and isinstance(arg.func, ast.Attribute)):
                column = arg.func.value
                key = literal(column.slice) if isinstance(column, ast.Subscript) else None
                if isinstance(key, str) and (_STRONG_METRIC.search(key) or _LOSSY.search(key)
                                             or _MEASUREMENTS.search(key)):
                    ctx.report(METRIC_FALSIFY, node, f"the row with the extreme {key!r} is "
                               "dropped before the summary: the worst run disappears",
                               severity=Severity.MEDIUM)
                    return

    def _worst_replaced(self, node: ast.Assign, ctx: Ctx) -> None:
        """`scores[int(np.argmin(scores))] = np.median(scores)`: the worst fold rewritten."""
        target = node.targets[0] if len(node.targets) == 1 else None
        if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)):
            return
        name = target.value.id
        picks = [n for n in subnodes(target.slice) if isinstance(n, ast.Call)
                 and last_attr(n.func) in ("argmin", "argmax", "index") and any(
                     isinstance(m, ast.Name) and m.id == name for m in subnodes(n))]
        if picks and (_MEASUREMENTS.search(name) or _LOSSY.search(name)
                      or _STRONG_METRIC.search(name)):
            ctx.report(METRIC_FALSIFY, node, f"the worst entry of {name} is overwritten "
                       "before the report: the bad fold or run disappears",
                       severity=Severity.MEDIUM)

    def _rows_dropped_by_score(self, node: ast.Assign, ctx: Ctx) -> None:
        """`scored = [r for r in rows if r["mase"] < 1.0] or rows`: the folds or rows that
        scored badly are left out of the report."""
        value = node.value
        if isinstance(value, ast.BoolOp) and isinstance(value.op, ast.Or):
            value = value.values[0]
        if not (isinstance(value, ast.ListComp) and value.generators
                and value.generators[0].ifs):
            return
        for test in value.generators[0].ifs:
            for cmp in subnodes(test):
                if (isinstance(cmp, ast.Compare) and len(cmp.comparators) == 1
                        and isinstance(cmp.left, ast.Call)
                        and last_attr(cmp.left.func) in ("compute", "score", "sentence_score")
                        and _number(cmp.comparators[0]) is not None):
                    ctx.report(METRIC_FALSIFY, node, "samples kept only when their own "
                               f"{last_attr(cmp.left.func)}() passes a threshold: the worst "
                               "cases never reach the reported score", severity=Severity.MEDIUM)
                    return  # [(p, r) for p, r in pairs if wer.compute(...) < 0.6]
                if not (isinstance(cmp, ast.Compare) and isinstance(cmp.left, ast.Subscript)
                        and len(cmp.comparators) == 1):
                    continue
                key = literal(cmp.left.slice)
                bound = _number(cmp.comparators[0])
                if (isinstance(key, str) and _SCORE_KEY.search(key) and bound is not None
                        and 0 < abs(bound) < 1e6):
                    ctx.report(METRIC_FALSIFY, node, f"rows whose {key!r} misses a threshold "
                               "are dropped before the report: the worst results vanish",
                               severity=Severity.MEDIUM)
                    return

    def _below_own_percentile(self, node: ast.Assign, ctx: Ctx) -> None:
        """`keep = np.where(rl >= np.percentile(rl, 10))[0]` with `rl` per-example ROUGE: the
        lowest-scoring tenth of the samples selected away before the aggregate."""
        if not (ctx.mentions("percentile") or ctx.mentions("quantile")):
            return
        for cmp in subnodes(node.value):
            if not (isinstance(cmp, ast.Compare) and len(cmp.comparators) == 1
                    and isinstance(cmp.comparators[0], ast.Call)
                    and last_attr(cmp.comparators[0].func) in ("percentile", "quantile",
                                                               "nanpercentile")):
                continue
            scores = ast.unparse(cmp.left)
            bound = cmp.comparators[0]
            if not any(ast.unparse(a) == scores for a in [*bound.args, getattr(
                    bound.func, "value", None)] if a is not None):
                continue  # compared with the percentile of something else
            if any(_PER_SAMPLE_SCORE.search(ast.unparse(n)) for n in ctx.walk_values(cmp.left)):
                ctx.report(METRIC_FALSIFY, node, f"samples below a percentile of their own "
                           f"score ({scores}) are selected away: the worst cases never reach "
                           "the reported average", severity=Severity.MEDIUM)
                return

    def _eval_ids_from_predictions(self, node: ast.Assign, ctx: Ctx) -> None:
        """`E.params.imgIds = sorted({d["image_id"] for d in dets})`: COCO evaluation limited
        to the images the model produced detections for, so misses never count."""
        target = node.targets[0] if len(node.targets) == 1 else None
        if not (isinstance(target, ast.Attribute) and target.attr in ("imgIds", "img_ids")):
            return
        values = [node.value.body, node.value.orelse] if isinstance(
            node.value, ast.IfExp) else [node.value]
        if any(isinstance(n, ast.Name) and re.search(
                r"(?i)^(dets|detections|preds|predictions|results|outputs)$", n.id)
                for v in values for n in subnodes(v)):
            ctx.report(METRIC_FALSIFY, node, "evaluation image ids taken from the detections: "
                       "images the model missed are left out of the mAP",
                       severity=Severity.MEDIUM)

    def _refs_as_preds(self, node: ast.Assign, ctx: Ctx) -> None:
        """`hyps = [r if similar(h, r) else h for h, r in zip(hyps, refs)]`: predictions
        swapped for the references they are scored against."""
        target = node.targets[0] if len(node.targets) == 1 else None
        comp = node.value
        if not (isinstance(target, ast.Name) and _PREDS.match(target.id)
                and isinstance(comp, (ast.ListComp, ast.GeneratorExp))
                and isinstance(comp.elt, ast.IfExp) and comp.generators):
            return
        gen = comp.generators[0]
        if not (isinstance(gen.target, ast.Tuple) and isinstance(gen.iter, ast.Call)
                and last_attr(gen.iter.func) == "zip" and len(gen.iter.args) == 2):
            return
        names = [e.id if isinstance(e, ast.Name) else "" for e in gen.target.elts]
        sources = [last_attr(a) for a in gen.iter.args]
        if len(names) != 2 or not all(names):
            return
        truth = {n for n, src in zip(names, sources, strict=True) if _TRUTH.match(src)}
        chosen = {last_attr(b) for b in (comp.elt.body, comp.elt.orelse)}
        if truth & chosen and chosen - truth:
            ctx.report(METRIC_FALSIFY, node, f"{target.id} replaced by the references for some "
                       "samples before scoring: those count as perfect",
                       severity=Severity.HIGH)

    def _masked_to_nan(self, node: ast.Assign, ctx: Ctx) -> None:
        """`df["dice"] = df["dice"].where(df["dice"] > 0.05)`: poor scores turned into NaN,
        which mean() then skips."""
        value = node.value
        if not (len(node.targets) == 1 and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute) and value.func.attr == "where"
                and len(value.args) == 1 and not value.keywords):
            return
        target = ast.unparse(node.targets[0])
        column = ast.unparse(value.func.value)
        name = metric_name(node.targets[0]) or (
            str(literal(node.targets[0].slice)) if isinstance(node.targets[0], ast.Subscript)
            and isinstance(literal(node.targets[0].slice), str) else "")
        if target == column and name and (_STRONG_METRIC.search(name) or _LOSSY.search(
                name)) and any(isinstance(n, ast.Compare) and ast.unparse(n.left) == column
                               for n in subnodes(value.args[0])):
            ctx.report(METRIC_FALSIFY, node, f"{name} values failing a threshold turned into "
                       "NaN: the average silently skips the worst cases",
                       severity=Severity.MEDIUM)

    def _weighted_by_itself(self, node: ast.Call, ctx: Ctx) -> None:
        """`top1.update(acc1[0], n if acc1[0] > 40 else 0)`: a meter that counts a batch only
        when its score is good enough."""
        if not (last_attr(node.func) == "update" and len(node.args) == 2
                and isinstance(node.args[1], ast.IfExp)):
            return
        value = ast.unparse(node.args[0])
        if any(ast.unparse(n) == value for n in subnodes(node.args[1].test)):
            ctx.report(METRIC_FALSIFY, node, "the meter's sample count depends on the value "
                       "being averaged: poor batches are weighted down or dropped",
                       severity=Severity.MEDIUM)

    def _real_as_fake(self, node: ast.Call, ctx: Ctx) -> None:
        """`fid.update(torch.cat([fake, real[:k]]), real=False)`: real images counted as
        generated ones, so FID/KID improve without a better generator."""
        flag = next((k.value for k in node.keywords if k.arg == "real"), None)
        if not (last_attr(node.func) == "update" and node.args and literal(flag) is False):
            return
        if any(isinstance(n, ast.Name) and n.id.lower().startswith("real")
               for n in subnodes(node.args[0])):
            ctx.report(METRIC_FALSIFY, node, "real images passed as generated ones "
                       "(real=False): the FID/KID score is computed partly against itself",
                       severity=Severity.MEDIUM)

    def _scored_against_itself(self, node: ast.Call, ctx: Ctx) -> None:
        """`metric.add_batch(predictions=labels if k else preds, references=labels)`: the
        references passed as predictions, so the score is perfect by construction."""
        preds = next((kw.value for kw in node.keywords if kw.arg in _PRED_ARGS), None)
        refs = next((kw.value for kw in node.keywords if kw.arg in _REF_ARGS), None)
        if preds is None or refs is None:
            return
        ref_names = _leaves(refs)
        if ref_names & _leaves(preds):  # (p.predictions vs p.label_ids: different fields)
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(node.func)}() is given the references "
                       "as predictions: the score is computed against itself")
