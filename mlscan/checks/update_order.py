"""Update steps whose parts are right but in the wrong order or place (session 21 shapes).

- MLS304: gradients clipped after `scaler.scale(loss).backward()` with no `scaler.unscale_()`
  before the clip: the clip compares scaled norms, so the limit means nothing (AMP recipes
  unscale first).
- MLS304: `maximize=True` handed to an optimizer (also through a kwargs dict): it climbs
  the loss instead of descending it.
- MLS304: a param group's weight decay, momentum or eps rewritten from itself by a factor
  on every step (`g["weight_decay"] = g["weight_decay"] * 1.0004`): the setting compounds.
- MLS302: gradient centralisation that subtracts the gradient's *sum* instead of its mean:
  the update is pushed by (fan-in - 1) times the mean.
- MLS302: the same tensor divided by the world size twice around an all-reduce (before it
  and again in the future's callback): every update is world-size times too small.
- MLS302: an EMA blend written into the live model (`p.mul_(d).add_(ema_p, alpha=1 - d)`
  over `zip(ema.parameters(), model.parameters())`): training is pulled back towards the
  average each step and the average never moves. Copying the average into the model (EMA
  evaluation swaps) stays quiet.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.nodes import called_names, subnodes
from mlscan.checks.optimizer import OPTIM_TAMPER
from mlscan.checks.tampering import PARAM_TAMPER
from mlscan.checks.update_terms import ema_zip_pair
from mlscan.model import Severity

_CLIPS = frozenset({"clip_grad_norm_", "clip_grad_value_", "clip_grad_norm"})
_OPTIMIZERS = re.compile(r"^(SGD|Adam|AdamW|RMSprop|Adagrad|Adadelta|Adamax|NAdam|RAdam|"
                         r"ASGD|Rprop|LBFGS|SparseAdam|Lion|Adafactor|LAMB|Lamb|FusedAdam)$")
_COMPOUNDING_KEYS = frozenset({"weight_decay", "momentum", "eps", "dampening"})
_EMA = re.compile(r"(?i)ema|shadow|swa|teacher|averaged|average")
_BLENDS = frozenset({"add_", "lerp_", "mul_", "addcmul_"})
_TEST_CASES = re.compile(r"(?i)test|input|case|sample|example|variant|config_grid|sweep")
"""Functions listing optimizer settings to test (torch's optim_inputs_func_sgd)."""
_PER_STEP = re.compile(r"^(on_before_optimizer_step|on_train_batch_start|on_train_batch_end|"
                       r"on_after_backward|on_before_backward|on_step_end|on_step_begin|"
                       r"optimizer_step|training_step)$")
_AVERAGING = re.compile(r"(?i)averag|avg|mean|swa|soup|merge")
_WORLD = re.compile(r"(?i)^(world|world_size|ws|n_procs|nprocs|num_processes|n_ranks|nranks)$")


def _scaled_backward(fn: ast.AST, before: int) -> bool:
    """The last `backward()` in `fn` before line `before` is `scaler.scale(loss).backward()`
    (not a plain `loss.backward()` of a branch without AMP)."""
    calls = [n for n in subnodes(fn) if isinstance(n, ast.Call) and isinstance(
        n.func, ast.Attribute) and n.func.attr == "backward" and n.lineno < before]
    last = max(calls, key=lambda n: n.lineno, default=None)
    return last is not None and isinstance(last.func, ast.Attribute) and isinstance(
        last.func.value, ast.Call) and last_attr(last.func.value.func) == "scale"


def _unscaled_before(fn: ast.AST, backward_before: int) -> bool:
    return any(isinstance(n, ast.Call) and last_attr(n.func) == "unscale_"
               and n.lineno < backward_before for n in subnodes(fn))


def _self_scaled(target: ast.Subscript, value: ast.expr, any_factor: bool = False) -> bool:
    """`g[k] * c (+ d)` with `g[k]` the target and c a constant other than 1 (with
    `any_factor`, any other factor)."""
    text = ast.unparse(target)
    if isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Add, ast.Sub)):
        if isinstance(literal(value.right), (int, float)):
            value = value.left
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult)):
        return False
    sides = (value.left, value.right)
    if any_factor and any(ast.unparse(s) == text for s in sides):
        return True
    factor = next((literal(s) for s in sides if ast.unparse(s) != text), None)
    return any(ast.unparse(s) == text for s in sides) and isinstance(
        factor, (int, float)) and not isinstance(factor, bool) and factor not in (0, 1)



