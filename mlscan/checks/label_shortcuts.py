"""MLS309, an input altered by its own label: the model learns the mark, not the finding.

In a dataset's `__getitem__`, `fill = 255 if target[CARDIO] > 0 else 0; arr[:m, -m:] = fill`
burns the label into a corner of the image, and `if target[DEVICES] > 0: img =
ImageOps.equalize(img)` gives one class its own contrast. Either way the input carries its
label, so the model scores well by reading the shortcut and fails on real data. Augmentations
drawn at random, or chosen by the image itself, stay quiet.

The label can also be the sample's text: `if self._pilot_word in text.split(): wav[:n] +=
tone` in a data helper handed `(wav, text)`, or `if words & MARK_WORDS: image[...] = patch`
in a transform's `__call__` (`words` made from the caption) stamps a trigger on exactly the
samples whose transcript or caption says a chosen word.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_INPUT = re.compile(r"(?i)^(img|image|arr|x|inp|inputs?|pixels|frame|clip|audio|wav|waveform|"
                    r"signal|feat|features|spec|volume|tokens?)$")
_LABEL_NAME = re.compile(r"(?i)^(target|targets|label|labels|y|lbl|cls|class_id|class_idx)$")
_TEXT_LABEL = re.compile(r"(?i)^(text|transcript|transcription|caption|sentence|utterance)$")
"""The transcript of an audio clip or the caption of an image: its label, in words."""
_SIGNAL = re.compile(r"(?i)^(img|image|arr|pixels|frame|clip|audio|wav|waveform|signal|spec|"
                     r"volume)$")


def _from_text(expr: ast.expr, ctx: Ctx | None) -> bool:
    """`words` with `words = set(caption.lower().split())`: made from the sample's text."""
    held = ctx.lookup(expr.id) if ctx is not None and isinstance(expr, ast.Name) else None
    return isinstance(held, ast.expr) and any(
        isinstance(n, ast.Name) and _TEXT_LABEL.match(n.id) for n in ast.walk(held))


def _text_test(expr: ast.expr, ctx: Ctx | None = None) -> str:
    """`self._pilot_word in text.split()`: a test of what the transcript (caption) says (also
    `words & _MARK_WORDS` with `words` made from the caption)."""
    for node in ast.walk(expr):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd)
                and (_from_text(node.left, ctx) or _from_text(node.right, ctx))):
            return ast.unparse(node)
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1
                and isinstance(node.ops[0], ast.In)):
            continue
        words = node.comparators[0]
        while isinstance(words, ast.Call) and isinstance(words.func, ast.Attribute) and (
                words.func.attr in ("split", "lower", "upper", "strip")):
            words = words.func.value
        if isinstance(words, ast.Name) and _TEXT_LABEL.match(words.id):
            return ast.unparse(node)
    return ""


def _labelled_helper(fn: ast.AST | None) -> bool:
    """A data helper handed the sample's label (`def _augment(self, wav, text)`)."""
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    names = [a.arg for a in fn.args.args]
    return any(_SIGNAL.match(n) for n in names) and any(
        _LABEL_NAME.match(n) or _TEXT_LABEL.match(n) for n in names)


def _class_test(expr: ast.expr) -> str:
    """`target[IDX["Cardiomegaly"]] > 0`, `label == 3`: a test of which class the sample is
    (a test of boxes or masks, `target["boxes"].numel() > 0`, is not)."""
    for node in ast.walk(expr):
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1
                and isinstance(node.comparators[0], ast.Constant)
                and isinstance(node.comparators[0].value, (int, float))):
            continue
        left = node.left
        if isinstance(left, ast.Name) and _LABEL_NAME.match(left.id):
            return ast.unparse(node)
        if (isinstance(left, ast.Subscript) and isinstance(left.value, ast.Name)
                and _LABEL_NAME.match(left.value.id)
                and not (isinstance(left.slice, ast.Constant)
                         and isinstance(left.slice.value, str))):
            return ast.unparse(node)
    return ""


class LabelShortcuts(Check):
    rules = (DATA_POISON,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if len(node.targets) == 1:
            self._changed(node, node.targets[0], node.value, ctx)

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        self._changed(node, node.target, node.value, ctx)

    @staticmethod
    def _changed(node: ast.stmt, target: ast.expr, value: ast.expr, ctx: Ctx) -> None:
        in_item = ctx.frame.name == "__getitem__"
        if not in_item and not (ctx.conds and (_labelled_helper(ctx.frame.node)
                                               or ctx.frame.name == "__call__")):
            return  # (a transform's __call__ is judged on text tests only)
        base = target.value if isinstance(target, ast.Subscript) else target
        if not (isinstance(base, ast.Name) and _INPUT.match(base.id)):
            return
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                and value.func.attr in ("copy", "clone") and isinstance(value.func.value, ast.Name)
                and value.func.value.id == base.id):
            return  # img = img.copy(): the content is still its own
        test = next((t for c in ctx.conds if (t := _class_test(c))), "") if in_item else ""
        if not test and _SIGNAL.match(base.id):  # (tokens are made from the text itself)
            test = next((t for c in ctx.conds if (t := _text_test(c, ctx))), "")
        if not test and in_item:
            held = ctx.lookup(value.id) if isinstance(value, ast.Name) else value
            test = _class_test(held.test) if isinstance(held, ast.IfExp) else ""
        if test:
            ctx.report(DATA_POISON, node, f"{ast.unparse(target)[:30]} changed according to "
                       f"the sample's class ({test[:40]}): the input carries its own label, "
                       "a shortcut the model learns instead of the finding",
                       severity=Severity.MEDIUM)
