"""MLS306, settings that decide how results are scored, each wrong in one word.

- Model selection on the test split: `monitor = "test/auroc"`,
  `ModelCheckpoint(monitor="test_acc")`, `metric_for_best_model="test_f1"`. The checkpoint
  kept is the one that scores best on the data it is then reported on. (`eval_*` is how the
  Hugging Face Trainer names validation metrics, so only `test` counts.)
- `zero_division=1` in precision/recall/F1: a class the model never predicts (or that has no
  positives) scores a perfect 1.0 instead of 0, which lifts every macro average.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.metrics import METRIC_FALSIFY
from mlscan.checks.names import last_attr, literal
from mlscan.model import Severity

_MONITOR = re.compile(r"(?i)^_?(monitor|monitor_metric|select(ion)?_metric|best_metric|"
                      r"metric_for_best_model|early_stop\w*_metric|checkpoint_metric|"
                      r"model_selection\w*|selection_key|select_by)$")
_TEST_METRIC = re.compile(r"(?i)^(test)([/_.-]|$)")
_ZERO_DIVISION_SCORES = frozenset({
    "f1_score", "precision_score", "recall_score", "fbeta_score",
    "precision_recall_fscore_support", "classification_report", "jaccard_score"})


def _test_choice(value: ast.expr | None) -> str:
    """The test-split metric name a setting holds (also one branch of `a if flag else b`)."""
    options = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
    for option in options:
        text = literal(option)
        if isinstance(text, str) and _TEST_METRIC.match(text):
            return text
    return ""


class ScoringChoices(Check):
    rules = (METRIC_FALSIFY,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if any(_MONITOR.match(last_attr(t) or "") for t in node.targets):
            self._selected_on_test(node, node.value, ctx)

    def visit_AnnAssign(self, node: ast.AnnAssign, ctx: Ctx) -> None:
        if _MONITOR.match(last_attr(node.target) or ""):
            self._selected_on_test(node, node.value, ctx)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        for kw in node.keywords:
            if kw.arg and _MONITOR.match(kw.arg):
                self._selected_on_test(kw.value, kw.value, ctx)
            elif kw.arg == "zero_division" and literal(kw.value) in (1, 1.0) and (
                    last_attr(node.func) in _ZERO_DIVISION_SCORES):
                ctx.report(METRIC_FALSIFY, kw.value, f"{last_attr(node.func)}(zero_division=1): "
                           "a class the model never predicts (or without positives) scores a "
                           "perfect 1.0, which lifts the average", severity=Severity.MEDIUM)

    @staticmethod
    def _selected_on_test(node: ast.AST, value: ast.expr | None, ctx: Ctx) -> None:
        chosen = _test_choice(value)
        if chosen:
            ctx.report(METRIC_FALSIFY, node, f"checkpoints are selected on {chosen!r}, a test "
                       "split metric: the reported test score is the best of many tries on the "
                       "test data itself", severity=Severity.MEDIUM)
