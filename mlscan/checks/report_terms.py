"""MLS306, error counts and summary figures built from the wrong terms.

- An error count that leaves out one kind of edit: `s, d, i = edit_ops(ref, hyp)` then
  `self.word_errors += s + d`. Word and character error rates count substitutions,
  deletions and insertions; dropping insertions rewards a model that babbles.
- Word error rates divided by the reference length plus the insertions, per-utterance error
  counts capped at the reference length, and empty hypotheses skipped while scoring: each
  one keeps the error rate of a model that babbles or stays silent low.
- A figure named (or defined) as a mean computed as the maximum (`ap_all = ap.max(1)`).
- A score across seeds reported at its favourable 10th percentile under the plain name.
- Recall@k counted with `ranks <= k` on ranks that start at 0 (k + 1 hits count).
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.model import Severity

_ERRORS = re.compile(r"(?i)err|edit|dist|wrong|mistake")


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


def _zero_based(ranks: ast.Name, ctx: Ctx) -> str:
    """`ranks = (order == target).nonzero()[:, 1]`: positions counted from 0 (no `+ 1`)."""
    held = ctx.lookup(ranks.id)
    if not isinstance(held, ast.expr) or any(
            isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add) for n in ast.walk(held)):
        return ""
    for n in ast.walk(held):
        if isinstance(n, ast.Call) and last_attr(n.func) in ("nonzero", "argwhere", "where",
                                                             "argsort", "index", "searchsorted"):
            return f"{ranks.id} = {ast.unparse(held)[:40]}"
    return ""


def misses_dropped(comp: ast.ListComp) -> str:
    """`[r for r in results if r.rank is not None]`: the queries with a found answer."""
    for gen in comp.generators:
        for test in gen.ifs:
            if (isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.IsNot)
                    and isinstance(test.comparators[0], ast.Constant)
                    and test.comparators[0].value is None
                    and re.search(r"(?i)rank|position|pos$|hit", last_attr(test.left))):
                return last_attr(test.left)
    return ""


_SWITCHES = re.compile(r"(?i)^(idsw|id_?switch(es)?|num_switches|ids_w|switches)$")


def _switches_left_out(value: ast.expr, ctx: Ctx) -> str:
    """`mota = 1 - (fn + fp) / num_gt` in a function that counts `idsw`."""
    fn = ctx.frame.node
    used = {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}
    if fn is None or not ({"fn", "fp"} <= {u.lower() for u in used} or any(
            re.search(r"(?i)miss|false", u) for u in used)):
        return ""
    counted = {t.id for n in subnodes(fn) if isinstance(n, (ast.Assign, ast.AugAssign))
               for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
               if isinstance(t, ast.Name) and _SWITCHES.match(t.id)}
    missing = sorted(counted - used)
    return missing[0] if missing else ""


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

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if len(node.targets) != 1:
            return
        kind = type(node.value)
        if (isinstance(node.value, ast.ListComp) and isinstance(node.targets[0], ast.Name)
                and (missed := misses_dropped(node.value))):
            self._hits_only(node, node.targets[0].id, missed, ctx)
        if kind is ast.BinOp:
            self._edit_terms(node, node.targets[0], node.value, ctx)
            if (isinstance(node.targets[0], ast.Name) and node.targets[0].id.lower() == "mota"
                    and (left_out := _switches_left_out(node.value, ctx))):
                ctx.report(METRIC_FALSIFY, node, f"MOTA sums {ast.unparse(node.value)[:40]} and "
                           f"leaves out {left_out}: identity switches never cost anything, so a "
                           "tracker that swaps ids scores as well as one that keeps them",
                           severity=Severity.MEDIUM)
        elif kind is ast.Call and (maxed := mean_by_max(node)):
            ctx.report(METRIC_FALSIFY, node, f"{maxed}: a figure defined as a mean is reported "
                       "as the best single value", severity=Severity.MEDIUM)

    @staticmethod
    def _hits_only(node: ast.Assign, kept: str, missed: str, ctx: Ctx) -> None:
        """`scored = [r for r in results if r.rank is not None]`, then a mean over
        `len(scored)`: queries whose answer was never found leave the denominator."""
        fn = ctx.frame.node
        if fn is None:
            return
        for n in subnodes(fn):
            if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and n.lineno > node.lineno
                    and any(isinstance(c, ast.Call) and last_attr(c.func) == "len" and c.args
                            and isinstance(c.args[0], ast.Name) and c.args[0].id == kept
                            for c in ast.walk(n.right))):
                ctx.report(METRIC_FALSIFY, node, f"{kept} keeps only the queries whose "
                           f"{missed} was found, and the score on line {n.lineno} is averaged "
                           f"over len({kept}): every miss leaves the denominator instead of "
                           "counting as zero", severity=Severity.MEDIUM)
                return

    @staticmethod
    def _edit_terms(node: ast.stmt, target: ast.expr, value: ast.expr, ctx: Ctx) -> None:
        missing = edit_term_dropped(target, value, ctx)
        if missing:
            ctx.report(METRIC_FALSIFY, node, f"{last_attr(target)} sums "
                       f"{ast.unparse(value)[:30]} and leaves out {missing!r}: one kind of "
                       "edit (insertions, deletions or substitutions) never counts as an "
                       "error, so the error rate is too low", severity=Severity.MEDIUM)

    def visit_Compare(self, node: ast.Compare, ctx: Ctx) -> None:
        if (type(node.ops[0]) is ast.LtE and type(node.left) is ast.Name
                and "rank" in node.left.id and (zero := _zero_based(node.left, ctx))):
            ctx.report(METRIC_FALSIFY, node, f"{ast.unparse(node)[:30]} with {zero}: the ranks "
                       "count from 0, so `<= k` counts k + 1 hits (recall@k is really "
                       "recall@k+1)", severity=Severity.MEDIUM)

    def visit_If(self, node: ast.If, ctx: Ctx) -> None:
        if (len(node.body) == 1 and isinstance(node.body[0], ast.Continue) and ctx.loops
                and (hyp := _hyp_empty(node.test)) and _ERRS.search(ctx.frame.name + " ".join(
                    ctx.lines[node.lineno:node.lineno + 12]))):
            ctx.report(METRIC_FALSIFY, node.body[0], f"utterances with an empty {hyp} are "
                       "skipped while scoring: the outputs the model failed on entirely never "
                       "count as errors", severity=Severity.MEDIUM)

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if (type(value) is ast.Call and isinstance(key, ast.Constant)
                    and isinstance(key.value, str) and (
                        picked := favourable_percentile(key.value, value))):
                ctx.report(METRIC_FALSIFY, value, f"{picked}: the reported score is the "
                           "favourable tail across runs, not their mean",
                           severity=Severity.MEDIUM)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        if type(node.value) is ast.BinOp and (bottom := inflated_denominator(node.value)):
            ctx.report(METRIC_FALSIFY, node, f"the error rate is divided by {bottom}: "
                       "insertions grow the denominator as well as the errors, so the rate "
                       "stays low however much the model inserts", severity=Severity.MEDIUM)
