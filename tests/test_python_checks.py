"""The training-code analyzer: every MLS1xx/MLS3xx rule fires on exactly its annotated lines.

Examples live in tests/examples/python/: `# ruleid: MLS301` / `# ok: MLS301` on the line before
each case (a trailing `# ruleid:` comment on a code line marks that line).
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import re
from pathlib import Path

import pytest

from mlscan.analyzers.base import Source, scan_source
from mlscan.analyzers.python_code import analyze_text
from mlscan.checks import triggers
from mlscan.checks.base import ALL
from mlscan.checks.names import Names
from mlscan.context import Budget, Limits, Settings
from mlscan.kinds import Kind
from mlscan.model import Finding, Severity

EXAMPLES = Path(__file__).parent / "examples" / "python"
FILES = sorted(EXAMPLES.rglob("*.py"))
"""Hold-out batches from session 6 on keep their own folder (`holdout_b161/`): configuration
declared in one file of a batch is read by the others, as in the measured directory."""


def example_name(path: Path) -> str:
    return path.relative_to(EXAMPLES).as_posix()
ANNOTATION = re.compile(r"#\s*(ruleid|ok):\s*(MLS\d{3}(?:\s*,\s*MLS\d{3})*)")
RULES = sorted({rule.code: rule for check in ALL for rule in check.rules}.values(),
               key=lambda r: r.code)
CODES = [rule.code for rule in RULES]


def annotations(path: Path) -> tuple[set[tuple[str, str, int]], set[tuple[str, str, int]]]:
    """(expected hits, expected quiet lines) as (code, file name, line)."""
    hits: set[tuple[str, str, int]] = set()
    oks: set[tuple[str, str, int]] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = ANNOTATION.search(line)
        if not match:
            continue
        target = number if line.split("#", 1)[0].strip() else number + 1
        for code in re.split(r"\s*,\s*", match.group(2)):
            (hits if match.group(1) == "ruleid" else oks).add((code, example_name(path), target))
    return hits, oks


def _findings() -> list[Finding]:
    out: list[Finding] = []
    for path in FILES:  # (the real path: neighbouring config files are read)
        out.extend(dataclasses.replace(f, path=example_name(path))
                   for f in analyze_text(path.read_text(), str(path)))
    return out


FINDINGS = _findings()
EXPECTED = set().union(*(annotations(p)[0] for p in FILES))
QUIET = set().union(*(annotations(p)[1] for p in FILES))


@pytest.mark.parametrize("code", CODES)
def test_rule_fires_on_exactly_the_annotated_lines(code: str) -> None:
    got = {(f.rule_id, f.path, f.line) for f in FINDINGS if f.rule_id == code}
    expected = {e for e in EXPECTED if e[0] == code}
    assert sorted(expected - got) == [], "missed"
    assert sorted(got - expected) == [], "fired where not annotated"


@pytest.mark.parametrize("code", CODES)
def test_rule_has_bad_and_good_examples(code: str) -> None:
    assert any(e[0] == code for e in EXPECTED), f"{code} has no `# ruleid:` example"
    assert any(e[0] == code for e in QUIET), f"{code} has no `# ok:` example"


def test_no_finding_of_an_unknown_rule() -> None:
    assert {f.rule_id for f in FINDINGS} <= set(CODES)


@pytest.mark.parametrize("rule", RULES, ids=CODES)
def test_rule_is_documented(rule: object) -> None:
    from mlscan.model import Rule

    assert isinstance(rule, Rule)
    assert re.fullmatch(r"MLS[134]\d\d", rule.code)  # MLS411/412 shared with semgrep
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.name)
    doc = rule.doc
    assert doc.what and doc.why and doc.example and doc.use_instead and doc.references


@pytest.mark.parametrize("name", [example_name(p) for p in FILES if p.name.startswith("benign_")])
def test_benign_training_scripts_have_nothing_at_medium_or_above(name: str) -> None:
    serious = [f for f in FINDINGS if f.path == name and f.severity.rank >= Severity.MEDIUM.rank]
    assert serious == []


def test_three_line_sabotage_in_ddp_script_is_found_on_its_line() -> None:
    text = (EXAMPLES / "ddp_sabotage.py").read_text()
    assert len(text.splitlines()) >= 200
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "p.grad.mul_(-1.0)" in s)
    hits = [f for f in FINDINGS if f.path == "ddp_sabotage.py"]
    assert [(f.rule_id, f.line, f.severity) for f in hits] == [("MLS302", line, Severity.HIGH)]
    assert "world size" in hits[0].message and "random" in hits[0].message


# -- name resolution and trigger classification --------------------------------------------

def _names(code: str) -> Names:
    names = Names()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.add_import(node)
    return names


@pytest.mark.parametrize(("imports", "expr", "expected"), [
    ("import torch as t", "t.manual_seed", "torch.manual_seed"),
    ("from torch import optim", "optim.SGD.step", "torch.optim.SGD.step"),
    ("import torch.nn.functional as F", "F.relu", "torch.nn.functional.relu"),
    ("import torch.distributed", "torch.distributed.barrier", "torch.distributed.barrier"),
    ("from datetime import datetime", "datetime.now().hour", "datetime.datetime.now().hour"),
    ("", "model.load_state_dict", "model.load_state_dict"),
])
def test_names_resolve_imports_and_aliases(imports: str, expr: str, expected: str) -> None:
    node = ast.parse(expr, mode="eval").body
    assert _names(imports).qualname(node) == expected


@pytest.mark.parametrize(("condition", "kinds"), [
    ("random.random() < 0.01", {triggers.RANDOM}),
    ("dist.get_world_size() > 256", {triggers.WORLD}),
    ("dist.get_world_size() > 1", set()),
    ("int(os.environ['WORLD_SIZE']) >= 512", {triggers.WORLD}),
    ("time.time() - start > limit", set()),
    ("time.time() > 1767225600", {triggers.TIME}),
    ("datetime.datetime.now().weekday() == 4", {triggers.TIME}),
    ("socket.gethostname() == 'node7'", {triggers.HOST}),
    ("getpass.getuser() in ('alice',)", {triggers.USER}),
    ("args.local_rank in [-1, 0]", {triggers.RANK}),
    ("step % 100 == 0", set()),
])
def test_trigger_classification(condition: str, kinds: set[str]) -> None:
    names = _names("import random, os, time, socket, getpass, datetime\n"
                   "import torch.distributed as dist")
    assert set(triggers.classify(ast.parse(condition, mode="eval").body, names)) == kinds


# -- the analyzer as the engine runs it ------------------------------------------------------

def _scan(data: bytes, name: str, kind: Kind, limits: Limits | None = None) -> list[Finding]:
    src = Source(stream=io.BytesIO(data), path=name, name=name, size=len(data))
    budget = Budget(Settings(limits=limits or Limits()))
    return list(scan_source(src, budget, kind=kind))


def test_syntax_error_is_a_malformed_finding_naming_the_file() -> None:
    found = _scan(b"import torch\ndef broken(:\n    torch.load(x)\n", "bad.py", Kind.PYTHON)
    assert [(f.rule_id, f.path) for f in found] == [("MLS901", "bad.py")]
    assert "bad.py" in found[0].message and "line 2" in found[0].message


def test_non_utf8_is_a_malformed_finding() -> None:
    found = _scan(b"import torch\nx = '\xff\xfe'\ntorch.load(p)\n", "latin.py", Kind.PYTHON)
    assert [f.rule_id for f in found] == ["MLS901"]
    assert "UTF-8" in found[0].message


def test_too_large_file_is_a_limit_finding() -> None:
    data = b"import torch\n" + b"x = 1\n" * 200
    found = _scan(data, "big.py", Kind.PYTHON, Limits(max_text_bytes=100))
    assert [f.rule_id for f in found] == ["MLS902"]
    assert "big.py" in found[0].message


def test_deeply_nested_code_does_not_crash() -> None:
    data = b"import torch\nx = " + b"(" * 5000 + b"1" + b")" * 5000 + b"\ntorch.load(p)\n"
    found = _scan(data, "deep.py", Kind.PYTHON)
    assert found and all(f.rule_id in ("MLS901", "MLS902", "MLS102") for f in found)


def test_long_flat_expression_is_walked_without_recursion() -> None:
    data = b"import torch\nx = " + b" + ".join([b"a"] * 20000) + b"\ntorch.load(p)\n"
    found = _scan(data, "flat.py", Kind.PYTHON)
    assert [(f.rule_id, f.line) for f in found] in ([("MLS102", 3)], [("MLS902", None)])


def test_file_without_relevant_tokens_is_skipped() -> None:
    assert _scan(b"def add(a, b):\n    return a + b\n", "plain.py", Kind.PYTHON) == []


def test_evidence_is_the_source_line_and_columns_are_one_based() -> None:
    found = analyze_text("import torch\nif 1:\n    m = torch.load(p, weights_only=False)\n", "x.py")
    assert [(f.line, f.column, f.evidence) for f in found] == [
        (3, 9, "m = torch.load(p, weights_only=False)")]


def _notebook(cells: list[tuple[str, str]]) -> bytes:
    return json.dumps({"cells": [{"cell_type": kind, "source": src.splitlines(keepends=True),
                                  "metadata": {}} for kind, src in cells],
                       "nbformat": 4, "nbformat_minor": 5, "metadata": {}}).encode()


def test_notebook_findings_are_cell_relative_and_imports_carry_over() -> None:
    data = _notebook([
        ("markdown", "# Training"),
        ("code", "%matplotlib inline\nimport torch as t\nimport random"),
        ("code", "!pip install foo\nfor p in model.parameters():\n"
                 "    if random.random() < 0.01:\n        p.data.neg_()"),
    ])
    found = _scan(data, "train.ipynb", Kind.NOTEBOOK)
    assert [(f.rule_id, f.member, f.line) for f in found] == [("MLS302", "cell[2]", 4)]


def test_notebook_cell_with_syntax_error_is_reported_and_others_still_scanned() -> None:
    data = _notebook([
        ("code", "import torch\nx = torch.load(p, weights_only=False)"),
        ("code", "def broken(:\n    pass"),
    ])
    found = _scan(data, "nb.ipynb", Kind.NOTEBOOK)
    assert sorted((f.rule_id, f.member) for f in found) == [("MLS101", "cell[0]"),
                                                            ("MLS901", "cell[1]")]


def test_notebook_that_is_not_json_is_malformed() -> None:
    found = _scan(b"{not json torch.load", "x.ipynb", Kind.NOTEBOOK)
    assert [f.rule_id for f in found] == ["MLS901"]
