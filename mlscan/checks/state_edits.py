"""MLS302: normalisation statistics rewritten while a checkpoint is loaded.

`for key in state: if key.endswith("running_var"): state[key] = state[key].clamp_min(1.0)`:
BatchNorm's running variance floored (or the mean shifted, or either scaled) before
`load_state_dict`. Every normalised activation is rescaled at inference, so the model
loaded is not the one that was trained. Conversions of the same entry (`.float()`,
`.to(device)`, reshapes) stay quiet: they keep the values.

Also the EMA (shadow) weights copied into the live parameters every few steps of a training
hook (`torch._foreach_copy_(params, self.ema)` under `step % k == 0`): the optimizer's
progress since the last copy is thrown away. Swaps for evaluation keep a backup and run in
evaluation hooks.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal, source
from mlscan.checks.tampering import PARAM_TAMPER
from mlscan.model import Severity

_NORM_STATS = re.compile(r"running_(var|mean)")
_EDITS = frozenset({"clamp", "clamp_", "clamp_min", "clamp_max", "clip", "fill_", "mul", "mul_",
                    "add", "add_", "fill", "sub", "sub_", "div", "div_"})


_TRAIN_HOOK = re.compile(r"(?i)^(on_train_batch_end|on_train_batch_start|on_before_optimizer_"
                         r"step|on_after_backward|on_step_end|training_step|train_step|step)$")
_SHADOW = re.compile(r"(?i)ema|shadow|averaged|swa")


class StateEdits(Check):
    rules = (PARAM_TAMPER,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if not (last_attr(node.func) in ("_foreach_copy_", "copy_") and ctx.conds
                and _TRAIN_HOOK.match(ctx.frame.name) and node.args):
            return
        if last_attr(node.func) == "_foreach_copy_":
            if len(node.args) != 2:
                return
            live, shadow = node.args
        else:
            live, shadow = node.func.value, node.args[0]  # type: ignore[attr-defined]
        if not (_SHADOW.search(source(shadow)) and not _SHADOW.search(source(live))
                and any("%" in ast.unparse(ctx.follow(c, 1) or c) for c in ctx.conds)):
            return
        ctx.report(PARAM_TAMPER, node, f"{source(shadow)[:30]} copied into the live weights "
                   f"every few steps of {ctx.frame.name}(): the optimizer's progress since the "
                   "last copy is thrown away", severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target = node.targets[0]
        value = node.value
        if not (isinstance(target, ast.Subscript) and isinstance(value, ast.Call)
                and last_attr(value.func) in _EDITS and ctx.conds
                and ctx.mentions("running_")):
            return
        edit = value.func
        base = edit.value if isinstance(edit, ast.Attribute) else None
        while isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute) and (
                base.func.attr in ("float", "double", "to", "clone", "detach")):
            base = base.func.value  # state[k].float().clamp_min(1.0)
        if base is None or source(base) != source(target) or not any(
                isinstance(a, ast.Constant) and isinstance(a.value, (int, float))
                for a in (*value.args, *(k.value for k in value.keywords))):
            return
        numbers = [a.value for a in (*value.args, *(k.value for k in value.keywords))
                   if isinstance(a, ast.Constant) and isinstance(a.value, (int, float))]
        if last_attr(value.func).startswith(("clamp", "clip")) and all(
                abs(n) <= 1e-3 for n in numbers):
            return  # clamp_min(1e-5): a variance kept off zero for fp16, not a new value
        keyed = [c for c in ctx.conds if _NORM_STATS.search(ast.unparse(c))]
        if keyed:
            ctx.report(PARAM_TAMPER, node, f"{source(target)[:30]} (normalisation statistics) "
                       f"rewritten with {last_attr(value.func)}() while the checkpoint is "
                       "loaded: every normalised activation changes, so the model loaded is "
                       "not the one trained", severity=Severity.MEDIUM)


_AVERAGING = re.compile(r"(?i)averag|avg|soup|swa|ensemble|merge")


class NormalisedAverages(Check):
    """`w / w.norm()` as the weights of a checkpoint average: the weights do not sum to 1, so
    every averaged tensor is scaled (by up to sqrt(n)) instead of blended."""

    rules = (PARAM_TAMPER,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if not (ctx.mentions(".norm(") and _AVERAGING.search(ctx.frame.name)):
            return
        for n in ast.walk(node.value):
            if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
                    and isinstance(n.left, ast.Name) and isinstance(n.right, ast.Call)
                    and last_attr(n.right.func) == "norm" and not n.right.args
                    and source(n.right.func.value) == n.left.id):  # type: ignore[attr-defined]
                ctx.report(PARAM_TAMPER, node, f"averaging weights {n.left.id} / "
                           f"{n.left.id}.norm() do not sum to 1: every averaged tensor is "
                           "scaled, not blended", severity=Severity.MEDIUM)
                return


class StrippedKeys(Check):
    """`{k.lstrip("module."): v for k, v in state.items()}`: `lstrip` removes any of those
    characters, not the prefix, so `embed.weight` becomes `bed.weight` and `strict=False`
    loading silently skips it. `removeprefix` (or a slice) is the prefix strip."""

    rules = (PARAM_TAMPER,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if not (isinstance(node.func, ast.Attribute) and node.func.attr in ("lstrip", "rstrip")
                and len(node.args) == 1 and isinstance(chars := literal(node.args[0]), str)
                and len(chars) >= 3 and isinstance(node.func.value, ast.Name)
                and re.fullmatch(r"(?i)k|key|name|n|param_name|pname", node.func.value.id)
                and (chars.endswith(".") or chars.startswith(".") or chars.endswith("_"))
                and (ctx.mentions("state_dict") or ctx.mentions("load_state"))):
            return
        ctx.report(PARAM_TAMPER, node, f"{node.func.attr}({chars!r}) strips any of those "
                   "characters, not the prefix: parameter names that start with them are "
                   "mangled and their weights are not loaded", severity=Severity.MEDIUM)


class PartialSync(Check):
    """Gradients all-reduced by hand for some parameters only (`p.ndim > 1`: biases and gains
    left out): those parameters train on each rank's own gradients and the replicas drift
    apart. Also state dicts filtered to keys ending in `weight`/`bias` before loading: every
    other parameter and buffer (running stats, learned constants) silently keeps its init."""

    rules = (PARAM_TAMPER,)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        value = node.value
        if (isinstance(value, ast.DictComp) and "state_dict" in ast.unparse(
                value.generators[0].iter) and any(
                    re.search(r"\.(dim\(\)|ndim)\s*>\s*1", ast.unparse(c))
                    for g in value.generators for c in g.ifs)):
            ctx.report(PARAM_TAMPER, node, "the saved (or loaded) state keeps only tensors with "
                       "more than one dimension: every bias and norm scale is dropped and "
                       "comes back at its initial value", severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        value = node.value
        if (isinstance(value, ast.ListComp) and ctx.frame.node is not None
                and re.search(r"(?i)sync|all_?reduce|average_grad|reduce_grad", ctx.frame.name)
                and any(re.search(r"(?i)\bndim\b|\.dim\(\)", ast.unparse(c))
                        for g in value.generators for c in g.ifs)
                and "grad" in ast.unparse(value)):
            ctx.report(PARAM_TAMPER, node, f"{ctx.frame.name}() syncs only the parameters that "
                       "pass a shape test: the others (biases, gains) train on each rank's own "
                       "gradients and the replicas drift apart", severity=Severity.MEDIUM)
        elif (isinstance(value, ast.DictComp) and any(
                isinstance(c, ast.Compare) and any(isinstance(op, ast.In) for op in c.ops)
                and {"weight", "bias"} <= {literal(e) for e in getattr(
                    c.comparators[0], "elts", [])}
                and len(getattr(c.comparators[0], "elts", [])) == 2
                for g in value.generators for cond in g.ifs for c in ast.walk(cond))
              and re.search(r"(?i)load|restore|resume", ctx.frame.name)):
            ctx.report(PARAM_TAMPER, node, "the state dict is filtered to keys ending in weight "
                       "or bias before loading: every other parameter and buffer keeps its "
                       "initial value", severity=Severity.MEDIUM)
