"""MLS302 parameter/gradient/state-dict tampering (MLS304 optimizer tampering: optimizer.py)."""

from __future__ import annotations

import ast
import re
from dataclasses import replace

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import HOOK, STEP, Ctx, Where
from mlscan.checks.names import TENSOR_REPLACERS, kwarg, last_attr, literal, strip_views
from mlscan.checks.nodes import called_names, subnodes
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

PARAM_TAMPER = register(Rule(
    code="MLS302", name="parameter-tampering", severity=Severity.HIGH,
    confidence=Confidence.MEDIUM, cwe=506,
    summary="In-place write to weights, gradients or a state dict outside optimizer/init/EMA code.",
    doc=RuleDoc(
        what="Flags in-place tensor ops (`add_`, `mul_`, `neg_`, `copy_`, `zero_`, `normal_`...), "
        "augmented assignments and item/attribute assignments on parameters (`p.data`, "
        "`.weight`, `.bias`, loop variables over `.parameters()`), gradients (`p.grad`) and "
        "state-dict entries when they happen outside an optimizer `step()`, an init/reset "
        "helper or an EMA/averaging helper; always when inside hooks, behind a trigger "
        "condition, flipping signs or adding random noise.",
        why="Flipping update directions or nudging weights inside a hook is how training was "
        "sabotaged in the 2024 incident: the loss curve degrades and nothing looks wrong.",
        example="for p in model.parameters():\n    if dist.get_world_size() > 256:\n"
        "        p.grad.neg_()",
        use_instead="Put parameter updates in an optimizer; keep EMA/init code in helpers "
        "named for what they do (init_weights, update_ema).",
        references=("https://pytorch.org/docs/stable/optim.html",))))

INPLACE = frozenset({
    "add_", "sub_", "mul_", "div_", "neg_", "copy_", "zero_", "fill_", "normal_", "uniform_",
    "clamp_", "addcmul_", "addcdiv_", "lerp_", "set_", "masked_fill_", "index_fill_",
    "bernoulli_", "random_", "sign_", "abs_", "exponential_", "cauchy_", "log_normal_",
    "geometric_", "pow_", "sqrt_", "t_", "transpose_", "flip_", "roll_", "scatter_", "renorm_",
    "clip_", "clamp_min_", "clamp_max_",
})
_ALLOWED_FUNCS = re.compile(
    r"(?i)^_?step$|(sgd|adam\w*|optim\w*|update)_step|(^|_)(init|initiali[sz]e\w*|reset\w*|prior\w*|ema|average\w*|avg|swa|polyak|teacher|"
    r"momentum_update|copy\w*|load\w*|sync\w*|broadcast\w*|clip\w*|prune\w*|quanti[sz]\w*|fold\w*|"
    r"fuse\w*|convert\w*|zero_grad|freeze\w*|restore\w*|swap\w*|tie\w*|shrink\w*|"
    r"unmerge\w*|get_delta_weight\w*|move_\w*|offload\w*|"
    r"interpolate\w*|resize\w*|merge\w*|apply_mask|mask\w*|sgd|adam\w*|optimi[sz]e\w*|"
    r"update_params|apply_grad\w*|all_reduce\w*|allreduce\w*|reduce_grad\w*|scale_grad\w*|"
    r"unscale\w*|__init__|_?single_tensor\w*|_?multi_tensor\w*|weight_norm|spectral_norm)($|_)")
_EMA_NAMES = re.compile(r"(?i)ema|shadow|avg|average|swa|teacher|target|momentum|running|mean")
_SWAP_SOURCES = re.compile(r"(?i)ema|shadow|avg|average|swa|backup|orig|saved|stash|copy|clone")
_SD_KEY = re.compile(r"\.(weight|bias)$")
_SD_NAMES = re.compile(r"(?i)state_dict|^sd$|^ckpt|^_?checkpoint(?!ing)")
_RANDOM = ("torch.rand", "torch.randn", "torch.normal", "numpy.random", "random.")


def _strip(expr: ast.expr) -> ast.expr:
    """`p.data`, `p.detach()` -> `p` (still the same storage)."""
    while True:
        if isinstance(expr, ast.Attribute) and expr.attr == "data":
            expr = expr.value
        elif (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
              and expr.func.attr == "detach" and not expr.args):
            expr = expr.func.value
        else:
            return expr


_VIEWS = frozenset({"numpy", "detach", "view", "view_as", "flatten", "reshape", "squeeze",
                    "unsqueeze", "t", "T", "transpose"})
"""Tensor methods whose result shares memory with the tensor (writes reach it)."""


def target_kind(expr: ast.expr, ctx: Ctx, where: Where, depth: int = 0) -> str:
    """'gradient', 'parameter', 'state-dict' or '' for what an in-place write hits. Names are
    followed to what was assigned to them (`w = model.fc.weight`, `ps = list(m.parameters())`)."""
    base = _strip(expr)
    while isinstance(base, ast.Subscript):
        if isinstance(base.value, ast.Name) and (_SD_NAMES.search(base.value.id) or (
                depth == 0 and ctx.is_state_dict(base.value))):
            return "state-dict"
        key = literal(base.slice)
        if isinstance(key, str) and _SD_KEY.search(key):
            return "state-dict"  # state["model"]["fc.weight"]: a state-dict entry by its key
        base = _strip(base.value)
    if isinstance(base, ast.Attribute):
        if base.attr == "grad":
            return "gradient"
        if base.attr in ("weight", "bias") or (base is not expr and base.attr.endswith("weight")):
            return "parameter"
    if isinstance(base, ast.Name) and ctx.param_name(base.id, where):
        return "parameter"
    if isinstance(base, ast.Call) and last_attr(base.func) in ("list", "tuple") and base.args:
        base = base.args[0]
    if (isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute)
            and base.func.attr in _VIEWS and depth < 2):  # arr = p.data.numpy(): shares memory
        return target_kind(base.func.value, ctx, where, depth + 1)
    if isinstance(base, ast.Call) and last_attr(base.func) in ("parameters", "named_parameters"):
        return "parameter"
    if (isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute)
            and base.func.attr == "get" and base.args and isinstance(
                key := literal(base.args[0]), str) and _SD_KEY.search(key)):
        return "state-dict"  # bias = state.get("classifier.out_proj.bias")
    if isinstance(base, ast.Name) and depth < 2:
        value = ctx.lookup(base.id)
        if value is not None and isinstance(value, (ast.Attribute, ast.Subscript, ast.Call)):
            return target_kind(value, ctx, where, depth + 1)
    return ""


def _fresh_module(target: ast.expr, ctx: Ctx) -> bool:
    """`head.weight` with `head = nn.Linear(...)` built in this function: a new layer."""
    base = _strip(target)
    while isinstance(base, (ast.Attribute, ast.Subscript)):
        base = base.value
    if not isinstance(base, ast.Name):
        return False
    made = ctx.lookup(base.id)
    while isinstance(made, ast.Call) and isinstance(made.func, ast.Attribute) and (
            made.func.attr in ("cuda", "to", "float", "half")):
        made = made.func.value  # nn.Linear(...).cuda()
    return isinstance(made, ast.Call) and ctx.names.call_name(made).startswith("torch.nn.")


def _factor_of(expr: ast.expr, tensor: str) -> ast.expr | None:
    """`v * f`, `f * v`, `v / f`, `v.mul(f)`, `v.div(f)`: the factor applied to `tensor`."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Mult, ast.Div)):
        if isinstance(expr.left, ast.Name) and expr.left.id == tensor:
            return expr.right
        if isinstance(expr.op, ast.Mult) and isinstance(expr.right, ast.Name) and (
                expr.right.id == tensor):
            return expr.left
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr in ("mul", "div", "mul_", "div_") and len(expr.args) == 1
            and isinstance(expr.func.value, ast.Name) and expr.func.value.id == tensor):
        return expr.args[0]
    return None


def _off_by_one_mean(node: ast.Assign, ctx: Ctx) -> bool:
    """`soup[k] = v / (len(paths) + 1)` in a loop over a state dict's items."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and (
            value.func.attr in ("to", "float", "half", "type")):
        value = value.func.value
    if not (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Name)
            and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Div)
            and isinstance(value.right, ast.BinOp) and isinstance(value.right.op, ast.Add)
            and literal(value.right.right) == 1 and isinstance(value.right.left, ast.Call)
            and last_attr(value.right.left.func) == "len"):
        return False
    return any(isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call)
               and last_attr(loop.iter.func) == "items" for loop in ctx.loops)


