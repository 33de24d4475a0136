"""MLS306 predicates on held values: a reported number replaced by a kept one.

A result floored at, clamped to or blended with a remembered, best-so-far, reference or
invented value instead of what was measured (`floored`, `_held_to_stored`, with what counts
as stored and as measured), logging overrides and callbacks that report the best value
seen so far or overwrite a logged entry, curves turned into their running best.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

from mlscan.checks.context import Ctx
from mlscan.checks.metric_values import _clamped_between, _self_rewrite, _with_consts
from mlscan.checks.metric_words import (
    _BEST_WORD,
    _CLAMPS,
    _HISTORY,
    _KEPT_AS_BEST,
    _LOG_FUNCS,
    _METRIC,
    _STORED,
    _STRONG_METRIC,
    _TRAINER_KEYS,
    _VALUE_WRAPPERS,
    _container,
    _entry_name,
    _key_text,
    _names_word,
    _number,
    metric_name,
)
from mlscan.checks.names import as_load, last_attr, literal
from mlscan.checks.nodes import subnodes


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


def _passed_to_log(target: ast.expr, ctx: Ctx) -> bool:
    """`v = ...; self.log(name, v)`: a plain name this function hands to a metric logger as
    the value (the names are collected once per function)."""
    fn = ctx.frame.node
    if not isinstance(target, ast.Name) or not isinstance(fn, (ast.FunctionDef,
                                                               ast.AsyncFunctionDef)):
        return False
    cached = _LOGGED_CACHE.get(id(fn))
    if cached is None or cached[0] is not fn:
        loggers = ("log", "_log", "log_fn", "add_scalar", "log_metric", "log_metrics",
                   "log_dict")
        calls = [node for node in subnodes(fn) if isinstance(node, ast.Call)
                 and (last_attr(node.func) in loggers or (  # raw = writer.add_scalar; raw(t, v)
                     isinstance(node.func, ast.Name) and isinstance(
                         held := ctx.lookup(node.func.id), ast.Attribute)
                     and held.attr in loggers))]
        names = {a.id for node in calls
                 for a in [*node.args[1:], *(k.value for k in node.keywords if k.arg == "value")]
                 if isinstance(a, ast.Name)}
        tables = {node.args[0].id for node in calls  # out[key] = v; self._log(out)
                  if node.args and isinstance(node.args[0], ast.Name)}
        names |= {n.value.id for n in subnodes(fn) if tables and isinstance(n, ast.Assign)
                  and isinstance(n.value, ast.Name) and any(
                      isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                      and t.value.id in tables for t in n.targets)}
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


def _remembered(value: ast.expr) -> bool:
    """`round(self.ema, 4)`, `self.best_loss`, `self._prev["acc"]`: state kept on the object."""
    if isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and value.args:
        value = value.args[0]
    if isinstance(value, ast.Subscript):
        value = value.value
    return (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
            and value.value.id == "self" and bool(_STORED.search(value.attr)))


def _best_read(value: ast.expr) -> bool:
    """`best_val_loss`, `self.best_acc`, `best_val_loss * 0.995`."""
    if isinstance(value, ast.BinOp) and _number(value.right) is not None:
        value = value.left
    elif isinstance(value, ast.BinOp) and _number(value.left) is not None:
        value = value.right
    return isinstance(value, (ast.Name, ast.Attribute)) and "best" in last_attr(value).lower()


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
        best = any(re.search(r"(?i)best", word := last_attr(
            n.value if isinstance(n, ast.Subscript) else n)) and not _BEST_POINTER.search(word)
            for n in reads)  # (best_fold, best_epoch: which run, not its value)
        if isinstance(value, ast.Call) and last_attr(value.func) in ("str", "Path", "join"):
            return ""  # summary["export"] = str(export(best_fold)): a path, not a result
        compared = any(isinstance(n, ast.Compare) for n in subnodes(value))
        if best and not compared and not _measured(value, container, target, ctx) and not (
                _swept_setting(reads, ctx)):
            # ((best_rank < k).mean(): a recall computed from the rank of the best match)
            return f"{label} replaced with a remembered best value"
    return ""


_BEST_POINTER = re.compile(r"(?i)best_?(fold|epoch|step|idx|index|iter|iteration|trial|path|"
                           r"ckpt|checkpoint|model|run|dir|file|name)s?$")
_SETTING = re.compile(r"(?i)^(thr|thresh|threshold|t|cut|cutoff|tau|alpha|beta|lam)$")


def _swept_setting(reads: Sequence[ast.expr], ctx: Ctx) -> bool:
    """`for thr in np.quantile(...): ... if cost < best_cost: best_cost, best_thr = cost, thr`:
    the best over a sweep of one setting inside the same function is an operating point
    (cost-optimal threshold), not a score kept from another epoch or run."""
    fn = ctx.frame.node
    names = {n.id for n in reads if isinstance(n, ast.Name) and re.search(r"(?i)best", n.id)}
    if fn is None or not names:
        return False
    for loop in subnodes(fn):
        if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Name)
                and _SETTING.match(loop.target.id)):
            continue
        for stmt in subnodes(loop):
            if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id in names for target in stmt.targets
                    for t in (target.elts if isinstance(target, ast.Tuple) else [target])):
                return True  # best_cost, best_thr = cost, float(thr)
    return False


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


def _callback_overwrite(target: ast.expr, value: ast.expr, ctx: Ctx) -> str:
    """`logs["learning_rate"] = self._sched_lr` in `on_log`: a key the Trainer wrote replaced
    by a value held on the callback or typed in (rounding `logs[k]` itself stays quiet)."""
    if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
            and target.value.id in ("logs", "metrics")
            and ctx.trainer_callback() in ("on_log", "on_evaluate")):
        return ""
    key = literal(target.slice)
    if (not isinstance(key, str) and isinstance(target.slice, ast.Attribute)
            and isinstance(target.slice.value, ast.Name) and target.slice.value.id == "self"
            and isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
            and value.value.id == "self" and re.search(r"(?i)best", value.attr)):
        return ast.unparse(target.slice)  # metrics[self.metric] = self.best
    if not isinstance(key, str) or not _TRAINER_KEYS.match(key) or _KEPT_AS_BEST.search(key):
        return ""  # (a new "eval_best_accuracy" entry is a record, not an overwrite)
    if any(isinstance(n, ast.Name) and n.id == target.value.id for n in subnodes(value)):
        return ""
    if isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and value.args:
        value = value.args[0]
    held = (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
            and value.value.id == "self")
    return key if held or _number(value) is not None else ""


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
    elif qual == "itertools.accumulate" and len(call.args) == 2 and isinstance(
            call.args[1], ast.Name) and call.args[1].id in ("max", "min"):
        values = call.args[0]  # list(itertools.accumulate(cols[k], max))
        if isinstance(values, ast.Subscript) and not isinstance(literal(values.slice), str):
            return _series_key(values, ctx)
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
    if isinstance(values, ast.Name) and not _KEPT_AS_BEST.search(values.id) and re.search(
            r"(?i)^_?(score|evaluate|compute_metric|compute_score)\w*$", ctx.frame.name):
        return values.id  # def score(...): trace = accumulate(per_batch, max); return trace[-1]
    return ""


def _series_key(values: ast.Subscript, ctx: Ctx) -> str:
    """`cols[k]` with `k` picked by `if k.startswith("val/") and "miou" in k`: the metric
    key named in the condition that chose it."""
    key = values.slice
    if not isinstance(key, ast.Name):
        return ""
    for cond in ctx.conds:
        for node in subnodes(cond):
            text = literal(node)
            if isinstance(text, str) and (_METRIC.search(text) or "val" in text.lower()) and any(
                    isinstance(n, ast.Name) and n.id == key.id for n in subnodes(cond)):
                return text
    return ""


_ARRAY_EXTREMES = frozenset({"max", "min", "nanmax", "nanmin", "amax", "amin"})


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
    if not (isinstance(value, ast.Call) and len(value.args) == 1 and (
            (isinstance(value.func, ast.Name) and value.func.id in ("max", "min")) or (
                isinstance(value.func, ast.Attribute) and value.func.attr in _ARRAY_EXTREMES
                and last_attr(value.func.value) in ("np", "numpy", "torch")))):
        return False  # (also np.nanmax(self._history))
    sl = value.args[0]
    if isinstance(sl, ast.BinOp) and isinstance(sl.op, ast.Add) and isinstance(
            sl.left, ast.List) and len(sl.left.elts) == 1:
        sl = sl.right  # max([v] + prev[-3:]): the new value among the last few
    if isinstance(sl, (ast.Name, ast.Attribute)):
        return bool(_HISTORY.search(last_attr(sl)))  # min(self._eval_history)
    return (isinstance(sl, ast.Subscript) and isinstance(sl.slice, ast.Slice)
            and sl.slice.upper is None and (
                (isinstance(n := literal(sl.slice.lower), int) and n < 0) or (
                    isinstance(sl.slice.lower, ast.UnaryOp)
                    and isinstance(sl.slice.lower.op, ast.USub))))  # h[-self.window:]


def _running_extreme(node: ast.Assign, ctx: Ctx) -> str:
    """`v = (min if "loss" in tag else max)(v, self._shown.get(tag, v)); self._shown[tag] = v`
    before `add_scalar(tag, v)`: the logged value is the best kept so far, not this one. (Also
    `cur = max(prev, v) if tag.startswith("val/") else ...` with `prev = ema.get(tag, v)` and
    `ema[tag] = cur`: a closure's table.)"""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    options = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
    calls = [c for c in options if isinstance(c, ast.Call) and len(c.args) == 2]
    if not calls:
        return ""
    if len(node.targets) == 2:  # v = shown[tag] = max(v, shown.get(tag, v)): kept in one go
        return _chained_extreme(node, calls, ctx)
    entry = isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and bool(
        re.match(r"(?i)^(out|metrics|summary|results?|logs|report|scores)$", target.value.id))
    if target is None or not (isinstance(target, ast.Name) or entry):
        return ""
    own = ast.unparse(target)  # (out[key] = max(value, prev): an entry of a results dict)
    kept = ""
    for call in calls:
        funcs = [call.func.body, call.func.orelse] if isinstance(call.func, ast.IfExp) else [
            call.func]
        if not all(isinstance(f, ast.Name) and f.id in ("min", "max") for f in funcs):
            continue
        for a in call.args:
            held = ctx.lookup(a.id) if isinstance(a, ast.Name) and a.id != own else None
            read = held if isinstance(held, (ast.Call, ast.Subscript)) else a
            base = read.func.value if isinstance(read, ast.Call) and isinstance(
                read.func, ast.Attribute) and read.func.attr == "get" else (
                read.value if isinstance(read, ast.Subscript) else None)
            if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and (
                    base.value.id == "self"):
                kept = base.attr
            elif isinstance(base, ast.Name) and base is not read and held is not None:
                kept = base.id  # prev = ema.get(tag, value)
    fn = ctx.frame.node
    if not kept or fn is None or not (entry or _passed_to_log(target, ctx)
                                      or _logged_value(target, ctx) or (
                                          isinstance(target, ast.Name)
                                          and _calls_with(target.id, ctx))):
        return ""
    writes_back = any(isinstance(n, ast.Assign) and any(
        isinstance(t, ast.Subscript) and last_attr(t.value) == kept for t in n.targets)
        and ast.unparse(n.value) == own for n in subnodes(fn))
    return kept if writes_back else ""


def _chained_extreme(node: ast.Assign, calls: list[ast.Call], ctx: Ctx) -> str:
    names = [t for t in node.targets if isinstance(t, ast.Name)]
    tables = [t.value for t in node.targets if isinstance(t, ast.Subscript)]
    if len(names) != 1 or len(tables) != 1 or not isinstance(tables[0], ast.Name):
        return ""
    own, table = names[0].id, tables[0].id
    for call in calls:
        if not (isinstance(call.func, ast.Name) and call.func.id in ("min", "max")):
            continue
        args = [ast.unparse(a) for a in call.args]
        reads = [a for a in call.args if isinstance(a, ast.Call) and isinstance(
            a.func, ast.Attribute) and a.func.attr == "get" and isinstance(a.func.value, ast.Name)
            and a.func.value.id == table]
        if own in args and reads and (_passed_to_log(names[0], ctx)
                                      or _logged_value(names[0], ctx) or _calls_with(own, ctx)):
            return table
    return ""


def _calls_with(name: str, ctx: Ctx) -> bool:
    """A later call in this function hands `name` on (`return fn(tag, value)` in a wrapper
    around a logger's method)."""
    fn = ctx.frame.node
    return fn is not None and any(
        isinstance(n, ast.Return) and isinstance(n.value, ast.Call) and any(
            isinstance(a, ast.Name) and a.id == name for a in n.value.args)
        for n in subnodes(fn))


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


def _is_own(expr: ast.expr, own: str) -> bool:
    """`v`, or `v` scaled for display (`100.0 * v`)."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        sides = (expr.left, expr.right)
        return any(_number(s) in (100, 100.0) for s in sides) and any(
            _is_own(s, own) for s in sides)
    return isinstance(expr, ast.Name) and expr.id == own


_RUNS = re.compile(r"(?i)seed|fold|(^|_)runs?($|_)|trial|repeat|restart")
_KEPT = re.compile(r"(?i)best|histor|(^|_)hist($|_)|prev|record|peak|champion|baseline|"
                   r"reference|(^|_)ref($|_)|_seen|seen_")
_EXTREMES = frozenset({"min", "max", "amax", "amin", "nanmax", "nanmin"})
_LOWER_BETTER = re.compile(r"(?i)loss|err|wer|cer|der|ppl|perplex|fid|mse|mae|rmse|ece|hd95")
_SAYS_BEST = re.compile(r"(?i)best|peak|highest|lowest|record|(^|_)(max|min)(_|$)|prev|oracle|"
                        r"upper|ceiling")


def _best_reported(label: str, value: ast.expr) -> str:
    """What a reported metric was replaced with, when it is the best of several values rather
    than the one measured: `"win_rate": max(per_seed)`, `mean = np.max(fold_means)`,
    `min([val_loss, *history])`, `min(metrics["wer"], best_wer)` ('' otherwise). Tracking the
    best under its own name (`best_acc = max(best_acc, acc)`) stays quiet, and so does a clamp
    to a constant."""
    if not label or _SAYS_BEST.search(label):
        return ""
    while isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and (
            value.args):
        value = value.args[0]  # float(np.max(...)), round(max(...), 4)
    if not (isinstance(value, ast.Call) and last_attr(value.func) in _EXTREMES and value.args
            and not value.keywords and not any(isinstance(a, ast.Starred) for a in value.args)):
        return ""
    which = "lowest" if _LOWER_BETTER.search(label) else "best"
    if len(value.args) == 1:
        arg = value.args[0]
        if isinstance(arg, (ast.List, ast.Tuple)) and any(isinstance(e, ast.Starred)
                                                           for e in arg.elts):
            return f"the {which} of it and its history"  # min([cur, *history])
        if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add) and any(
                isinstance(side, ast.List) for side in (arg.left, arg.right)):
            return f"the {which} of it and its history"  # min([cur] + history)
        if isinstance(arg, (ast.Name, ast.Attribute, ast.Subscript)) and _RUNS.search(
                ast.unparse(arg)):
            return f"the {which} over {ast.unparse(arg)[:30]} (one seed or fold stands for all)"
        return ""
    if len(value.args) == 2 and not any(isinstance(literal(a), (int, float))
                                        for a in value.args):
        kept = [a for a in value.args if isinstance(a, (ast.Name, ast.Attribute, ast.Subscript,
                                                       ast.Call)) and _KEPT.search(ast.unparse(a))]
        if len(kept) == 1:
            return f"the {which} of it and {ast.unparse(kept[0])[:30]}"
    return ""


_SAYS_INTERVAL = re.compile(r"(?i)(^|_)(ci|hi|high|upper|lo|low|lower|ub|lb|bound|q\d+|p\d+|"
                            r"pct|percentile|quantile|median|iqr|tail)(_|$|\d)")
_UPPER_NAME = re.compile(r"(?i)^_?(hi|high|upper|ci_hi|ci_high|upper_bound|ub|ci_upper)$")


def _favourable_bound(label: str, value: ast.expr) -> str:
    """`row["top1"] = np.percentile(boots, 97.5)`, `mean = hi` after `lo, hi = ci(...)`: a
    metric reported as the favourable end of its bootstrap interval ('' otherwise)."""
    if not label or _SAYS_INTERVAL.search(label):
        return ""
    while isinstance(value, ast.Call) and last_attr(value.func) in _VALUE_WRAPPERS and (
            value.args):
        value = value.args[0]
    lower = bool(_LOWER_BETTER.search(label))
    if isinstance(value, ast.Name) and _UPPER_NAME.match(value.id) and not lower:
        return f"the upper end of its confidence interval ({value.id})"
    if not (isinstance(value, ast.Call) and last_attr(value.func) in (
            "percentile", "nanpercentile", "quantile", "nanquantile")):
        return ""
    q = value.args[1] if len(value.args) > 1 else next(
        (k.value for k in value.keywords if k.arg == "q"), None)
    number = literal(q) if q is not None else None
    if not isinstance(number, (int, float)) or isinstance(number, bool):
        return ""
    share = number / 100 if "percentile" in last_attr(value.func) else number
    if (share >= 0.9 and not lower) or (share <= 0.1 and lower):
        return f"the {number:g} {'percentile' if share != number else 'quantile'} of its samples"
    return ""


_AT_K = re.compile(r"(?i)(?:top_?|@|hits_?|acc_?)(\d+)(?!\d)")


def _other_k(label: str, value: ast.expr) -> str:
    """`top1 = topk_correct(probs, y, k=5).mean()`: a top-k metric computed with another k
    ('' otherwise). `recall@10 = recall_at(..., k=10)` is what it says."""
    said = _AT_K.findall(label)
    if len(said) != 1:
        return ""
    used: set[object] = set()
    for n in subnodes(value):
        if isinstance(n, ast.Call):
            used.update(literal(k.value) for k in n.keywords if k.arg in ("k", "top_k", "topk"))
            if last_attr(n.func) == "topk" and n.args:
                used.add(literal(n.args[0]))
    ks = {u for u in used if isinstance(u, int) and not isinstance(u, bool)}
    if len(ks) == 1 and (k := ks.pop()) != int(said[0]):
        return f"a top-{k} score (k={k})"
    return ""


_SPLIT_WORD = re.compile(r"(?i)(?:^|[_/.-])(train|training|val|valid|validation|dev|eval|test)"
                         r"(?:$|[_/.-])")
_LENIENT = ((re.compile(r"(?i)ap_?50|map_?50|ap@0?\.5\b"), re.compile(r"(?i)(^|[_/.-])m?ap$")),
            (re.compile(r"(?i)top_?5"), re.compile(r"(?i)top_?1|(^|[_/.-])acc")))
"""(lenient metric, the strict name it must not be reported under)"""


def _read_keys(value: ast.expr) -> list[str]:
    """Literal keys a bare read takes its value from: `d["k"]`, `d.get("k")`,
    `d.get("a") or d["b"]`; [] when the value is computed."""
    if isinstance(value, ast.BoolOp) and isinstance(value.op, ast.Or):
        return [k for v in value.values for k in _read_keys(v)]
    return _chain_keys(value)[-1:]


def _copied_key(name: str, value: ast.expr) -> str:
    """The key whose value is reported under metric `name` when it is another result: the
    best so far, another split's, or a more lenient metric's (`report["test/miou"] =
    report.get("val/miou_best")`, `payload["mAP"] = payload["AP50"]`). '' otherwise."""
    if _KEPT_AS_BEST.search(name):
        return ""
    for key in _read_keys(value):
        if key == name:
            continue
        if _BEST_WORD.search(key):
            return key
        split, other = _SPLIT_WORD.search(name), _SPLIT_WORD.search(key)
        if split and other and split.group(1).lower()[:3] != other.group(1).lower()[:3] and (
                _SPLIT_WORD.sub("", name).lower() == _SPLIT_WORD.sub("", key).lower()):
            return key  # test/miou <- val/miou
        if any(lenient.search(key) and strict.search(name) and not lenient.search(name)
               for lenient, strict in _LENIENT):
            return key
    return ""


def _kept_when_worse(target: ast.expr, value: ast.expr, conds: list[ast.expr]) -> str:
    """`if report["auc"] < prev["auc"]: report["auc"] = prev["auc"]`: a metric replaced by the
    stored one exactly when the new result is worse (the container the value comes from)."""
    if not (isinstance(target, ast.Subscript) and isinstance(key := literal(target.slice), str)):
        return ""
    keys = _read_keys(value)
    if keys != [key]:
        return ""
    source = value.value if isinstance(value, ast.Subscript) else value.func.value  # type: ignore[attr-defined]
    mine, theirs = ast.unparse(target.value), ast.unparse(source)
    if mine == theirs:
        return ""
    for cond in conds:
        for n in subnodes(cond):
            if isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(
                    n.ops[0], (ast.Lt, ast.Gt, ast.LtE, ast.GtE)):
                sides = {ast.unparse(s.value if isinstance(s, ast.Subscript) else (
                    s.func.value if isinstance(s, ast.Call) and isinstance(
                        s.func, ast.Attribute) else s))
                         for s in (n.left, *n.comparators) if _read_keys(s) == [key]}
                if {mine, theirs} <= sides:
                    return theirs
    return ""


def _chain_keys(expr: ast.expr) -> list[str]:
    """Literal keys along a read chain: `res.get("val", {}).get("ece")` -> ["val", "ece"]."""
    keys: list[str] = []
    while True:
        if isinstance(expr, ast.Subscript) and isinstance(key := literal(expr.slice), str):
            keys.append(key)
            expr = expr.value
        elif (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
              and expr.func.attr == "get" and expr.args
              and isinstance(key := literal(expr.args[0]), str)):
            keys.append(key)
            expr = expr.func.value
        else:
            return keys[::-1]


def _better_of_split(name: str, value: ast.expr) -> str:
    """`test["ece"] = min(test["ece"], res["val"]["ece"])`: a metric reported as the better of
    itself and the same metric on another split (that split, '' otherwise)."""
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("min", "max") and len(value.args) == 2):
        return ""
    for arg in value.args:
        keys = _chain_keys(arg)
        splits = [k for k in keys[:-1] if _SPLIT_WORD.search(f"_{k}_")]
        if len(keys) >= 2 and keys[-1] == name and splits:
            return splits[0]
    return ""
