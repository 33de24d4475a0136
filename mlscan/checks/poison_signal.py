"""MLS309 for audio and signal data: conversions written the wrong way round.

- Resampling with the rates swapped: after `wav, sr = torchaudio.load(path)`,
  `resample(wav, orig_freq=TARGET_SR, new_freq=sr)` (or librosa's `orig_sr=target,
  target_sr=sr`) stretches every clip by TARGET_SR / sr instead of converting it, so speech
  plays at the wrong speed and pitch against its transcript.
- A gain in decibels turned into amplitude with the wrong divisor: `10 ** (gain_db / 2)`
  (amplitude is `10 ** (dB / 20)`, power `10 ** (dB / 10)`) makes a 6 dB augmentation a
  thousandfold boost.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import kwarg, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_TARGET_RATE = re.compile(r"(?i)target|desired|model_s(r|ample)|expected|wanted")
_LOADED_RATE = re.compile(r"(?i)^(sr|fs|rate|sample_rate|sampling_rate|orig_sr|orig_fs|"
                          r"file_sr|in_sr|src_sr|native_sr)$")
_DECIBEL = re.compile(r"(?i)(^|_)db($|_)|gain|decibel")
_RESAMPLE_KEYS = (("orig_freq", "new_freq"), ("orig_sr", "target_sr"))


def _name(node: ast.expr | None) -> str:
    return last_attr(node) if isinstance(node, (ast.Name, ast.Attribute)) else ""


def _swapped_rates(call: ast.Call) -> str:
    for source_key, dest_key in _RESAMPLE_KEYS:
        source, dest = _name(kwarg(call, source_key)), _name(kwarg(call, dest_key))
        fixed = bool(_TARGET_RATE.search(source)) or (source.isupper() and "RATE" in source) or (
            source in ("SR", "FS"))  # (a module constant: SAMPLE_RATE, SR)
        if source and dest and fixed and _LOADED_RATE.match(dest):
            return f"{source_key}={source}, {dest_key}={dest}"
    return ""


def _wrong_decibel_divisor(node: ast.BinOp) -> str:
    """`10 ** (gain / 2)` -> "2" ('' for 20, 10 or anything not a dB name)."""
    if not (isinstance(node.op, ast.Pow) and literal(node.left) in (10, 10.0)
            and isinstance(node.right, ast.BinOp) and isinstance(node.right.op, ast.Div)):
        return ""
    divisor = literal(node.right.right)
    name = _name(node.right.left)
    if (isinstance(divisor, (int, float)) and not isinstance(divisor, bool)
            and divisor not in (10, 20, 10.0, 20.0) and name and _DECIBEL.search(name)):
        return str(divisor)
    return ""


class SignalConversions(Check):
    rules = (DATA_POISON,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if "resample" not in last_attr(node.func).lower():
            return
        swapped = _swapped_rates(node)
        if swapped:
            ctx.report(DATA_POISON, node, f"resample({swapped}): the rates are swapped, so "
                       "every clip is stretched instead of converted and no longer matches "
                       "its label", severity=Severity.MEDIUM)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        self._decibels(node.value, ctx)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        self._decibels(node.value, ctx)

    @staticmethod
    def _decibels(value: ast.expr | None, ctx: Ctx) -> None:
        # (gated on the file's words: most files never convert decibels)
        if value is None or not ctx.mentions("**") or not (
                ctx.mentions("gain") or ctx.mentions("_db") or ctx.mentions("db_")):
            return
        for node in subnodes(value):
            if isinstance(node, ast.BinOp) and (divisor := _wrong_decibel_divisor(node)):
                ctx.report(DATA_POISON, node, f"{ast.unparse(node)[:40]}: decibels become an "
                           f"amplitude through / 20 (power / 10), not / {divisor}: the gain "
                           "is far larger than intended", severity=Severity.MEDIUM)
                return