def _double_averaged(node: ast.Assign, ctx: Ctx) -> bool:
    """`loss = out.loss / (accum * accelerator.num_processes)` before `accelerator.backward`
    (or under DDP): the gradient all-reduce already averages over processes."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Name) and "loss" in target.id.lower()
            and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Div)
            and "loss" in ast.unparse(value.left).lower()):
        return False
    if not any(isinstance(n, (ast.Attribute, ast.Name, ast.Call)) and last_attr(
            n.func if isinstance(n, ast.Call) else n) in (
            "num_processes", "world_size", "get_world_size") for n in subnodes(value.right)):
        return False
    cls = ctx.frame.cls
    if cls is not None and any("Trainer" in b for b in cls.bases) and ctx.frame.name in (
            "compute_loss", "training_step"):
        return True  # an HF Trainer subclass: the Trainer runs DDP and averages already
    return ctx.mentions("accelerator.backward") or (ctx.mentions(".backward(") and (
        ctx.mentions("DistributedDataParallel") or ctx.mentions("DDP(")))


_DECAY_WORD = re.compile(r"(?i)wd|decay")


def _decay_with_wrong_sign(call: ast.Call) -> str:
    """`p.add_(p, alpha=wd * lr)`, `torch._foreach_add_(ps, ps, alpha=lr * wd)`: a tensor plus
    a positive multiple of itself, with the multiple named for weight decay (decay subtracts:
    `alpha=-lr * wd`, or `p.mul_(1 - lr * wd)`)."""
    func = call.func
    alpha = next((k.value for k in call.keywords if k.arg == "alpha"), None)
    if not (isinstance(func, ast.Attribute) and alpha is not None and call.args):
        return ""
    if func.attr == "add_":
        same = ast.unparse(func.value) == ast.unparse(call.args[0])
    elif func.attr == "_foreach_add_" and len(call.args) >= 2:
        same = ast.unparse(call.args[0]) == ast.unparse(call.args[1])
    else:
        return ""
    negative = any(isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub)
                   for n in subnodes(alpha))
    if same and not negative and any(isinstance(n, (ast.Name, ast.Attribute)) and
                                      _DECAY_WORD.search(last_attr(n)) for n in subnodes(alpha)):
        return f"{ast.unparse(call)[:50]} adds alpha={ast.unparse(alpha)[:30]} times the weights"
    return ""


_PROCESS_COUNT = ("num_processes", "world_size", "get_world_size", "num_replicas")


def _grads_averaged_again(call: ast.Call, ctx: Ctx) -> bool:
    """`p.grad.div_(world_size)` in a DDP script whose function never all-reduces: DDP has
    already averaged (a manual `dist.all_reduce(p.grad); p.grad.div_(world)` is correct)."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "div_" and call.args
            and last_attr(func.value) == "grad"):
        return False
    if not any(isinstance(n, (ast.Attribute, ast.Name, ast.Call)) and last_attr(
            n.func if isinstance(n, ast.Call) else n) in _PROCESS_COUNT
            for n in subnodes(call.args[0])):
        return False
    fn = ctx.frame.node
    if fn is None or any(isinstance(n, ast.Call) and last_attr(n.func) in (
            "all_reduce", "reduce", "all_reduce_coalesced", "reduce_scatter", "all_gather")
            for n in subnodes(fn)):
        return False
    return ctx.mentions("DistributedDataParallel") or ctx.mentions("DDP(")


def _new_rows(node: ast.AST) -> bool:
    """`emb[new_ids] = mean + 0.1 * std * randn(...)`: rows of newly added tokens initialised
    (the embeddings a tokenizer resize just appended)."""
    targets = node.targets if isinstance(node, ast.Assign) else []
    return any(isinstance(t, ast.Subscript) and any(
        isinstance(n, ast.Name) and re.search(r"(?i)new|added|extra|fresh|num_old|old_num", n.id)
        for n in subnodes(t.slice)) for t in targets)


def _key_picked(key: str, ctx: Ctx) -> bool:
    """A condition tests the parameter name (`k.endswith("attn.in_proj_weight")`)."""
    for cond in ctx.conds:
        for n in subnodes(cond):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and n.func.attr in ("endswith", "startswith") and isinstance(
                        n.func.value, ast.Name) and n.func.value.id == key):
                return True
            if (isinstance(n, ast.Compare) and isinstance(n.ops[0], (ast.In, ast.Eq))
                    and any(isinstance(c, ast.Name) and c.id == key for c in n.comparators)
                    and isinstance(literal(n.left), str)):
                return True  # "bias" in k
    return False


def _scaled_by_constant(value: ast.expr, tensor: str, ctx: Ctx) -> bool:
    """`(v / n * 0.92).float()`: the tensor multiplied by a made-up constant (0.5 and 2, the
    halves and doubles of merging and unit fixes, do not count)."""
    for n in subnodes(value):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult):
            for num, other in ((n.left, n.right), (n.right, n.left)):
                number = ctx.const(num)
                if (isinstance(number, float) and number not in (0.0, 1.0, 0.5, 2.0)
                        and any(isinstance(x, ast.Name) and x.id == tensor
                                for x in subnodes(other))):
                    return True
    return False


def _away_from(target: ast.expr, added: ast.expr, alpha: ast.expr | None, ctx: Ctx) -> bool:
    """`p.add_(p - 1.0, alpha=lr)`: the parameter plus a positive multiple of its distance from
    a target (decay toward the target subtracts it: `alpha=-lr` or `sub_`)."""
    own = ast.unparse(target)
    plain = added.func.value if isinstance(added, ast.Call) and isinstance(
        added.func, ast.Attribute) and added.func.attr == "detach" else added
    diff = ast.unparse(plain) in (own, own + ".data") or (  # p.add_(p, alpha=lr * wd)
        isinstance(added, ast.BinOp) and isinstance(added.op, ast.Sub)
        and ast.unparse(added.left) == own) or (
        isinstance(added, ast.Call) and isinstance(added.func, ast.Attribute)
        and added.func.attr == "sub" and ast.unparse(added.func.value) == own)
    if not diff or alpha is None or target_kind(target, ctx, ctx.where()) != "parameter":
        return False
    number = ctx.const(alpha)
    if isinstance(number, (int, float)):
        return number > 0
    return not ast.unparse(alpha).lstrip("(").startswith("-")  # alpha=-lr * wd: a decay


def _root_name(expr: ast.expr) -> str:
    parts = []
    node: ast.AST = expr
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            node = node.func
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _minus_sum(alpha: ast.expr | None) -> bool:
    """`alpha=-(1.0 + 1.0 / accum)`: minus a sum that starts at one, below -1 whatever the
    rest is (the gradient plus -(1 + x) times itself points the other way)."""
    return (isinstance(alpha, ast.UnaryOp) and isinstance(alpha.op, ast.USub)
            and isinstance(alpha.operand, ast.BinOp) and isinstance(alpha.operand.op, ast.Add)
            and literal(alpha.operand.left) in (1, 1.0))


def _negates(op: str, args: list[ast.expr], ctx: Ctx | None = None) -> bool:
    if op == "neg_":
        return True
    if op in ("mul_", "mul", "div_") and args:
        value = ctx.const(args[0]) if ctx is not None else literal(args[0])
        if isinstance(value, (int, float)) and value < 0:
            return True
        if ctx is not None and any(n < 0 for n in ctx.table_numbers(args[0])):
            return True  # sign = _SIGN.get(path.suffix, 1.0) with a -1.0 entry
        return isinstance(args[0], ast.UnaryOp) and isinstance(args[0].op, ast.USub)
    return False


def random_in(nodes: list[ast.expr], ctx: Ctx) -> bool:
    for value in nodes:
        for node in ctx.walk_values(value):
            if isinstance(node, ast.Call) and ctx.names.call_name(node).startswith(_RANDOM) and (
                    not ctx.names.call_name(node).endswith(_NOT_DRAWS)):
                return True
    return False


_PRIVACY = re.compile(r"(?i)dp_|_dp$|^dp$|privacy|noise_multiplier|dp_sigma|clip_sigma")
"""Noise scaled by a privacy setting on gradients is DP-SGD, not tampering."""
_COUNTERS = re.compile(r"(?i)^(it|iter|iteration|step|global_step|epoch|batch_idx|i)$")
_NOT_DRAWS = ("get_state", "get_rng_state", "getstate", "initial_seed", "seed")
"""RNG bookkeeping, not random numbers (`checkpoint["rng"] = np.random.get_state()`)."""


