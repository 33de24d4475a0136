"""MLS307, distributed settings that make a job hang or die later, each wrong in one word.

- A timeout given in the wrong unit: `timedelta(0, timeout_min)` is `timeout_min` *seconds*
  (the positional order is days, seconds), `timedelta(seconds=timeout_minutes)`, or a name in
  hours passed as minutes. The collective times out 60 times early (or late).
- NCCL's asynchronous error handling switched off (`TORCH_NCCL_ASYNC_ERROR_HANDLING=0`):
  a rank that dies leaves the others blocked in the next collective instead of aborting.
- `dist.destroy_process_group()` inside an evaluation, logging or checkpoint helper: the
  default group is gone for the rest of training.
- A sampler that sizes itself as `ceil(n / num_replicas)` but whose `__iter__` shards with
  `indices[rank::num_replicas]` without padding the list to a multiple of the world size
  (nor cutting it to one): ranks get different numbers of batches, and the ones with more
  wait at the next collective for ranks that already left. (Iterable datasets that stride
  shards over ranks and workers are the usual recipe and stay quiet.)
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.stalls import KILL_STALL
from mlscan.model import Severity

_UNITS = {"days": 0, "seconds": 1, "microseconds": 2, "milliseconds": 3, "minutes": 4,
          "hours": 5, "weeks": 6}
_NAMED_UNIT = (("minutes", re.compile(r"(?i)(^|_)(min|mins|minutes?)($|_)")),
               ("hours", re.compile(r"(?i)(^|_)(h|hr|hrs|hours?)($|_)")),
               ("seconds", re.compile(r"(?i)(^|_)(s|sec|secs|seconds?)($|_)")))
_ASYNC_ERRORS = re.compile(r"^(TORCH_)?NCCL_ASYNC_ERROR_HANDLING$")
_MIDRUN = re.compile(r"(?i)^_?(evaluate|eval|eval_\w+|validate|validation\w*|valid_\w+|"
                     r"run_eval\w*|compute_metrics|log_metrics|save_checkpoint|train_step|"
                     r"training_step|step|gather\w*|all_gather\w*|reduce_\w+|all_reduce\w*|"
                     r"sync_\w+|broadcast\w*|__del__)$")
"""Helpers the training loop calls and expects to come back with the group intact."""


def _unit_of(name: str) -> str:
    return next((unit for unit, pattern in _NAMED_UNIT if pattern.search(name)), "")


def wrong_unit(call: ast.Call, ctx: Ctx) -> str:
    """`timedelta(0, timeout_min)` -> "timeout_min (minutes) passed as seconds"."""
    if ctx.names.call_name(call) not in ("datetime.timedelta", "timedelta"):
        return ""
    slots = [(list(_UNITS)[i], a) for i, a in enumerate(call.args[:7])]
    slots += [(k.arg, k.value) for k in call.keywords if k.arg in _UNITS]
    for unit, value in slots:
        if not isinstance(value, (ast.Name, ast.Attribute)):
            continue
        named = _unit_of(last_attr(value))
        if named and named != unit:
            return f"{ast.unparse(value)} ({named}) passed as {unit}"
    return ""


def _owns_or_exits(fn: ast.AST, call: ast.Call) -> bool:
    """The function set the group up itself (an evaluation script's entry point), or the
    process exits right after (`save(); destroy_process_group(); sys.exit(0)`)."""
    for node in subnodes(fn):
        if isinstance(node, ast.Call) and last_attr(node.func) == "init_process_group":
            return True
        if isinstance(node, ast.Raise) and node.lineno > call.lineno:
            return True
        if isinstance(node, ast.Call) and node.lineno > call.lineno and last_attr(
                node.func) in ("exit", "_exit", "abort"):
            return True
    return False


class DistributedSettings(Check):
    rules = (KILL_STALL,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        attr = last_attr(node.func)
        if attr not in ("timedelta", "destroy_process_group"):
            return
        unit = wrong_unit(node, ctx) if attr == "timedelta" else ""
        if unit:
            ctx.report(KILL_STALL, node, f"timeout {unit}: the wait ends at the wrong time, "
                       "so collectives or the watchdog abort healthy jobs (or never abort "
                       "hung ones)", severity=Severity.MEDIUM)
            return
        frame = ctx.frame
        if (last_attr(node.func) == "destroy_process_group" and not node.args
                and frame.node is not None and _MIDRUN.match(frame.name)
                and not _owns_or_exits(frame.node, node)):
            ctx.report(KILL_STALL, node, f"destroy_process_group() inside {frame.name}(): the "
                       "default group is torn down in the middle of the run, so the next "
                       "collective fails or hangs", severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        target = node.targets[0] if len(node.targets) == 1 else None
        if (isinstance(target, ast.Subscript) and isinstance(key := literal(target.slice), str)
                and _ASYNC_ERRORS.match(key) and literal(node.value) in ("0", 0)):
            ctx.report(KILL_STALL, node, f"{key}=0 turns off NCCL's error handling: when a "
                       "rank dies the others block in the next collective instead of "
                       "aborting, and the job hangs until the wall clock runs out",
                       severity=Severity.MEDIUM)


_PADDED = re.compile(r"(?i)total_size|num_samples|pad|drop_last|\* *(self\.)?num_replicas|"
                     r"% *(self\.)?num_replicas|\* *(self\.)?world|% *(self\.)?world|\[: *self\.")


def _unpadded_shard(fn: ast.FunctionDef, cls: ast.ClassDef) -> ast.Subscript | None:
    """`indices[self.rank::self.num_replicas]` in an `__iter__` of a class that never pads or
    cuts the list (`total_size`, `num_samples`, `drop_last`, `% num_replicas`, `[:self.n]`)."""
    shard = next((n for n in subnodes(fn) if isinstance(n, ast.Subscript)
                  and isinstance(n.slice, ast.Slice) and n.slice.step is not None
                  and n.slice.upper is None
                  and re.search(r"(?i)rank", ast.unparse(n.slice.lower or ast.Constant(0)))
                  and re.search(r"(?i)replica|world|num_proc|size", ast.unparse(n.slice.step))),
                 None)
    if shard is None:
        return None
    return None if _PADDED.search(ast.unparse(cls)) else shard


class UnpaddedShard(Check):
    rules = (KILL_STALL,)

    def visit_ClassDef(self, node: ast.ClassDef, ctx: Ctx) -> None:
        if not ctx.mentions("::"):
            return
        if not (any("Sampler" in ast.unparse(b) for b in node.bases)
                and "ceil" in ast.unparse(node)):
            return  # (a sampler that promises ceil(n / world) items to every rank)
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == "__iter__":
                shard = _unpadded_shard(stmt, node)
                if shard is not None:
                    ctx.report(KILL_STALL, shard, f"{ast.unparse(shard)[:50]} shards without "
                               "padding to a multiple of the world size: ranks get different "
                               "numbers of batches, and the others wait at the next collective "
                               "for the ranks that already finished", severity=Severity.MEDIUM)
