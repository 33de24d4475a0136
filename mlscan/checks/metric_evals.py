"""MLS306 predicates on evaluation calls: how scores are computed and summarised.

Scores boosted at the gold answers, true labels standing in for or blended into the
predictions, thresholds tuned on the test split, entries swapped or written under another
cutoff's key, a mismatched average, summaries over the best runs, the top of the sorted
results or the classes that scored, a maximum named a mean, results floored at their own
centre.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.context import Ctx
from mlscan.checks.metric_words import (
    _CENTERS,
    _DEV_SPLIT,
    _EVAL_FRAME,
    _GOLD,
    _MAX_CALLS,
    _MEAN_WORD,
    _METRIC,
    _SCORE_ARRAY,
    _SCORES,
    _STRONG_METRIC,
    _TEST_SPLIT,
    _TUNER,
    _VALUE_WRAPPERS,
    _gold_name,
    _number,
    _predicted_name,
    metric_name,
)
from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.nodes import called_names, subnodes


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
    if isinstance(source, ast.Name) and isinstance(kept := ctx.lookup(source.id), ast.Call) and (
            isinstance(kept.func, ast.Attribute) and kept.func.attr == "gather"
            and ast.unparse(kept.func.value) == ast.unparse(func.value)):
        return False  # target = scores.gather(1, ids) ... scatter_(1, ids, target): filtered
        # ranking puts the true answer's own score back after masking the known ones
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


_MEASURES = re.compile(r"(?i)error|score|loss|curve|plot|diagram|report|brier|reliab")


def _tuned_on_test(call: ast.Call) -> bool:
    """`youden_threshold(np.r_[val["label"], test["label"]], ...)`, `cal.fit(np.concatenate(
    [dev_scores, eval_scores]), ...)`: a threshold or calibrator fitted on data that includes
    the test split it is then scored on."""
    name = last_attr(call.func)
    if not _TUNER.search(name) or _MEASURES.search(name):
        return False  # expected_calibration_error(test_y, test_p) measures, it fits nothing
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


def _present_only(call: ast.Call, ctx: Ctx | None = None) -> str:
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
    return _above_floor(target, ctx)


def _above_floor(target: ast.Subscript, ctx: Ctx | None = None) -> str:
    """`iou[iou > 0.05]`, `acc[acc != 0]`: per-class scores kept only where they cleared zero
    or a small floor (the name of the scores, '' otherwise; `ap[ap > -1]` drops COCO's
    missing-class marker and stays quiet)."""
    test = target.slice
    if isinstance(test, ast.BinOp) and isinstance(test.op, ast.BitAnd):
        # iou[present & (iou > 0.1)]: the floor beside a legitimate presence mask
        return next((found for side in (test.left, test.right) if (found := _above_floor(
            ast.Subscript(value=target.value, slice=side, ctx=ast.Load()), ctx))), "")
    if not (isinstance(test, ast.Compare) and ast.unparse(test.left) == ast.unparse(
            target.value) and len(test.ops) == 1):
        return ""
    floor = literal(test.comparators[0])
    if not (isinstance(floor, (int, float)) and not isinstance(floor, bool) and (
            (isinstance(test.ops[0], (ast.Gt, ast.NotEq)) and floor == 0)
            or (isinstance(test.ops[0], (ast.Gt, ast.GtE)) and 0 < floor <= 0.5))):
        return ""
    name = last_attr(target.value)
    if re.search(r"(?i)acc|recall|iou|f1|dice|ap$|^ap|prec|score", name):
        return name
    # per_class = f1_score(y, p, average=None) ... per_class[per_class > 0]
    value = ctx.lookup(name) if ctx is not None and isinstance(target.value, ast.Name) else None
    if not isinstance(value, ast.Call):
        return ""
    return name if re.search(r"(?i)^(f1|recall|precision|accuracy|jaccard|iou|dice)(_score)?$",
                             last_attr(value.func)) and kwarg(value, "average") is not None else ""


_CLASS_SCORES = re.compile(r"(?i)acc|recall|iou|f1|dice|(^|_)ap$|^ap|prec|score")
_HITS = re.compile(r"(?i)^(tp|tps|true_pos\w*|correct|n_correct|hits|inter|intersection)$")
_FLOOR_NAME = re.compile(r"(?i)min|thresh|floor|support|eps|cutoff")


def _drops_weak_classes(part: ast.expr, scores: str) -> bool:
    """`iou > min_support`, `iou > 0.02`, `tp > 0`: a class kept only when the model did well
    on it (a test on how often the class occurs, `gt > 0`, is not this)."""
    if not (isinstance(part, ast.Compare) and len(part.ops) == 1
            and isinstance(part.left, (ast.Name, ast.Attribute))):
        return False
    left, op, right = last_attr(part.left), part.ops[0], part.comparators[0]
    floor = literal(right)
    number = isinstance(floor, (int, float)) and not isinstance(floor, bool)
    if left == scores and isinstance(op, (ast.Gt, ast.GtE, ast.NotEq)):
        return (number and 0 <= floor <= 0.5) or (  # type: ignore[operator]
            isinstance(right, (ast.Name, ast.Attribute)) and bool(
                _FLOOR_NAME.search(last_attr(right))))
    return bool(_HITS.match(left)) and isinstance(op, ast.Gt) and floor == 0


def self_selected_mask(node: ast.Assign, fn: ast.AST | None) -> str:
    """`present = iou > min_support` (or `(gt > 0) & (tp > 0)`) and then `iou[present].mean()`:
    the classes averaged are picked by the score itself (the scores' name, '' otherwise)."""
    if fn is None or len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name) or not (
            called_names(fn) & {"mean", "nanmean", "average"}):
        return ""
    mask = node.targets[0].id
    test = node.value
    parts = [test] if isinstance(test, ast.Compare) else [
        v for v in (test.values if isinstance(test, ast.BoolOp) else [test.left, test.right])
        ] if isinstance(test, (ast.BoolOp, ast.BinOp)) else []
    if not parts:
        return ""
    averaged = [n.func.value if isinstance(n.func, ast.Attribute) and not n.args
                else n.args[0] for n in subnodes(fn) if isinstance(n, ast.Call)
                and last_attr(n.func) in ("mean", "nanmean", "average") and (
                    n.args or isinstance(n.func, ast.Attribute))]
    for use in averaged:  # iou[present].mean(), np.mean(acc[kept])
        if not (isinstance(use, ast.Subscript) and isinstance(use.slice, ast.Name)
                and use.slice.id == mask and isinstance(use.value, (ast.Name, ast.Attribute))):
            continue
        scores = last_attr(use.value)
        if _CLASS_SCORES.search(scores) and any(_drops_weak_classes(p, scores) for p in parts):
            return scores
    return ""


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