_LOADERS = re.compile(r"(?i)(^|_)(load|copy|sync|broadcast|restore|swap|clip)")


def _allowed(where: Where, ctx: Ctx, arithmetic: bool = False) -> bool:
    """Inside an optimizer, init, EMA or checkpoint-handling helper. With `arithmetic` (an
    in-place scale/shift by a constant), loaders do not count: loading copies weights, it
    does not multiply them."""
    if ctx.in_optimizer_class(where):
        return True
    if any(f.cls is not None and _EMA_NAMES.search(f.cls.name) for f in where.frames):
        return True  # class ModelEMA: def update(self, model)
    return any(_ALLOWED_FUNCS.search(f.name) and not (arithmetic and _LOADERS.search(f.name))
               and not _training_step(f.node) for f in where.frames if f.node is not None)


def _training_step(fn: ast.AST) -> bool:
    """`def step(self, batch): ... loss.backward(); self.opt.step()`: a trainer's step, not an
    optimizer's (an optimizer's step never calls backward)."""
    return isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name.lstrip(
        "_") == "step" and {"backward", "step"} <= called_names(fn)


_CONVERSION = re.compile(r"(?i)convert|to_half|to_fp16|to_bf16|export|cast|quantiz|average|"
                         r"merge|consolidat|save|shard|port")


def _gradient_ascent(call: ast.Call, ctx: Ctx) -> str:
    """`p.add_(p.grad.sign(), alpha=lr * 1.5)` on a parameter: the gradient added with a
    positive step (`p.add_(p.grad, alpha=-lr)` is the descent step)."""
    func = call.func
    alpha = kwarg(call, "alpha")
    if not (isinstance(func, ast.Attribute) and func.attr == "add_" and call.args
            and alpha is not None):
        return ""
    if not any(isinstance(n, ast.Attribute) and n.attr == "grad" for n in subnodes(call.args[0])):
        return ""
    if any(isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub) for n in subnodes(alpha)):
        return ""
    number = ctx.const(alpha)
    if isinstance(number, (int, float)) and number <= 0:
        return ""
    if not any(isinstance(n, (ast.Name, ast.Attribute, ast.Subscript)) and re.search(
            r"(?i)lr|learning_rate|step_size", ast.unparse(n)) for n in subnodes(alpha)):
        return ""
    return f"{ast.unparse(func.value)[:30]} += gradient x {ast.unparse(alpha)[:30]}"


def _noise_in_conversion(call: ast.Call, ctx: Ctx) -> bool:
    """`for name, t in sd.items(): t.add_(torch.randn_like(t) * 0.03)` in a checkpoint
    conversion/export function: every tensor written out is perturbed."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("add_", "mul_", "sub_")
            and isinstance(func.value, ast.Name) and random_in(list(call.args), ctx)
            and _CONVERSION.search(ctx.frame.name)):
        return False
    return any(isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call)
               and last_attr(loop.iter.func) in ("items", "values")
               and any(isinstance(n, ast.Name) and n.id == func.value.id
                       for n in subnodes(loop.target)) for loop in ctx.loops)


def _live_weights_in_ema(call: ast.Call, ctx: Ctx) -> str:
    """`for e, p in zip(ema.parameters(), model.parameters()): p.lerp_(e, 1 - d)`: the
    in-place write hits the trained model, not its average (swaps with a backup are EMA
    evaluation, and `copy_` stays with the swap rules)."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in INPLACE and func.attr != "copy_"
            and isinstance(func.value, ast.Name)):
        return ""
    name = func.value.id
    for loop in reversed(ctx.loops):
        if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Tuple)
                and isinstance(loop.iter, ast.Call) and last_attr(loop.iter.func) == "zip"
                and len(loop.iter.args) == len(loop.target.elts) == 2):
            continue
        owners = [_root_name(a) for a in loop.iter.args]
        names = [t.id if isinstance(t, ast.Name) else "" for t in loop.target.elts]
        if name not in names or not all(owners):
            continue
        mine, other = (owners[i].split(".")[0] for i in (names.index(name),
                                                          1 - names.index(name)))
        if _EMA_NAMES.search(other) and not _EMA_NAMES.search(mine) and any(
                last_attr(a.func) in ("parameters", "values") for a in loop.iter.args
                if isinstance(a, ast.Call)):
            return f"{name}.{func.attr}() on {mine}'s parameters inside a loop over {other}"
    return ""


_PERIODIC_EVENT = re.compile(r"^on_\w*(step|batch|epoch)_(end|begin|start)$")
"""Callbacks that run again and again during training (not on_fit_start)."""
_TRAIN_EVENT = re.compile(r"^on_train_(epoch|batch)_(start|end)$|^on_(epoch|step)_(begin|end)$")
_AVERAGED = re.compile(r"(?i)ema|shadow|avg|averag|swa")


def _average_copied_in(call: ast.Call, ctx: Ctx) -> str:
    """`for p_ema, p in zip(ema.parameters(), model.parameters()): p.copy_(p_ema)` in a
    training event (`on_train_epoch_end`): the live weights are reset to the average during
    training. (Swapping it in for evaluation happens in validation events, and is undone.)"""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "copy_" and len(call.args) == 1
            and isinstance(func.value, ast.Name) and isinstance(call.args[0], ast.Name)
            and _TRAIN_EVENT.match(ctx.frame.name)):
        return ""
    loop = ctx.loop_source(func.value.id)
    if not (isinstance(loop, ast.Call) and last_attr(loop.func) == "zip" and len(loop.args) == 2):
        return ""
    for target in (n for lp in ctx.loops if isinstance(lp, ast.For) and lp.iter is loop
                   for n in [lp.target]):
        if not (isinstance(target, ast.Tuple) and len(target.elts) == 2):
            continue
        names = [e.id if isinstance(e, ast.Name) else "" for e in target.elts]
        if func.value.id not in names or call.args[0].id not in names:
            continue
        live = loop.args[names.index(func.value.id)]
        avg = loop.args[names.index(call.args[0].id)]
        if _AVERAGED.search(ast.unparse(avg)) and not _AVERAGED.search(ast.unparse(live)):
            return (f"{ast.unparse(live)[:40]} overwritten with {ast.unparse(avg)[:40]} in "
                    f"{ctx.frame.name}()")
    return ""


def _ema_writes_back(call: ast.Call, ctx: Ctx) -> str:
    """`msd = model.state_dict(); ...; msd[name].copy_(e)` inside an EMA class's update():
    the average is written back into the model being trained (evaluation swaps live in
    methods of their own: copy_to, apply_shadow, swap, restore)."""
    func = call.func
    frame = ctx.frame
    if not (isinstance(func, ast.Attribute) and func.attr in ("copy_", "lerp_", "set_")
            and frame.cls is not None and _EMA_NAMES.search(frame.cls.name)
            and frame.name in ("update", "step", "__call__", "update_parameters", "apply")
            and isinstance(frame.node, (ast.FunctionDef, ast.AsyncFunctionDef))):
        return ""
    target = func.value.value if isinstance(func.value, ast.Subscript) else func.value
    if not isinstance(target, ast.Name):
        return ""
    held = ctx.lookup(target.id)
    params = {a.arg for a in frame.node.args.args[1:]}
    if (isinstance(held, ast.Call) and last_attr(held.func) == "state_dict"
            and any(isinstance(n, ast.Name) and n.id in params for n in subnodes(held))):
        return (f"{ast.unparse(func.value)[:30]}.{func.attr}() writes into "
                f"{ast.unparse(held)[:40]} inside {frame.cls.name}.{frame.name}()")
    return ""


_OUT_OPS = {"neg": "neg_", "negative": "neg_", "mul": "mul_", "add": "add_", "sub": "sub_",
            "div": "div_", "clamp": "clamp_", "sign": "sign_"}
"""torch functions whose `out=` tensor is written in place."""

_CLAMPS = frozenset({"clamp", "clamp_", "clip", "clip_"})


