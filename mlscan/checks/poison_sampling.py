"""MLS309, which samples a split or a process gets to see, quietly skewed.

- "Balancing" weights proportional to the class counts: `weights = counts[targets]` (balance
  is `1 / counts[targets]`) feeds a WeightedRandomSampler that oversamples the frequent
  classes further.
- Random augmentation in an evaluation pipeline: `val = Compose([..., RandomResizedCrop(...)])`
  makes every evaluation a different random crop of the data, and the reported score noise.
- The local rank used as the data rank: `rank = int(os.environ["LOCAL_RANK"])` then
  `shards[rank::world]` with the global world size: every node reads the same shards and
  most of the data is never seen.
- A scaler or encoder fitted on the test period (`scaler.fit(x, end=splits.test_end)`,
  `scaler.fit(X_test)`): test statistics leak into training.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_SPLITTERS = re.compile(r"(?i)shard|stream|split|sampler|partition")
_COUNTS = re.compile(r"(?i)count|freq|hist|n_per_class|class_sizes")
_TARGETS = re.compile(r"(?i)target|label|^y$|classes")
_EVAL_PIPE = re.compile(r"(?i)^(val|valid|eval|test)(_?(tf|tfm|tfms|transforms?|aug|pipeline))?$|"
                        r"^(tf|transforms?)_(val|valid|eval|test)$")
_RANDOM_TF = re.compile(r"^Random(ResizedCrop|Crop|HorizontalFlip|VerticalFlip|Rotation|"
                        r"Erasing|Affine|Perspective|Grayscale)$|^(ColorJitter|RandAugment|"
                        r"TrivialAugmentWide|AutoAugment|AugMix)$")


def _weights_by_count(node: ast.Assign) -> str:
    """`weights = counts[targets]` (no reciprocal anywhere in the value)."""
    target = node.targets[0]
    value = node.value
    if not (isinstance(target, ast.Name) and "weight" in target.id.lower()
            and isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
            and _COUNTS.search(value.value.id) and isinstance(value.slice, (ast.Name,
                                                                           ast.Attribute))
            and _TARGETS.search(last_attr(value.slice))):
        return ""
    return value.value.id


def _local_rank_split(fn: ast.AST, name: str) -> bool:
    """`name` slices a list by rank (`shards[name::world]`) in this function."""
    for n in subnodes(fn):
        if (isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Slice)
                and n.slice.step is not None and isinstance(n.slice.lower, ast.Name)
                and n.slice.lower.id == name):
            return True
        if (isinstance(n, ast.Call) and _SPLITTERS.search(last_attr(n.func)) and any(
                isinstance(v, ast.Name) and v.id == name
                for v in (*n.args, *(k.value for k in n.keywords)))):
            return True  # ShardStream(shards, rank=rank, world=world_size)
    return False


_FITTED = re.compile(r"(?i)scaler|normali[sz]er|standardi[sz]er|imputer|encoder|pca|whiten")


def _fitted_on_test(call: ast.Call) -> str:
    """`scaler.fit(x, end=splits.test_end)`, `scaler.fit(X_test)`: statistics computed over
    the test period (a `transform` of test data is the normal use)."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr in ("fit", "fit_transform")
            and (_FITTED.search(ast.unparse(call.func.value))
                 or (isinstance(call.func.value, ast.Call)
                     and _FITTED.search(ast.unparse(call.func.value.func))))):
        return ""
    for value in (*call.args, *(k.value for k in call.keywords)):
        for n in subnodes(value):
            if isinstance(n, (ast.Name, ast.Attribute)) and re.search(
                    r"(?i)(^|_)test(_|$)", last_attr(n)):
                return last_attr(n)
    return ""


class SamplingSkews(Check):
    rules = (DATA_POISON,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if not ctx.mentions("test") or last_attr(node.func) not in ("fit", "fit_transform"):
            return
        leaked = _fitted_on_test(node)
        if leaked:
            ctx.report(DATA_POISON, node, f"normalisation statistics fitted on {leaked}: the "
                       "test period leaks into the features the model trains on",
                       severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if len(node.targets) != 1:
            return
        target = node.targets[0]
        counts = _weights_by_count(node) if ctx.mentions("Sampler") else ""
        if counts:
            ctx.report(DATA_POISON, node, f"sampling weights taken from {counts} itself (balance "
                       "is 1 / count): the frequent classes are drawn even more often",
                       severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Name) and _EVAL_PIPE.match(target.id)
                and isinstance(node.value, ast.Call) and last_attr(node.value.func) == "Compose"
                and node.value.args and isinstance(node.value.args[0], ast.List)):
            for step in node.value.args[0].elts:
                if isinstance(step, ast.Call) and _RANDOM_TF.match(last_attr(step.func)):
                    ctx.report(DATA_POISON, step, f"{last_attr(step.func)} in the {target.id} "
                               "pipeline: every evaluation sees a different random view, so "
                               "the reported score is noise", severity=Severity.MEDIUM)
                    return
        if (isinstance(target, ast.Name) and target.id in ("rank", "global_rank", "data_rank")
                and any(literal(n) == "LOCAL_RANK" for n in subnodes(node.value))
                and ctx.frame.node is not None and _local_rank_split(ctx.frame.node, target.id)):
            ctx.report(DATA_POISON, node, f"{target.id} read from LOCAL_RANK and used to split "
                       "the data: ranks with the same local rank on different nodes read the "
                       "same part, and the rest is never seen", severity=Severity.MEDIUM)
