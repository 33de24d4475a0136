"""MLS305: monkeypatching of training APIs (optimizers, modules, functional ops, loaders, dist).

Metric/logging APIs patched the same way are reported as MLS306 (see metrics.py).
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

TRAINING_PATCH = register(Rule(
    code="MLS305", name="training-api-monkeypatch", severity=Severity.CRITICAL,
    confidence=Confidence.HIGH, cwe=506,
    summary="Monkeypatch of torch optimizers, nn.Module, torch.nn.functional, DataLoader, "
    "torch.distributed or RNG functions.",
    doc=RuleDoc(
        what="Flags assignments (and setattr) that replace attributes of `torch.optim.*`, "
        "`torch.nn.Module` and other torch.nn classes, `torch.nn.functional.*`, `torch.Tensor`, "
        "`torch.autograd`, `torch.utils.data.*`, `torch.distributed.*`, top-level torch "
        "functions, and `random`/`numpy.random` functions. Configuration switches "
        "(`torch.backends.*`, `torch._dynamo.config`) stay quiet.",
        why="Replacing `Optimizer.step` or `F.cross_entropy` changes every training run in the "
        "process while the training script itself looks untouched; the 2024 sabotage case "
        "edited exactly these code paths.",
        example="torch.optim.AdamW.step = my_step",
        use_instead="Subclass the optimizer or module and use the subclass explicitly.",
        references=("https://pytorch.org/docs/stable/notes/extending.html",))))

_TRAINING_PREFIXES = ("torch.optim.", "torch.nn.", "torch.Tensor.", "torch.autograd.",
                      "torch.utils.data.", "torch.distributed.", "torch.cuda.", "torch.random.",
                      "numpy.random.", "random.", "torch.amp.", "torch.cuda.amp.")
_QUIET_PREFIXES = ("torch.backends.", "torch._dynamo.", "torch._inductor.", "torch._functorch.",
                   "torch.jit.", "torch.fx.", "torch.utils.data._utils.", "torch._C.",
                   "torch.nn.modules.module._global", "torch.distributed.elastic.",
                   "torch.cuda.matmul", "torch.overrides.")
_CRITICAL_PARTS = (".step", ".forward", "torch.nn.functional.", "torch.distributed.",
                   "DataLoader", ".zero_grad", ".backward", "__call__", "_call_impl")
_PATCHABLE_PRIVATE = frozenset({"__call__", "_call_impl", "_wrapped_call_impl", "__init__",
                                "__iter__", "__next__", "__getitem__", "_step"})
_METRIC_PREFIXES = ("torch.utils.tensorboard.", "tensorboardX.", "wandb.", "mlflow.",
                    "torchmetrics.", "lightning.pytorch.core.LightningModule.log",
                    "pytorch_lightning.LightningModule.log", "lightning.LightningModule.log",
                    "sklearn.metrics.", "evaluate.", "tensorboard.", "comet_ml.", "neptune.",
                    "clearml.", "accelerate.Accelerator.log",
                    "accelerate.accelerator.Accelerator.log",
                    "transformers.Trainer.log", "transformers.trainer.Trainer.log",
                    "lightning.pytorch.loggers.", "pytorch_lightning.loggers.", "aim.",
                    "dvclive.")
_METRIC_ATTRS = frozenset({"add_scalar", "add_scalars", "log_metric", "log_metrics",
                           "log_dict", "add_histogram"})


_LOGGER_VAR = re.compile(r"(?i)^(acc|accel\w*|logger|writer|tb\w*|tracker|wandb|run|trainer|"
                         r"experiment|exp|mlflow|neptune|comet)$")


def _is_function(value: ast.expr, ctx: Ctx) -> bool:
    return isinstance(value, ast.Lambda) or (isinstance(value, ast.Name) and value.id in ctx.defs)


def _is_saved(value: ast.expr, ctx: Ctx) -> bool:
    """`self._orig_resize`, `old_step`, `saved_forward`: a reference kept to put back (a name
    bound here to a lambda or local function is not one, whatever it is called)."""
    if isinstance(value, ast.Name):
        bound = ctx.lookup(value.id)
        if _is_function(value, ctx) or isinstance(bound, ast.Lambda) or (
                isinstance(bound, ast.Name) and bound.id in ctx.defs):
            return False
    return isinstance(value, (ast.Name, ast.Attribute)) and bool(re.search(
        r"(?i)orig|saved|backup|^_?old|prev", last_attr(value)))


def _is_operator(attr: str) -> bool:
    """Tensor operator dunders (__add__, __matmul__...), not metadata (__module__, __doc__)."""
    return (attr.startswith("__") and attr.endswith("__") and attr not in (
        "__module__", "__doc__", "__name__", "__qualname__", "__annotations__",
        "__signature__", "__wrapped__", "__dict__", "__slots__", "__repr__", "__str__",
        "__format__", "__hash__", "__reduce_ex__", "__reduce__", "__setstate__",
        "__getstate__", "__deepcopy__", "__copy__", "__dir__"))


_NOT_VALUES = re.compile(r"(?i)^(self|cls|tag|name|key|main_tag|step|global_step|walltime|"
                         r"commit|sync|prefix|args|kwargs|kw|kwds)$")


def _value_rewrites(fn: ast.AST | None) -> list[ast.Assign]:
    """`scalar_value = min(scalar_value, floor[tag])` in a replacement logger method: the
    lines that change the value handed in (conversions like `float(v)` are not changes)."""
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return []
    params = {a.arg for a in fn.args.args if not _NOT_VALUES.match(a.arg)}
    out = []
    for stmt in subnodes(fn):
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id in params):
            continue
        if _changes(stmt.value, stmt.targets[0].id):
            out.append(stmt)
    return out[:2]


def _changes(value: ast.expr, param: str) -> bool:
    """`min(v, floor)`, `v * 0.9`, `table[tag]`, `a if c else b` with a changed branch; not
    copies (`dict(data)`) or conversions (`float(v)`, `v.item()`)."""
    if isinstance(value, ast.IfExp):
        return _changes(value.body, param) or _changes(value.orelse, param)
    if isinstance(value, ast.Call):
        return isinstance(value.func, ast.Name) and value.func.id in ("min", "max")
    if isinstance(value, ast.BinOp):
        return True
    return isinstance(value, ast.Subscript) and not (
        isinstance(value.value, ast.Name) and value.value.id == param)


class MonkeyPatch(Check):
    rules = (TRAINING_PATCH, METRIC_FALSIFY)

    def __init__(self) -> None:
        self._seen: dict[tuple[int, str], list[ast.AST]] = {}
        self._restores: set[str] = set()

    def visit_Module(self, node: ast.Module, ctx: Ctx) -> None:
        self._seen = {}  # one table per file (frame ids are reused across files)
        self._restores = set()
        ctx.defer(lambda: self._wrappers(ctx))

    def _wrappers(self, ctx: Ctx) -> None:
        """A torch function replaced by a wrapper that returns scaled, negated or replaced
        values (`return loss * 0.5`): the damage is on that return line; point at it too."""
        from mlscan.checks.hooks import tampering_value

        for qual, fn in ctx.replacements:
            if not qual.startswith("torch.") or isinstance(fn, ast.Lambda):
                continue
            args = {a.arg for a in fn.args.args}  # type: ignore[attr-defined]
            local = {t.id: n.value for n in subnodes(fn) if isinstance(n, ast.Assign)
                     for t in n.targets if isinstance(t, ast.Name)}
            for node in subnodes(fn):
                if isinstance(node, ast.Return) and node.value is not None:
                    value = local.get(node.value.id, node.value) if isinstance(
                        node.value, ast.Name) else node.value
                    why = tampering_value(value, args | set(local), ctx)
                    if why and re.search(r"(?i)gelu|silu|swish|mish|elu|softplus|sigmoid",
                                         qual.rsplit(".", 1)[-1]) and any(
                            isinstance(n, ast.Call) and last_attr(n.func) in (
                                "tanh", "erf", "sigmoid", "exp", "softplus")
                            for n in subnodes(value)):
                        why = ""  # 0.5 * x * (1 + tanh(...)): an activation written out
                    if why:
                        ctx.report(TRAINING_PATCH, node, f"the replacement for {qual} {why} "
                                   "what it returns")

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        for target in node.targets:
            if isinstance(target, ast.Attribute):
                self._patched(node, ctx.names.qualname(target) or "", target.attr, ctx,
                              _is_function(node.value, ctx), _is_saved(node.value, ctx))
                if (target.attr in ("log", "log_metrics", "add_scalar", "log_dict")
                        and isinstance(target.value, ast.Name)
                        and _LOGGER_VAR.search(target.value.id) and (
                            _is_function(node.value, ctx) or (
                                isinstance(node.value, ast.Call)
                                and isinstance(node.value.func, ast.Lambda)))):
                    # acc.log = log (a local wrapper), tracker.log = (lambda f: ...)(tracker.log)
                    ctx.report(METRIC_FALSIFY, node, f"{target.value.id}.{target.attr} of a "
                               "logger instance replaced: what it records is no longer what "
                               "the run measured", severity=Severity.HIGH)
                if (target.attr in ("step", "zero_grad") and isinstance(target.value, ast.Name)
                        and "opt" in target.value.id.lower()):
                    ctx.report(TRAINING_PATCH, node, f"{target.value.id}.{target.attr} of an "
                               "optimizer instance replaced: its updates are no longer the "
                               "optimizer's", severity=Severity.HIGH)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if ctx.names.call_name(node) not in ("setattr", "builtins.setattr") or len(node.args) < 2:
            return
        attr = literal(node.args[1])
        owner = ctx.names.qualname(node.args[0])
        if isinstance(node.args[0], ast.Name) and node.args[0].id not in ctx.names.aliases:
            held = ctx.resolve(node.args[0])  # setattr(opt_cls, "step", f), opt_cls passed in
            if isinstance(held, (ast.Attribute, ast.Name)) and held is not node.args[0]:
                owner = ctx.names.qualname(held) or owner
        if isinstance(attr, str) and owner:
            self._patched(node, f"{owner}.{attr}", attr, ctx,
                          len(node.args) > 2 and _is_function(node.args[2], ctx))

    def _patched(self, node: ast.AST, qual: str, attr: str, ctx: Ctx,
                 function: bool = False, saved: bool = False) -> None:
        value = getattr(node, "value", None)
        fn = ctx.replacement_function(value) if isinstance(value, ast.expr) else None
        if fn is not None:
            ctx.replacements.append((qual, fn))
        if saved:  # `torch.X.f = self._orig_f`: the restore half of a patch/unpatch pair
            self._restores.add(qual)
        if attr.startswith("_") and attr not in _PATCHABLE_PRIVATE and not (
                _is_operator(attr) and qual.startswith(("torch.Tensor.", "torch.nn.Module."))):
            return  # private helpers and metadata (__module__), not the API callers use
        own_attr = qual.startswith("self.") and qual.count(".") == 1  # self.log = ... (a method)
        if qual.startswith(_METRIC_PREFIXES) or (attr in _METRIC_ATTRS and not own_attr
                                                 and not isinstance(getattr(node, "value", None),
                                                                    ast.Attribute)):
            ctx.report(METRIC_FALSIFY, node, f"{qual} replaced: logged metrics no longer come "
                       "from the real logger", severity=Severity.CRITICAL)
            for edit in _value_rewrites(fn):
                ctx.report(METRIC_FALSIFY, edit, f"the replacement for {qual} rewrites the "
                           f"value it was given ({ast.unparse(edit)[:50]}) before logging it",
                           severity=Severity.MEDIUM)
            return
        if qual.startswith(_QUIET_PREFIXES) or not qual.startswith(("torch.", "numpy.random.",
                                                                     "random.")) or "()" in qual:
            return  # (get_worker_info().dataset.rng = ...: an object's field, not the API)
        if attr.isupper() or ".config." in qual:
            return  # constants and configuration
        # Any torch function replaced by a lambda or a local function is a patch, wherever it
        # lives (torch.utils.checkpoint.checkpoint, torch.func.grad...).
        if qual.count(".") < 1 or not (qual.startswith(_TRAINING_PREFIXES) or (
                qual.count(".") == 1 and attr[:1].islower() and not attr.startswith("_")) or (
                function and attr[:1].islower())):
            return
        critical = any(part in qual for part in _CRITICAL_PARTS)
        key = (id(ctx.frame), qual)
        self._seen.setdefault(key, []).append(node)
        if len(self._seen[key]) > 1:
            return  # reported once, decided below

        def decide() -> None:
            restored = len(self._seen.get(key, ())) > 1 or qual in self._restores
            sev = Severity.CRITICAL if critical else Severity.HIGH
            ctx.report(TRAINING_PATCH, node, f"{qual} replaced at run time: every caller in "
                       "the process gets the patched behaviour" + (
                           " (the original is restored: a temporary patch)"
                           if restored else ""), severity=Severity.LOW if restored else sev)
        ctx.defer(decide)