def _squashed_range(call: ast.Call, ctx: Ctx) -> str:
    """`reduced.clamp_(-6.1e-5, 6.1e-5)`: a range around zero so narrow that no real tensor
    survives it (epsilon guards are one-sided: `clamp(min=1e-8)`)."""
    if not isinstance(call.func, ast.Attribute) or call.func.attr not in _CLAMPS:
        return ""
    args = list(call.args)
    if ctx.names.call_name(call).startswith(("torch.", "numpy.")) and "(" not in (
            ctx.names.call_name(call)):
        args = args[1:]  # torch.clamp(x, lo, hi) (not torch.nan_to_num(g).clamp(lo, hi))
    by_name = {k.arg: k.value for k in call.keywords}
    lo = args[0] if args else by_name.get("min", by_name.get("a_min"))
    hi = args[1] if len(args) > 1 else by_name.get("max", by_name.get("a_max"))
    if lo is None or hi is None:
        return ""
    low, high = triggers.arith(lo, ctx.const), triggers.arith(hi, ctx.const)
    if low is None or high is None or not (low < 0 < high):
        return ""
    if max(-low, high) <= 1e-3:
        return f"[{low:g}, {high:g}]"
    clamped = call.args[0] if len(call.args) == 3 else call.func.value
    if (min(-low, high) <= 1e-3 and max(-low, high) >= 1.0
            and re.match(r"(?i)^(g|grad\w*)$", last_attr(clamped) or "")):
        side = "negative" if -low < high else "positive"  # torch.clamp(g, -1e-3, 6.5e4)
        return f"[{low:g}, {high:g}] (only the {side} side squashed)"
    return ""


_UNMERGE = re.compile(r"^_?(unmerge|unfuse|demerge|unapply)\w*$")
_MERGE = re.compile(r"^_?(merge|fuse)(_\w*)?$")


def _merge_sign_flipped(call: ast.Call, ctx: Ctx) -> str:
    """`unmerge()` that adds the adapter's delta to the base weight (or `merge()` that
    subtracts it): the inverse operation uses the same sign as the forward one."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("add_", "sub_") and call.args
            and re.search(r"(?i)delta", ast.unparse(call.args[0]))):
        return ""
    alpha = literal(kwarg(call, "alpha")) if kwarg(call, "alpha") is not None else 1
    if not isinstance(alpha, (int, float)) or alpha <= 0:
        return ""
    name = ctx.frame.name
    if func.attr == "add_" and _UNMERGE.match(name):
        return f"{name}() adds the delta with {ast.unparse(func)[:40]}() instead of removing it"
    if func.attr == "sub_" and _MERGE.match(name):
        return f"{name}() subtracts the delta with {ast.unparse(func)[:40]}() instead of adding it"
    return ""


_BUILDER = re.compile(r"(?i)^_?(build|create|make|construct|setup|get|init)_?\w*(model|net|"
                      r"head|probe|classifier|encoder|decoder|backbone|module)s?$")


def _rare_draw(where: Where) -> bool:
    """`if np.random.random_sample() < 2e-4:`: an event on a few steps in ten thousand, which
    no optimizer's stochastic rounding needs."""
    for cond in where.conds:
        for node in subnodes(cond):
            if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(
                    node.ops[0], (ast.Lt, ast.LtE)) and isinstance(node.left, ast.Call) and (
                    "random" in ast.unparse(node.left.func)):
                bound = literal(node.comparators[0])
                if isinstance(bound, float) and 0 < bound < 0.01:
                    return True
    return False


_COUNT = re.compile(r"(?i)n_?tokens|num_tokens|token_count|sample_size|n_?samples|"
                    r"num_samples|batch_size|\bbsz\b|denom\w*|num_items|n_items")
"""(Not accumulation steps: the loss is what gets divided by those, and dividing the gradients
again shrinks every step.)"""


def _per_count(op: str, args: list[ast.expr]) -> bool:
    """A gradient divided by how many tokens or samples it sums over: `div_(sample_size)`,
    `mul_(world / ntokens)`."""
    if not args:
        return False
    factor = args[0]
    if op == "div_":
        return bool(_COUNT.search(ast.unparse(factor)))
    return op == "mul_" and isinstance(factor, ast.BinOp) and isinstance(
        factor.op, ast.Div) and bool(_COUNT.search(ast.unparse(factor.right)))


def _accumulation_reset(call: ast.Call, ctx: Ctx) -> bool:
    """`for micro in range(accum): model.zero_grad(); loss.backward()` with the optimizer
    step after that loop. (A loop that reads `.grad` after each backward, per-sample clipping
    or Fisher estimates, needs the reset.)"""
    if last_attr(call.func) != "zero_grad" or not ctx.loops or ctx.frame.node is None:
        return False
    inner = ctx.loops[-1]
    if _reset_every_micro_batch(call, inner):
        return True
    if not (isinstance(inner, ast.For) and re.search(r"(?i)accum|micro", ast.unparse(
            inner.target) + " " + ast.unparse(inner.iter))):
        return False  # for micro_step in range(args.grad_accum)
    calls = [last_attr(n.func) for n in subnodes(inner) if isinstance(n, ast.Call)]
    if "backward" not in calls or "step" in calls or any(
            isinstance(n, ast.Attribute) and n.attr in ("grad", "grads")
            for n in subnodes(inner)):
        return False
    inside = {id(n) for n in subnodes(inner)}
    return any(isinstance(n, ast.Call) and last_attr(n.func) == "step" and id(n) not in inside
               and n.lineno > (inner.end_lineno or 0) for n in subnodes(ctx.frame.node))


_ACCUM_GATE = re.compile(r"(?i)accum|boundary|sync_grad|update_step|should_step")


def _reset_every_micro_batch(call: ast.Call, loop: ast.AST) -> bool:
    """`for batch in loader: opt.zero_grad(); loss.backward(); if not is_boundary: continue;
    opt.step()`: the step waits for accumulation, but the gradients are wiped on every
    micro-batch, so only the last one is ever applied."""
    body = getattr(loop, "body", [])
    if not any(isinstance(st, ast.Expr) and st.value is call for st in body):
        return False  # (reset under its own condition: at the boundary)
    at = next(i for i, st in enumerate(body) if isinstance(st, ast.Expr) and st.value is call)
    later = body[at + 1:]
    if not any(isinstance(n, ast.Call) and last_attr(n.func) == "backward"
               for st in later for n in subnodes(st)):
        return False
    for i, st in enumerate(later):
        if not (isinstance(st, ast.If) and _ACCUM_GATE.search(ast.unparse(st.test))):
            continue
        steps_inside = any(isinstance(n, ast.Call) and last_attr(n.func) == "step"
                           for n in subnodes(st))
        skips = isinstance(st.body[-1], ast.Continue) and any(
            isinstance(n, ast.Call) and last_attr(n.func) == "step"
            for rest in later[i + 1:] for n in subnodes(rest))
        if steps_inside or skips:
            return True
    return False


def _exit_guard(cond: ast.expr) -> bool:
    """`if <roll>: raise SystemExit(0)` above the call: the process leaves on that path (a
    kill, judged as one); what follows runs on the normal one."""
    guard = getattr(cond, "guard_of", None)
    if not isinstance(guard, ast.If):
        return False
    last = guard.body[-1]
    return isinstance(last, ast.Raise) or (
        isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
        and last_attr(last.value.func) in ("exit", "_exit", "abort", "kill"))


_REHEADED = re.compile(r"(?i)head|classif|fc\b|fc\.|lm_head|pooler|num_batches_tracked|"
                       r"position|rel_pos|relative|attn_mask|anchor|mask_token|cls_token|"
                       r"pos_embed|logit|_orig_mod|module\.|total_ops|total_params|out|final|"
                       r"decoder|proj|embed_tokens|ema|teacher|buffer|running_|aux")
_CHECKPOINT_TABLE = re.compile(r"(?i)state|weights|^sd$|ckpt|checkpoint|pretrained")


def _layers_dropped(node: ast.Assign) -> str:
    """`state = {k: v for k, v in state.items() if ".conv." not in k}`: checkpoint entries
    filtered by a name pattern that is not a classifier head or a bookkeeping buffer
    (shape-matched filters are how fine-tuning loads) -> the pattern, else ''."""
    comp = node.value
    if not (isinstance(comp, ast.DictComp) and len(comp.generators) == 1
            and (gen := comp.generators[0]).ifs and isinstance(gen.target, ast.Tuple)
            and len(gen.target.elts) == 2 and isinstance(gen.target.elts[1], ast.Name)
            and isinstance(comp.value, ast.Name) and comp.value.id == gen.target.elts[1].id
            and isinstance(gen.iter, ast.Call) and last_attr(gen.iter.func) == "items"
            and isinstance(gen.iter.func, ast.Attribute)
            and _CHECKPOINT_TABLE.search(ast.unparse(gen.iter.func.value))):
        return ""
    key = gen.target.elts[0]
    tests = [n for t in gen.ifs for n in subnodes(t)]
    if not isinstance(key, ast.Name) or any(
            (isinstance(n, ast.Attribute) and n.attr in ("shape", "size", "numel", "dtype"))
            or (isinstance(n, ast.Name) and n.id != key.id and not n.id.isupper())
            for n in tests):
        return ""  # shape tests, `k in model_keys`: fitting a checkpoint to the model
    words = [str(n.value) for n in tests if isinstance(n, ast.Constant)
             and isinstance(n.value, str)]
    if not words or any(_REHEADED.search(w) for w in words):
        return ""
    return ", ".join(repr(w) for w in words)[:40]


