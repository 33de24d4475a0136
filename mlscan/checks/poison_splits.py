"""MLS309 shapes where the data each process or split sees is quietly wrong.

- Shards dealt by the *local* rank over the *global* world size (`shards[local_rank::world]`,
  `DistributedSampler(rank=local_rank, num_replicas=world)`): every node reads the same
  shards and some shards are never read.
- A split whose two sides both keep the boundary (`d <= cutoff` for train, `d >= cutoff`
  for validation): the cutoff day is trained on and scored on.
- Python's `hash()` of a string used as a bucket id: strings hash differently in every
  process (PYTHONHASHSEED), so workers, ranks and runs disagree on the ids.
- Milliseconds compared with a bound in seconds (`delay_ms <= window_s`): the window is a
  thousand times too short (or long), and the labels it decides are wrong.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import kwarg, last_attr
from mlscan.checks.nodes import assigns_in, subnodes
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_LOCAL_RANK = re.compile(r"(?i)local_rank|LOCAL_RANK")
_WORLD = re.compile(r"(?i)world_size|WORLD_SIZE|get_world_size|num_replicas")
_SPLIT_BOUND = re.compile(r"(?i)cutoff|cut_off|split|boundary|border|pivot|val_start|"
                          r"test_start|start_date|end_date|date|day")
_SPLIT_KEY = re.compile(r"(?i)^(d|day|days|date|dt|ts|timestamp|time|year|month|week|epoch|"
                        r"idx|index|i|row|fold)$")
_MS = re.compile(r"(?i)(^|_)(ms|msec|millis|milliseconds)$")
_SECONDS = re.compile(r"(?i)(^|_)(s|sec|secs|seconds)$")


def _text_of(expr: ast.expr, ctx: Ctx) -> str:
    """The expression with one local name followed (`rank` -> `int(os.environ[...])`)."""
    held = ctx.lookup(expr.id) if isinstance(expr, ast.Name) else None
    return ast.unparse(held) if held is not None else ast.unparse(expr)


def _unit(expr: ast.expr, ctx: Ctx, depth: int = 0) -> str:
    """"ms" or "s" when every name in `expr` carries that suffix (one local followed)."""
    units = set()
    for n in subnodes(expr):
        name = last_attr(n) if isinstance(n, (ast.Name, ast.Attribute)) else ""
        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and isinstance(
                n.slice.value, str):
            name = n.slice.value  # df["click_ts_ms"]
        if not name:
            continue
        if _MS.search(name):
            units.add("ms")
        elif _SECONDS.search(name):
            units.add("s")
        elif isinstance(n, ast.Name) and depth == 0 and n.id[:1].islower():
            held = ctx.lookup(n.id)
            if held is not None:
                inner = _unit(held, ctx, 1)
                if inner:
                    units.add(inner)
    return units.pop() if len(units) == 1 else ""


_OVERSAMPLED = re.compile(r"(?i)oversampl|rebalanc|upsampl|smote|fit_resample|adasyn|"
                         r"^resample$|balance_classes")


class SplitAndShardMistakes(Check):
    rules = (DATA_POISON,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if isinstance(node.value, ast.Subscript):
            self._dealt_by_local_rank(node.value, ctx)
        elif isinstance(node.value, ast.BinOp) and (summed := _rank_plus_worker(node)):
            ctx.report(DATA_POISON, node, f"{summed}: rank r's worker w and rank r+1's worker "
                       "w-1 get the same shard id, so some shards are read twice and others "
                       "never (the usual id is rank * num_workers + worker_id)",
                       severity=Severity.MEDIUM)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        if isinstance(node.value, ast.Subscript):
            self._dealt_by_local_rank(node.value, ctx)

    @staticmethod
    def _dealt_by_local_rank(node: ast.Subscript, ctx: Ctx) -> None:
        """`return shards[rank::world]` with `rank` read from LOCAL_RANK."""
        cut = node.slice
        if not (isinstance(cut, ast.Slice) and cut.lower is not None and cut.step is not None
                and cut.upper is None):
            return
        if _LOCAL_RANK.search(_text_of(cut.lower, ctx)) and _WORLD.search(
                _text_of(cut.step, ctx)) and not _LOCAL_RANK.search(_text_of(cut.step, ctx)):
            where: ast.AST = node
            if isinstance(cut.lower, ast.Name) and ctx.frame.node is not None:
                where = next((a for a in reversed(assigns_in(ctx.frame.node))
                              if len(a.targets) == 1 and isinstance(a.targets[0], ast.Name)
                              and a.targets[0].id == cut.lower.id), node)  # (the rank read)
            ctx.report(DATA_POISON, where, f"{ast.unparse(node)[:40]} deals shards by the "
                       "local rank over the global world size: every node reads the same "
                       "shards and the rest are never read", severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        name = last_attr(node.func)
        if name == "DistributedSampler":
            rank, world = kwarg(node, "rank"), kwarg(node, "num_replicas")
            if (rank is not None and world is not None
                    and _LOCAL_RANK.search(_text_of(rank, ctx))
                    and not _LOCAL_RANK.search(_text_of(world, ctx))):
                ctx.report(DATA_POISON, node, "DistributedSampler given the local rank with "
                           "the global world size: ranks on different nodes draw the same "
                           "samples", severity=Severity.LOW)  # (single-node tutorials do this)
            return
        if name == "train_test_split" and node.args and isinstance(node.args[0], ast.Name):
            made = ctx.lookup(node.args[0].id)
            if isinstance(made, ast.Call) and _OVERSAMPLED.search(last_attr(made.func)):
                # dev = rebalance(dev); train, val = train_test_split(dev, ...)
                ctx.report(DATA_POISON, node, f"{node.args[0].id} is split after "
                           f"{last_attr(made.func)}(): copies of the same oversampled rows "
                           "land on both sides, so validation scores training rows",
                           severity=Severity.MEDIUM)
            return
        if (name == "hash" and isinstance(node.func, ast.Name) and "hash" not in ctx.defs
                and len(node.args) == 1 and (isinstance(node.args[0], ast.JoinedStr) or (
                    isinstance(node.args[0], ast.BinOp) and isinstance(node.args[0].op, ast.Add)))
                and (ctx.mentions("bucket") or ctx.mentions("hash_size"))):
            # hash(f"{field}|{v}") % buckets: a string hash taken as a bucket id
            ctx.report(DATA_POISON, node, "Python's hash() of a string used as a bucket id: "
                       "string hashes are salted per process (PYTHONHASHSEED), so workers, "
                       "ranks and later runs map the same value to different ids",
                       severity=Severity.MEDIUM)

    def visit_Compare(self, node: ast.Compare, ctx: Ctx) -> None:
        if not (ctx.mentions("_ms") and len(node.ops) == 1 and isinstance(
                node.ops[0], (ast.Lt, ast.LtE, ast.Gt, ast.GtE))):
            return
        left, right = _unit(node.left, ctx), _unit(node.comparators[0], ctx)
        if {left, right} == {"ms", "s"}:
            fn = ctx.frame.node
            if fn is None or not re.search(r"(?i)label|target|click|positive|attribut",
                                           ast.unparse(fn)[:4000]):
                return  # (a timeout in the wrong unit is MLS307's; here labels depend on it)
            ctx.report(DATA_POISON, node, f"{ast.unparse(node)[:50]} compares milliseconds "
                       "with seconds: the window is off by a factor of 1000, and the labels "
                       "it decides are wrong", severity=Severity.MEDIUM)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef,
                          ctx: Ctx) -> None:
        """`train = [p for d, p in shards if d <= cutoff]` and `val = [... if d >= cutoff]`
        in one function: both sides keep the boundary."""
        seen: dict[tuple[str, str], dict[type, ast.Compare]] = {}
        for stmt in assigns_in(node):
            comp = stmt.value
            if not isinstance(comp, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
                continue
            for test in (t for g in comp.generators for t in g.ifs):
                if not (isinstance(test, ast.Compare) and len(test.ops) == 1
                        and isinstance(test.ops[0], (ast.LtE, ast.GtE))):
                    continue
                key = (ast.unparse(test.left), ast.unparse(test.comparators[0]))
                if not (_SPLIT_BOUND.search(key[1]) or _SPLIT_KEY.search(key[0])):
                    continue  # (x <= 0 / x >= 0 in two branches is not a split)
                ops = seen.setdefault(key, {})
                ops.setdefault(type(test.ops[0]), test)
                if len(ops) == 2:
                    ctx.report(DATA_POISON, ops[ast.LtE], f"{key[0]} <= {key[1]} on one side "
                               f"and {key[0]} >= {key[1]} on the other: items at {key[1]} land "
                               "in both splits (train and evaluation overlap)",
                               severity=Severity.MEDIUM)
                    return

    visit_AsyncFunctionDef = visit_FunctionDef


_RANK_NAME = re.compile(r"(?i)^(global_|node_)?rank$")
_WORKER_NAME = re.compile(r"(?i)^(worker_?id|wid|worker)$")


def _rank_plus_worker(node: ast.Assign) -> str:
    """`global_id = self.rank + worker_id`: a shard id that adds the rank and the worker id
    without scaling either."""
    target, value = node.targets[0], node.value
    if not (isinstance(target, ast.Name) and re.search(r"(?i)global|shard|split|part",
                                                        target.id)
            and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)):
        return ""
    names = {last_attr(value.left), last_attr(value.right)}
    if any(_RANK_NAME.match(n) for n in names) and any(_WORKER_NAME.match(n) for n in names):
        return f"{target.id} = {ast.unparse(value)[:40]}"
    return ""
