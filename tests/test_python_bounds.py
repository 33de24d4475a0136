"""The Python analyzer ends in bounded time on code shaped to make value flow fan out."""

from __future__ import annotations

import subprocess
import sys
import time


def _recursive_collate(calls: int) -> str:
    """torch's `collate(batch, collate_fn_map=...)`: a function that passes its parameter to
    itself from many call sites and calls through it as a table (`table[kind](...)`)."""
    lines = ["import torch", "", "def collate(batch, *, collate_fn_map=None):",
             "    kind = type(batch[0])",
             "    if kind in collate_fn_map:",
             "        return collate_fn_map[kind](batch, collate_fn_map=collate_fn_map)"]
    for i in range(calls):
        lines.append(f"    if len(batch) == {i}:")
        lines.append("        return [collate(s, collate_fn_map=collate_fn_map) for s in batch]")
    lines += ["", "TABLE = {}", "", "def default_collate(batch):",
              "    return collate(batch, collate_fn_map=TABLE)", ""]
    return "\n".join(lines)


def test_recursive_parameter_flow_is_bounded() -> None:
    """In a subprocess with a timeout, so that a regression fails instead of hanging."""
    code = ("import sys; from mlscan.analyzers.python_code import analyze_text; "
            "analyze_text(sys.stdin.read(), 'collate.py')")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], input=_recursive_collate(40),
                          text=True, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - start < 10.0


def test_folded_escape_strings_in_fstrings_do_not_break_the_analyzer() -> None:
    """A module table of ANSI codes read inside an f-string (`f"{PALETTE['bold']}..."`) is
    folded to a constant; the analyzer must still unparse the statement (no MLS903)."""
    from mlscan.analyzers.python_code import analyze_text

    text = "\n".join([
        "import torch",
        'PALETTE = {"bold": "\\x1b[1m", "reset": "\\x1b[0m"}',
        "",
        "def report(model, name):",
        "    prelude = f\"{PALETTE['bold']}{model.__class__.__name__} REPORT{PALETTE['reset']} {name}\"",
        "    state = torch.load(name)",
        "    return prelude, state",
        ""])
    findings = analyze_text(text, "loading_report.py")
    assert [f.rule_id for f in findings if f.rule_id == "MLS903"] == []


_SELF_MAPPING = '''
import json
import torch


def encode(prompts, parse):
    prompts = [p if isinstance(c, str) else json.dumps(c) for p, c in zip(prompts, map(parse, prompts))]
    return prompts
'''


def test_a_mapped_comprehension_that_maps_itself_is_bounded() -> None:
    """`prompts = [... for p, c in zip(prompts, map(parse, prompts))]`: the comprehension
    `prompts` is bound to holds the map over `prompts`, so each made-up call for a mapped element
    held the same map again (this once ran until memory ran out)."""
    code = ("import sys; from mlscan.analyzers.python_code import analyze_text; "
            "analyze_text(sys.stdin.read(), 'caption.py')")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], input=_SELF_MAPPING,
                          text=True, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - start < 10.0