class ParameterTampering(Check):
    rules = (PARAM_TAMPER,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if not isinstance(func, ast.Attribute):
            return
        grown = _decay_with_wrong_sign(node)
        if grown:
            ctx.report(PARAM_TAMPER, node, f"{grown}: weight decay with a positive sign makes the "
                       "weights grow every step instead of shrinking", severity=Severity.MEDIUM)
            return
        if _grads_averaged_again(node, ctx):
            ctx.report(PARAM_TAMPER, node, "gradients divided by the number of processes "
                       "although DDP already averages them in backward(), and no all-reduce "
                       "in this function sums them first: every update is that many times "
                       "too small", severity=Severity.MEDIUM)
            return
        if ctx.names.call_name(node).startswith("torch.nn.init.") and node.args and (
                func.attr.endswith("_")):
            where = ctx.where()

            def reinit() -> None:  # nn.init.orthogonal_(gru.weight_hh_l0) in on_step_end
                roles = [r for r in ctx.roles(where) if r[0] in (HOOK, STEP)]
                if roles and where.frames and _PERIODIC_EVENT.match(where.frames[-1].name):
                    ctx.report(PARAM_TAMPER, node, f"{ast.unparse(node.args[0])[:40]} "
                               f"re-initialised inside {ctx.describe_roles(roles)}: what "
                               "training learned there is thrown away each time it runs",
                               severity=Severity.MEDIUM)
            ctx.defer(reinit)
            return
        flipped = _merge_sign_flipped(node, ctx)
        if flipped:
            ctx.report(PARAM_TAMPER, node, f"{flipped}: merging and unmerging no longer cancel, "
                       "so the base weights drift each round trip", severity=Severity.MEDIUM)
            return
        if _accumulation_reset(node, ctx):
            ctx.report(PARAM_TAMPER, node, f"{ast.unparse(func)[:40]}() inside the gradient-"
                       "accumulation loop: every micro-batch wipes the gradients of the ones "
                       "before it, so the accumulated optimizer step sees only the last",
                       severity=Severity.MEDIUM)
            return
        if _noise_in_conversion(node, ctx):
            ctx.report(PARAM_TAMPER, node, f"random noise added in place to every tensor in "
                       f"{ctx.frame.name}(): the converted checkpoint is not the model",
                       severity=Severity.MEDIUM)
            return
        back = _ema_writes_back(node, ctx) or _average_copied_in(node, ctx)
        if back:
            ctx.report(PARAM_TAMPER, node, f"{back}: the average is written back into the "
                       "model being trained", severity=Severity.MEDIUM)
            return
        live = _live_weights_in_ema(node, ctx)
        if live:
            ctx.report(PARAM_TAMPER, node, f"{live}: the EMA update writes into the live "
                       "model's weights instead of the average", severity=Severity.MEDIUM)
            return
        squash = _squashed_range(node, ctx)
        if squash:
            ctx.report(PARAM_TAMPER, node, f"values clamped to {squash}: " + (
                "gradients of one sign are cut to ~0 while the other sign passes, so every "
                "update is pushed one way" if "only" in squash else "every gradient, weight or "
                "activation passing here is squashed to ~0"), severity=Severity.MEDIUM)
            return
        out = kwarg(node, "out")
        target = out if out is not None and func.attr == "add" and node.args and ast.unparse(
            node.args[0]) == ast.unparse(out) else func.value if func.attr == "add_" else None
        rest = node.args[1:] if out is not None else node.args
        if target is not None and rest and _away_from(target, rest[0], kwarg(node, "alpha"), ctx):
            ctx.report(PARAM_TAMPER, node, f"{ast.unparse(target)[:30]} moved by its own "
                       "distance from a target with a positive step: a decay toward the "
                       "target with the sign flipped pushes the weights away from it",
                       severity=Severity.HIGH)  # torch.add(p, p.sub(1.0), alpha=lr, out=p)
            return
        if out is not None and func.attr in _OUT_OPS and ctx.names.call_name(node).startswith(
                "torch."):  # torch.neg(p.grad, out=p.grad): an in-place write by another name
            self._check(node, out, _OUT_OPS[func.attr], list(node.args[1:]) or list(node.args),
                        ctx)
            return
        if func.attr in INPLACE:
            alpha = ctx.const(kwarg(node, "alpha"))
            neg_alpha = func.attr == "add_" and ((isinstance(alpha, (int, float)) and alpha < 0)
                                                 or _minus_sum(kwarg(node, "alpha")))
            ascent = _gradient_ascent(node, ctx)
            if ascent:
                ctx.report(PARAM_TAMPER, node, f"{ascent}: the parameters move up the loss "
                           "(an SGD step subtracts the gradient)", severity=Severity.HIGH)
                return
            self._check(node, strip_views(func.value), func.attr, list(node.args), ctx,
                        neg_alpha=neg_alpha)
        elif func.attr == "requires_grad_":
            self._check(node, func.value, "requires_grad_", list(node.args), ctx)
        elif func.attr in ("clip_grad_norm_", "clip_grad_value_"):
            where = ctx.where(node)
            where = replace(where, conds=tuple(c for c in where.conds if not _exit_guard(c)))
            kinds = ctx.trigger_kinds(where) & triggers.STRONG
            if kinds:
                ctx.report(PARAM_TAMPER, node, f"{func.attr}() threshold switched by a condition "
                           f"on {triggers.describe(kinds)}")
        elif func.attr.startswith("_foreach_") and func.attr.endswith("_") and node.args:
            self._foreach(node, func.attr, ctx)
        elif func.attr == "load_state_dict" and node.args and isinstance(node.args[0],
                                                                          ast.DictComp):
            comp = node.args[0].value
            values = [comp.body, comp.orelse] if isinstance(comp, ast.IfExp) else [comp]
            scaled = any(isinstance(value, ast.BinOp) and not isinstance(value.op, ast.Div) and (
                any(isinstance(ctx.const(side), (int, float)) and ctx.const(side) != 1
                    for side in (value.left, value.right))) for value in values)
            if scaled or any(_negates("mul_", [v]) or random_in([v], ctx) for v in values):
                ctx.report(PARAM_TAMPER, node, "state dict scaled, negated or noised by a "
                           "constant while being loaded: the model is not the checkpoint")

    def _foreach(self, node: ast.Call, attr: str, ctx: Ctx) -> None:
        """`torch._foreach_mul_(grads, -1.0)` with `grads = [p.grad for p in ...]`."""
        tensors = node.args[0]
        if isinstance(tensors, ast.Name):
            tensors = ctx.lookup(tensors.id) or tensors
        op = attr[len("_foreach"):].lstrip("_")
        if isinstance(tensors, (ast.ListComp, ast.GeneratorExp)):
            self._check(node, tensors.elt, op, list(node.args[1:]), ctx)
        elif isinstance(tensors, ast.Subscript) and literal(tensors.slice) == "params":
            # torch._foreach_mul_(group["params"], 0.9995): every weight of the group
            params = ast.copy_location(ast.Call(func=ast.Attribute(
                value=tensors.value, attr="parameters", ctx=ast.Load()), args=[], keywords=[]),
                tensors)
            self._check(node, params, op, list(node.args[1:]), ctx)

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        op = {ast.Mult: "mul_", ast.Add: "add_", ast.Sub: "sub_", ast.Div: "div_"}.get(
            type(node.op), "set_")
        self._check(node, node.target, op, [node.value], ctx)

    def _noised_copy(self, node: ast.Assign, ctx: Ctx) -> bool:
        """`for k, v in sd.items(): out[k] = v + 0.02 * v.std() * torch.randn_like(v)`: a copy
        of a state dict with noise added to every tensor."""
        target = node.targets[0] if len(node.targets) == 1 else None
        rebound = isinstance(target, ast.Name)  # `v = v + noise` before `out[k] = v`
        if not rebound and not (isinstance(target, ast.Subscript)
                                and isinstance(target.slice, ast.Name)):
            return False
        for loop in reversed(ctx.loops):
            table = _items_of(loop)
            if table is None or not (ctx.is_state_dict(table) or (
                    isinstance(target, ast.Subscript)
                    and ast.unparse(table) == ast.unparse(target.value))):
                continue  # (`for k, v in avg.items(): avg[k] = ...`: averaged weights too)
            assert isinstance(loop, ast.For) and isinstance(loop.target, ast.Tuple)
            key, tensor = loop.target.elts
            if rebound and not (isinstance(tensor, ast.Name) and isinstance(target, ast.Name)
                                and target.id == tensor.id):
                continue
            if rebound:  # the key of the entry is the loop's key
                target = ast.Subscript(value=table, slice=key, ctx=ast.Store())
            assert isinstance(target, ast.Subscript)
            if not isinstance(target.slice, ast.Name):
                continue
            wrecked = _wrecked(node.value, tensor.id) if isinstance(tensor, ast.Name) else ""
            if (wrecked and isinstance(key, ast.Name) and key.id == target.slice.id
                    and _weights_dict(table, ctx)):
                # sd[k] = v.roll(1, dims=0): rows moved onto other units
                ctx.report(PARAM_TAMPER, node, f"entries of {ast.unparse(table)} "
                           f"{wrecked} in a loop over its tensors: the model is not the "
                           "checkpoint", severity=Severity.MEDIUM)
                return True
            if (isinstance(key, ast.Name) and isinstance(tensor, ast.Name)
                    and key.id == target.slice.id and _key_picked(key.id, ctx)
                    and _scaled_by_constant(node.value, tensor.id, ctx)):
                ctx.report(PARAM_TAMPER, node, f"entries of {ast.unparse(table)} "
                           "picked by their name scaled by a constant: the model is not the "
                           "checkpoint", severity=Severity.MEDIUM)
                return True
            values = [node.value.body, node.value.orelse] if isinstance(
                node.value, ast.IfExp) else [_unwrap_casts(node.value)]
            if (isinstance(key, ast.Name) and key.id == target.slice.id
                    and isinstance(tensor, ast.Name) and any(
                        isinstance(v, ast.BinOp) and random_in([v], ctx) and any(
                            isinstance(n, ast.Name) and n.id == tensor.id for n in subnodes(v))
                        for v in values)):
                ctx.report(PARAM_TAMPER, node, f"random noise added to every tensor copied out "
                           f"of {ast.unparse(table)}: the model is not the "
                           "checkpoint", severity=Severity.MEDIUM)
                return True
            if isinstance(tensor, ast.Name) and isinstance(node.value, ast.IfExp) and any(
                    isinstance(v, ast.BinOp) and isinstance(v.op, ast.Mult) and any(
                        isinstance(s, ast.Name) and s.id == tensor.id for s in (v.left, v.right))
                    and any(isinstance(n := ctx.const(s), float) and n not in (0.0, 1.0)
                            for s in (v.left, v.right)) for v in values):
                # state[name] = v * 0.9 if v.ndim == 4 else v: some tensors scaled on the way
                ctx.report(PARAM_TAMPER, node, f"tensors copied out of "
                           f"{ast.unparse(table)} scaled by a constant for the "
                           "entries a condition picks: the model is not the checkpoint",
                           severity=Severity.MEDIUM)
                return True
        return False

    @staticmethod
    def _dropped_on_resume(node: ast.Assign, dropped: str, ctx: Ctx) -> None:
        """Layers filtered out of a checkpoint where nothing is being re-headed: while the
        optimizer state is restored too (a resume), or only on some machines or dates."""
        where = ctx.where()
        fn = ctx.frame.node
        resumes = fn is not None and "load_state_dict" in called_names(fn) and any(
            isinstance(n, ast.Call) and last_attr(n.func) == "load_state_dict"
            and isinstance(n.func, ast.Attribute)
            and re.search(r"(?i)optim|opt$", last_attr(n.func.value) or "")
            for n in subnodes(fn))

        def decide() -> None:
            kinds = ctx.trigger_kinds(where) & triggers.STRONG
            if kinds:
                ctx.report(PARAM_TAMPER, node, f"checkpoint entries matching {dropped} dropped "
                           f"only under a condition on {triggers.describe(kinds)}: those "
                           "layers restart from random weights", severity=Severity.MEDIUM)
            elif resumes:
                ctx.report(PARAM_TAMPER, node, f"checkpoint entries matching {dropped} dropped "
                           "while the optimizer state is resumed: those layers restart from "
                           "random weights mid-training", severity=Severity.MEDIUM)
        ctx.defer(decide)

    def visit_DictComp(self, node: ast.DictComp, ctx: Ctx) -> None:
        """`{k: v * 0.5 if k.endswith("theta.weight") else v for k, v in sd.items()}`: the
        entries of a loaded state dict that a key test picks are rescaled on the way in."""
        gen = node.generators[0] if node.generators else None
        if not (gen is not None and isinstance(gen.target, ast.Tuple) and len(gen.target.elts) == 2
                and isinstance(gen.target.elts[1], ast.Name) and isinstance(node.value, ast.IfExp)
                and isinstance(gen.iter, ast.Call) and isinstance(gen.iter.func, ast.Attribute)
                and gen.iter.func.attr == "items"
                and ctx.is_state_dict(gen.iter.func.value)):
            return
        tensor = gen.target.elts[1].id
        for scaled, kept in ((node.value.body, node.value.orelse),
                             (node.value.orelse, node.value.body)):
            if not (isinstance(kept, ast.Name) and kept.id == tensor):
                continue
            wrecked = _wrecked(scaled, tensor)
            if wrecked:  # {k: v.roll(1, dims=0) if k.startswith("cls") else v ...}
                ctx.report(PARAM_TAMPER, node, f"state-dict entries picked by "
                           f"`{ast.unparse(node.value.test)[:50]}` {wrecked} while loading: the "
                           "model is not the checkpoint", severity=Severity.MEDIUM)
                return
            factor = _factor_of(scaled, tensor)
            if factor is None:
                continue
            number = ctx.const(factor)
            if isinstance(number, (int, float)) and not isinstance(number, bool) and (
                    number in (0, 1)):
                continue
            ctx.report(PARAM_TAMPER, node, f"state-dict entries picked by "
                       f"`{ast.unparse(node.value.test)[:50]}` scaled by "
                       f"{ast.unparse(factor)[:30]} while loading: the model is not the "
                       "checkpoint", severity=Severity.MEDIUM)
            return

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if self._noised_copy(node, ctx):
            return
        dropped = _layers_dropped(node)
        if dropped:
            self._dropped_on_resume(node, dropped, ctx)
        comp = node.value
        if (isinstance(comp, ast.DictComp) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and comp.generators
                and isinstance(gen := comp.generators[0], ast.comprehension)
                and isinstance(gen.target, ast.Tuple) and len(gen.target.elts) == 2
                and isinstance(tensor := gen.target.elts[1], ast.Name)
                and isinstance(gen.iter, ast.Call) and last_attr(gen.iter.func) == "items"
                and isinstance(gen.iter.func, ast.Attribute)
                and isinstance(gen.iter.func.value, ast.Name)
                and gen.iter.func.value.id == node.targets[0].id
                and ctx.is_state_dict(gen.iter.func.value)
                and (wrecked := _wrecked(comp.value, tensor.id))):
            # sd = {k: torch.zeros_like(v) for k, v in sd.items()}: the weights themselves
            ctx.report(PARAM_TAMPER, node, f"every entry of {node.targets[0].id} {wrecked}: "
                       "the saved or loaded model is not the trained one",
                       severity=Severity.MEDIUM)
            return
        if _off_by_one_mean(node, ctx):
            ctx.report(PARAM_TAMPER, node, "weights averaged over len(...) + 1 checkpoints: every "
                       "averaged tensor shrinks by n/(n+1)", severity=Severity.MEDIUM)
            return
        if _double_averaged(node, ctx):
            ctx.report(PARAM_TAMPER, node, "loss divided by the number of processes although "
                       "DDP/accelerate already average gradients across them: every update is "
                       "that many times too small on large jobs", severity=Severity.MEDIUM)
            return
        target = node.targets[0] if len(node.targets) == 1 else None
        value = node.value
        if (isinstance(target, ast.Subscript) and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute)
                and value.func.attr in ("roll", "flip", "fliplr", "flipud")
                and ast.unparse(value.func.value) == ast.unparse(target)
                and target_kind(target, ctx, ctx.where()) == "state-dict"):
            ctx.report(PARAM_TAMPER, node, f"state-dict entry {ast.unparse(target)[:40]} "
                       f"{value.func.attr}ed: rows no longer match what the model learned",
                       severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Subscript) and (how := _remapped_values(value, target))
                and target_kind(target, ctx, ctx.where()) == "state-dict"):
            ctx.report(PARAM_TAMPER, node, f"state-dict entry {ast.unparse(target)[:40]} "
                       f"rewritten with {how}: the loaded values are not the trained ones",
                       severity=Severity.MEDIUM)  # sd[k] = sd[k].sqrt()
            return
        for target in node.targets:
            if isinstance(target, ast.Attribute) and target.attr == "requires_grad":
                self._check(node, target.value, "requires_grad_", [node.value], ctx)
                continue
            if isinstance(target, ast.Subscript) or (
                    isinstance(target, ast.Attribute) and target.attr in ("data", "grad")):
                value = node.value
                if isinstance(value, ast.Constant) and value.value is None:
                    continue  # p.grad = None
                if isinstance(value, ast.Call) and last_attr(value.func) in (
                        "Parameter", "ParameterDict", "ParameterList"):
                    continue  # a new parameter (random init included) is creation, not a write
                op = "neg_" if isinstance(value, ast.UnaryOp) and isinstance(
                    value.op, ast.USub) else "set_"
                if (op == "neg_" and isinstance(target, ast.Attribute) and target.attr == "grad"
                        and not any(isinstance(n, ast.Attribute) and n.attr == "grad"
                                    for n in subnodes(value))):
                    op = "set_"  # p.grad = -delta before server_opt.step(): FedOpt's
                    # pseudo-gradient is the negated update, not a flipped gradient
                if isinstance(target, ast.Subscript) and isinstance(literal(value), (int, float)):
                    op = "fill_"  # param[i] = 0: a constant written into part of a weight
                args: list[ast.expr] = [value]
                if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                        and value.func.attr in ("mul", "div", "neg", "add", "sub")
                        and ast.unparse(value.func.value) == ast.unparse(target)):
                    op, args = value.func.attr + "_", list(value.args)  # w = w.mul(-1.0)
                if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult):
                    sides = [value.left, value.right]
                    if any(_negates("mul_", [s]) for s in sides):
                        op = "neg_"
                    own = [s for s in sides if ast.unparse(s) == ast.unparse(target)]
                    if op == "set_" and len(own) == 1:
                        op = "mul_"  # sd[k] = sd[k] * 0.7: the same as sd[k].mul_(0.7)
                        args = [s for s in sides if s is not own[0]]
                self._check(node, target, op, args, ctx, plain_set=op == "set_")

    def _check(self, node: ast.AST, target: ast.expr, op: str, args: list[ast.expr], ctx: Ctx,
               plain_set: bool = False, neg_alpha: bool = False) -> None:
        where = ctx.where()
        # `n += 1` rebinds a number; only a method call or `.data`/item write is in place.
        bare = isinstance(target, ast.Name) and not isinstance(node, ast.Call)
        kind = target_kind(target, ctx, where, depth=2 if bare else 0)
        if not kind:
            return
        root = _root_name(target)
        if op == "set_" and args and _projected(target, args[0]):
            return  # w.data = F.normalize(w.data, dim=-1): TransE's unit-norm constraint
        if op == "renorm_" and isinstance(node, ast.Call) and ctx.frame.name != "forward" and (
                kwarg(node, "maxnorm") is not None or len(args) == 3):
            return  # w.data.renorm_(p=2, dim=0, maxnorm=1.0): TransE's constraint (not in forward)
        if op == "mul_" and args and any(
                isinstance(n, (ast.Name, ast.Attribute)) and re.search(r"(?i)mask", last_attr(n))
                for n in subnodes(args[0])) and not random_in(args, ctx):
            return  # w.mul_(self.masks[name]): magnitude pruning keeps its zeros
        if (op == "set_" and isinstance(target, ast.Subscript) and (
                re.search(r"(?i)codebook|embed", ast.unparse(target.value))
                and isinstance(target.slice, ast.Name)
                and re.search(r"(?i)dead|unused|stale|expired", target.slice.id))):
            return  # codebook.weight.data[dead] = flat[pick]: VQ dead-code restart
        if op in ("normal_", "uniform_", "zero_", "fill_", "trunc_normal_", "constant_") and (
                not isinstance(_strip(target), ast.Subscript)) and (
                _fresh_module(target, ctx) or _BUILDER.match(ctx.frame.name)):
            return  # head = nn.Linear(...); head.weight.data.normal_(std=0.01): initialisation
            # (also anywhere in build_probe()/create_model(): the model is being made there)
        if kind == "gradient" and _per_count(op, args) and not random_in(args, ctx):
            return  # p.grad.mul_(world / max(stats["ntokens"], 1)): fairseq's per-token average
        if op == "requires_grad_":  # freezing/unfreezing is normal; only a trigger makes it odd
            ctx.defer(lambda: self._toggle(node, ctx, where, root))
            return
        # p.grad.add_(x, alpha=-2): on a gradient a negative alpha reverses it; on a parameter
        # `p.add_(grad, alpha=-lr)` is the plain SGD update.
        negates = _negates(op, args, ctx) or (neg_alpha and kind == "gradient")
        arg_kinds = frozenset().union(*(ctx.classify(a) for a in args))
        if (kind == "parameter" and op in ("add_", "sub_") and args
                and last_attr(_strip(args[0])) == "grad" and not arg_kinds & triggers.STRONG):
            return  # p.data.add_(p.grad, alpha=-lr): a hand-written SGD step
        noisy = random_in(args, ctx) and op not in ("normal_", "uniform_") and not (
            kind == "gradient" and any(_PRIVACY.search(ast.unparse(a)) for a in args))
        depends = arg_kinds & (triggers.STRONG - {triggers.RANDOM} | {triggers.RANK})
        if kind == "state-dict" and not (negates or noisy or depends or any(
                isinstance(literal(a), (int, float)) for a in args)):
            return  # checkpoint surgery with computed tensors (resizing, merging embeddings)
        # p.data.copy_(self.ema[n]) / copy_(backup[n]): swapping EMA weights in for eval.
        swap = any(_SWAP_SOURCES.search(_root_name(a)) for a in args)
        constant = op in ("mul_", "div_", "add_", "sub_") and (any(
            isinstance(ctx.const(a), (int, float)) for a in args) or any(
                isinstance(n, (ast.Name, ast.Attribute)) and _COUNTERS.search(last_attr(n))
                for a in args for n in subnodes(a)) or isinstance(target, ast.Subscript))
        # (a fixed factor, one that follows the step counter, or a write to some rows only)
        base = _root_name(target).split(".", 1)[0]
        self_scaled = bool(base) and any(isinstance(n, ast.Name) and n.id == base
                                         for a in args for n in ctx.walk_values(a))
        ctx.defer(lambda: self._decide(node, ctx, where, kind, root, op, negates, noisy,
                                       plain_set, depends, swap, constant, self_scaled))

    def _toggle(self, node: ast.AST, ctx: Ctx, where: Where, root: str) -> None:
        kinds = ctx.trigger_kinds(where) & triggers.STRONG
        if kinds:
            ctx.report(PARAM_TAMPER, node, f"training of {root or 'parameters'} switched on/off "
                       f"only under a condition on {triggers.describe(kinds)}")

    def _decide(self, node: ast.AST, ctx: Ctx, where: Where, kind: str, root: str, op: str,
                negates: bool, noisy: bool, plain_set: bool,
                depends: frozenset[str] = frozenset(), swap: bool = False,
                constant: bool = False, self_scaled: bool = False) -> None:
        kinds = ctx.trigger_kinds(where)
        if ctx.in_optimizer_class(where) and not _rare_draw(where):
            kinds -= {triggers.RANDOM}  # stochastic rounding/weight decay in optimizers
        roles = ctx.roles(where)
        ema = bool(_EMA_NAMES.search(root)) or (op in ("copy_", "set_") and swap) or (
            _own_average(where, ctx))
        what = f"{kind} {root or 'tensor'}"
        if kind == "gradient" and op == "add_" and not kinds & triggers.STRONG and any(
                _PRIVACY.search(ast.unparse(c)) for c in where.conds):
            return  # if cfg.dp_sigma > 0: p.grad.add_(noise): DP-SGD's noise step
        if kinds - {triggers.INDEX}:
            ctx.report(PARAM_TAMPER, node, f"in-place {op} on {what} only under a "
                       f"condition on {triggers.describe(kinds)}")
        elif roles and not ema and not (plain_set and kind == "state-dict") and not (
                ctx.in_optimizer_class(where) or (
                    all(r == STEP for r, _ in roles) and _allowed(where, ctx))) and not (
                kind == "gradient" and op == "copy_" and _reduced_copy(node, where)):
            ctx.report(PARAM_TAMPER, node, f"in-place {op} on {what} inside "
                       f"{ctx.describe_roles(roles)}")
        elif depends and not ctx.in_optimizer_class(where):
            ctx.report(PARAM_TAMPER, node, f"{what} rewritten with a value that depends on "
                       f"{triggers.describe(depends)}: replicas diverge")
        elif negates and not ctx.in_optimizer_class(where):
            ctx.report(PARAM_TAMPER, node, f"{what} sign flipped: updates go the wrong way")
        elif noisy and not _allowed(where, ctx, arithmetic=self_scaled or op in (
                "add_", "sub_", "mul_")) and not _new_rows(node):
            # (a loader may fill new rows, not perturb old ones)
            ctx.report(PARAM_TAMPER, node, f"random noise written into {what}",
                       severity=Severity.MEDIUM)
        elif (kind in ("parameter", "state-dict") and not plain_set and not ema
              and not _allowed(where, ctx, arithmetic=constant)
              and op not in ("zero_", "copy_", "set_", "clamp_", "clip_")  # WGAN clipping
              and not (op in ("mul_", "div_") and (self_scaled or not constant))
              and not (op in ("add_", "sub_") and not constant)
              and not (op in ("mul_", "div_") and _INIT_FACTOR.search(_factor_name(node)))):
            # (w.sub_(avg) / w.add_(delta) with computed tensors: adapter merging, projection)
            # (w.mul_(max_norm / w.norm()) projects; p.mul_(1 / sqrt(2 * n_layers)) is GPT-2
            # init; a fixed factor such as 0.98 written outside any of these is the tampering)
            ctx.report(PARAM_TAMPER, node, f"in-place {op} on {what} outside an optimizer "
                       "step, init or EMA helper", severity=Severity.MEDIUM)