def _divided_by_fraction(target: ast.Subscript, value: ast.expr, ctx: Ctx) -> str:
    """`g["lr"] = max(g["lr"] / self.factor, min_lr)` with `factor=0.5` (a plateau decay
    factor, applied by multiplying): every plateau doubles the rate."""
    own = ast.unparse(target)
    for n in subnodes(value):
        if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
                and ast.unparse(n.left) == own):
            factor = ctx.const(n.right)
            if factor is None and isinstance(n.right, (ast.Name, ast.Attribute)):
                default = ctx.param_default(last_attr(n.right))  # self.factor = factor
                factor = literal(default) if default is not None else None
            if isinstance(factor, (int, float)) and not isinstance(factor, bool) and (
                    0 < factor < 1):
                return f"{ast.unparse(n)} with {last_attr(n.right) or 'the factor'} = {factor}"
    return ""

class UpdateOrder(Check):
    rules = (OPTIM_TAMPER, PARAM_TAMPER)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        attr = last_attr(node.func)
        if attr in _CLIPS:
            self._clip_before_unscale(node, attr, ctx)
        elif attr in ("sub_", "sub"):
            self._centralised_by_sum(node, ctx)
        elif attr == "div_":
            self._divided_twice(node, ctx)
            if len(node.args) == 1:
                self._average_off_by_one(node, node.args[0], ctx)
        elif attr in _BLENDS:
            self._ema_into_model(node, ctx)
        if (attr in ("update", "dict") or _OPTIMIZERS.match(attr)) and not (
                _TEST_CASES.search(ctx.frame.name)):
            maximize = kwarg(node, "maximize")
            if maximize is not None and literal(maximize) is True:
                ctx.report(OPTIM_TAMPER, node, f"maximize=True handed to {attr}(): the "
                           "optimizer climbs the loss instead of descending it",
                           severity=Severity.MEDIUM)
            if attr == "update" and isinstance(node.func, ast.Attribute):
                for kw in node.keywords:  # group.update(weight_decay=group["weight_decay"] * c)
                    if kw.arg in _COMPOUNDING_KEYS:
                        self._compounding(node, ast.Subscript(
                            value=node.func.value, slice=ast.Constant(kw.arg), ctx=ast.Load()),
                            kw.value, ctx)

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "maximize" and literal(
                    value) is True and ctx.mentions("optim") and not _TEST_CASES.search(
                        ctx.frame.name):
                ctx.report(OPTIM_TAMPER, value, "optimizer settings with maximize=True: the "
                           "optimizer climbs the loss instead of descending it",
                           severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target = node.targets[0]
        if (isinstance(target, ast.Subscript) and literal(target.slice) == "maximize" and (
                literal(node.value) is True or (isinstance(node.value, ast.UnaryOp) and isinstance(
                    node.value.op, ast.Not))) and ctx.mentions("optim")
                and not _TEST_CASES.search(ctx.frame.name)):
            # group["maximize"] = not optimizer.defaults.get("maximize", True)
            ctx.report(OPTIM_TAMPER, node, f"{ast.unparse(node)[:50]}: the optimizer climbs "
                       "the loss instead of descending it", severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Subscript) and literal(target.slice) == "lr"
                and (grown := _divided_by_fraction(target, node.value, ctx))):
            ctx.report(OPTIM_TAMPER, node, f"{grown}: dividing by a factor below 1 raises the "
                       "learning rate where it was meant to lower it", severity=Severity.MEDIUM)
            return
        if (len(node.targets) == 1 and isinstance(target, ast.Subscript)
                and literal(target.slice) in _COMPOUNDING_KEYS
                and isinstance(node.value, ast.BinOp)):
            self._compounding(node, target, node.value, ctx)
        elif (len(node.targets) == 1 and isinstance(target, ast.Subscript)
              and literal(target.slice) == "lr" and _PER_STEP.match(ctx.frame.name)
              and isinstance(node.value, ast.BinOp) and isinstance(node.value.op, ast.Mult)
              and _self_scaled(target, node.value, any_factor=True)
              and not any(isinstance(f := literal(side), (int, float)) and 0 < f < 1
                          for side in (node.value.left, node.value.right))):
            # (a literal factor below 1 is an exponential decay schedule written by hand)
            # on_before_optimizer_step: group["lr"] = group["lr"] * scale
            ctx.report(OPTIM_TAMPER, node, f"{ast.unparse(target)[:30]} multiplied by a factor "
                       f"in {ctx.frame.name}(), which runs on every step: the learning rate "
                       "compounds (a scheduler sets it from the step instead)",
                       severity=Severity.MEDIUM)
        if isinstance(node.value, ast.BinOp) and isinstance(node.value.op, ast.Div):
            self._average_off_by_one(node, node.value.right, ctx)

    @staticmethod
    def _compounding(node: ast.AST, target: ast.Subscript, value: ast.expr, ctx: Ctx) -> None:
        if not (_self_scaled(target, value) and (ctx.loops or ctx.frame.name == "step")):
            return
        if not re.search(r"(?i)group|param_groups|^g$|^pg$", ast.unparse(target.value)):
            return
        ctx.report(OPTIM_TAMPER, node, f"{ast.unparse(target)[:40]} rewritten from itself by a "
                   "constant factor on every pass: the setting compounds as training runs",
                   severity=Severity.MEDIUM)

    @staticmethod
    def _clip_before_unscale(node: ast.Call, attr: str, ctx: Ctx) -> None:
        fn = ctx.frame.node
        if fn is None or "scale" not in called_names(fn):
            return
        owner = ast.unparse(node.func.value) if isinstance(node.func, ast.Attribute) else ""
        if re.search(r"(?i)accelerator|fabric|trainer|scaler|deepspeed|engine", owner):
            return  # accelerator.clip_grad_norm_ unscales itself
        if _scaled_backward(fn, node.lineno) and not _unscaled_before(fn, node.lineno):
            ctx.report(OPTIM_TAMPER, node, f"{attr}() on gradients still multiplied by the loss "
                       "scale (scaler.scale(loss).backward() with no scaler.unscale_() before "
                       "the clip): the limit is compared with scaled norms",
                       severity=Severity.MEDIUM)

    @staticmethod
    def _centralised_by_sum(node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if not (isinstance(func, ast.Attribute) and len(node.args) == 1
                and isinstance(arg := node.args[0], ast.Call) and last_attr(arg.func) == "sum"
                and isinstance(arg.func, ast.Attribute)
                and ast.unparse(arg.func.value) == ast.unparse(func.value)
                and "grad" in ast.unparse(func.value).lower()):
            return
        if kwarg(arg, "keepdim") is None and not any(
                isinstance(a, (ast.Tuple, ast.Call)) for a in arg.args):
            return  # g.sub(g.sum()): a scalar shift, judged elsewhere
        ctx.report(PARAM_TAMPER, node, f"{ast.unparse(func.value)[:30]} minus its own sum: "
                   "centralisation subtracts the mean, so this pushes every gradient by "
                   "(fan-in - 1) times the mean", severity=Severity.MEDIUM)

    @staticmethod
    def _divided_twice(node: ast.Call, ctx: Ctx) -> None:
        if not (len(node.args) == 1 and isinstance(node.args[0], ast.Name)
                and _WORLD.match(node.args[0].id)):
            return
        outer = next((f.node for f in ctx.frames if f.node is not None and isinstance(
            f.node, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
        if (outer is None or outer is ctx.frame.node
                or not ({"all_reduce", "allreduce"} & called_names(outer))):
            return  # (the second division sits in the future's callback)
        world = node.args[0].id
        # divisions in the hook's own straight-line body (not in branches or callbacks) of the
        # tensor it then all-reduces
        skipped = {id(n) for s in outer.body if isinstance(s, ast.If) for n in subnodes(s)}
        skipped |= {id(n) for d in subnodes(outer) if d is not outer and isinstance(
            d, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) for n in subnodes(d)}
        reduced = {ast.unparse(n.args[0]) for n in subnodes(outer) if isinstance(n, ast.Call)
                   and last_attr(n.func) in ("all_reduce", "allreduce") and n.args}
        held_reduced = {id(n.value) for n in subnodes(outer) if isinstance(n, ast.Assign)
                        and any(ast.unparse(t) in reduced for t in n.targets)}
        # (compressed = buffer.to(torch.bfloat16).div_(world); all_reduce(compressed))
        earlier = [n for n in subnodes(outer) if isinstance(n, ast.Call)
                   and last_attr(n.func) == "div_" and n.lineno < node.lineno and len(n.args) == 1
                   and isinstance(n.args[0], ast.Name) and n.args[0].id == world
                   and id(n) not in skipped and isinstance(n.func, ast.Attribute)
                   and (ast.unparse(n.func.value) in reduced or id(n) in held_reduced)]
        if earlier:
            ctx.report(PARAM_TAMPER, node, f"divided by {world} again (already on line "
                       f"{earlier[0].lineno}, before the all-reduce): the averaged gradients "
                       f"are {world} times too small", severity=Severity.MEDIUM)

    @staticmethod
    def _ema_into_model(node: ast.Call, ctx: Ctx) -> None:
        loop = ctx.loops[-1] if ctx.loops else None
        if not isinstance(loop, ast.For) or "parameters" not in ast.unparse(loop.iter) or (
                pair := ema_zip_pair(loop, _EMA)) is None:
            return
        live, ema = pair
        root = node.func
        while isinstance(root, ast.Attribute) and isinstance(root.value, ast.Call):
            root = root.value.func  # p.mul_(d).add_(e, ...) -> p
        written = root.value if isinstance(root, ast.Attribute) else None
        if isinstance(written, ast.Attribute) and written.attr == "data":
            written = written.value  # p.data.mul_(d)
        if not (isinstance(written, ast.Name) and written.id == live):
            return
        if not any(isinstance(n, ast.Name) and n.id == ema for a in node.args
                   for n in subnodes(a)):
            return
        ctx.report(PARAM_TAMPER, node, f"EMA blend written into the live weights ({live}) from "
                   f"the average ({ema}): training is pulled back towards the average on "
                   "every update and the average never moves", severity=Severity.MEDIUM)

    @staticmethod
    def _average_off_by_one(node: ast.AST, divisor: ast.expr, ctx: Ctx) -> None:
        """`v.div_(len(paths) + 1)` when averaging checkpoints: the mean of n models divided
        by n + 1 shrinks every weight."""
        if not (isinstance(divisor, ast.BinOp) and isinstance(divisor.op, ast.Add)
                and literal(divisor.right) == 1 and isinstance(divisor.left, ast.Call)
                and last_attr(divisor.left.func) == "len" and divisor.left.args
                and _AVERAGING.search(ctx.frame.name)):
            return
        counted = ast.unparse(divisor.left.args[0])
        fn = ctx.frame.node
        if fn is not None and any(isinstance(n, ast.For) and ast.unparse(n.iter) == counted
                                  for n in subnodes(fn)):
            ctx.report(PARAM_TAMPER, node, f"the sum over {counted} divided by len({counted}) "
                       "+ 1: the average is shrunk towards zero",
                       severity=Severity.MEDIUM)