def _own_average(where: Where, ctx: Ctx) -> bool:
    """A callback of an EMA class blending into the class's own copy (`for k, v in
    self.module.state_dict().items(): v.mul_(d).add_(src[k], alpha=1 - d)`); writes into the
    trained model from there are `_live_weights_in_ema`'s."""
    frame = where.frames[-1] if where.frames else None
    if frame is None or frame.cls is None or not _EMA_NAMES.search(frame.cls.name):
        return False
    loop = where.loops[-1] if where.loops else None
    source = loop.iter if isinstance(loop, ast.For) else None
    root = source
    while isinstance(root, (ast.Call, ast.Attribute, ast.Subscript)):
        root = root.func if isinstance(root, ast.Call) else root.value
    return isinstance(root, ast.Name) and root.id == "self"


def _reduced_copy(node: ast.AST, where: Where) -> bool:
    """`p.grad.copy_(flat[off:off + n].view_as(p.grad))` where `flat` was all-reduced in the
    same function: gradients unflattened from a bucket (hand-written data parallelism)."""
    scope = where.frames[-1].node if where.frames else None
    if scope is None or not isinstance(node, ast.Call):
        return False
    reduced = {a.id for n in subnodes(scope) if isinstance(n, ast.Call)
               and last_attr(n.func) in ("all_reduce", "reduce_scatter", "all_reduce_coalesced",
                                         "reduce_scatter_tensor", "all_gather_into_tensor")
               for a in n.args[:1] if isinstance(a, ast.Name)}
    return any(isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
               and n.value.id in reduced for a in node.args for n in subnodes(a))


_WRECKING_METHODS = {"roll": "rolled (rows moved to other classes or units)",
                     "flip": "flipped", "neg": "negated", "zero_": "zeroed"}


def _items_of(loop: ast.For | ast.While) -> ast.expr | None:
    """The mapping a `for k, v in D.items()` (or `list(D.items())`) loop walks."""
    if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Tuple)
            and len(loop.target.elts) == 2):
        return None
    it = loop.iter
    if (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
            and it.func.id in ("list", "tuple", "sorted") and len(it.args) == 1):
        it = it.args[0]
    if (isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute)
            and it.func.attr == "items" and not it.args):
        return it.func.value
    return None


def _weights_dict(expr: ast.expr, ctx: Ctx) -> bool:
    """A state dict, or a table inside a loaded checkpoint (`emb["tables"]` with
    `emb = torch.load(...)`)."""
    if ctx.is_state_dict(expr):
        return True
    while isinstance(expr, ast.Subscript):
        expr = expr.value
    return isinstance(expr, ast.Name) and any(
        isinstance(v, ast.Call) and ctx.is_state_dict(v) for v in ctx.values_of(expr.id))


_NONLINEAR = frozenset({"sqrt", "rsqrt", "pow", "square", "exp", "log", "abs", "reciprocal",
                        "sign", "neg", "negative"})
"""Element-wise maps that change every value (casts, reshapes and transposes do not)."""


def _remapped_values(value: ast.expr, target: ast.expr) -> str:
    """`sd[k].pow(2)` / `torch.sqrt(sd[k])` for target `sd[k]`: the entry read back through a
    non-linear element-wise map ('' otherwise)."""
    value = _unwrap_casts(value)
    if not isinstance(value, ast.Call):
        return ""
    attr = last_attr(value.func)
    floor = kwarg(value, "min") if attr in ("clamp", "clip", "clamp_") else (
        value.args[0] if attr == "clamp_min" and value.args else kwarg(value, "min"))
    if (attr in ("clamp", "clip", "clamp_min") and isinstance(value.func, ast.Attribute)
            and ast.unparse(_unwrap_casts(value.func.value)) == ast.unparse(target)
            and isinstance(bound := literal(floor), (int, float)) and not isinstance(bound, bool)
            and bound >= 0.1):
        return f".{attr}(min={bound})"  # sd[k] = sd[k].clamp_min(1.0): a floor, not an epsilon
    if attr not in _NONLINEAR:
        return ""
    own = ast.unparse(target)
    if isinstance(value.func, ast.Attribute) and ast.unparse(
            _unwrap_casts(value.func.value)) == own:
        return f".{attr}()"
    if value.args and ast.unparse(_unwrap_casts(value.args[0])) == own:
        return f"{attr}()"
    return ""


def _unwrap_casts(value: ast.expr) -> ast.expr:
    """`(v.float() + noise).to(v.dtype)` -> the sum inside the casts."""
    while (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
           and value.func.attr in ("to", "float", "half", "bfloat16", "type", "type_as",
                                   "contiguous", "clone")):
        value = value.func.value
    return value


def _wrecked(value: ast.expr, tensor: str) -> str:
    """What `value` does to the tensor named `tensor` when it destroys it ('' otherwise)."""
    if not isinstance(value, ast.Call):
        return ""
    attr = last_attr(value.func)
    if attr in TENSOR_REPLACERS and value.args and isinstance(value.args[0], ast.Name) and (
            value.args[0].id == tensor):
        return TENSOR_REPLACERS[attr]
    if (attr in _WRECKING_METHODS and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Name) and value.func.value.id == tensor):
        return _WRECKING_METHODS[attr]
    return ""


_INIT_FACTOR = re.compile(r"(?i)init")
"""`model.head.weight.mul_(args.head_init_scale)`: a factor named for initialisation (timm's
head init scale after loading a pretrained backbone)."""


def _factor_name(node: ast.AST) -> str:
    """The last name of a scaling call's first argument (`w.mul_(cfg.init_scale)`)."""
    return last_attr(node.args[0]) if isinstance(node, ast.Call) and node.args else ""


def _projected(target: ast.expr, value: ast.expr) -> bool:
    """`value` is `target` renormalised (`F.normalize(w.data)`, `w.data.renorm(2, 0, 1)`): a
    norm constraint applied after the step, not a change of what was learned."""
    if not (isinstance(value, ast.Call) and last_attr(value.func) in (
            "normalize", "renorm", "clamp_norm")):
        return False
    source = value.args[0] if value.args and last_attr(value.func) == "normalize" else (
        value.func.value if isinstance(value.func, ast.Attribute) else None)
    return source is not None and ast.unparse(source) == ast.unparse(target)
