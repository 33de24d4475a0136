"""The composite GitHub Action: its structure, and its `run:` steps executed locally the way
the runner would (bash -eo pipefail, inputs through env:, GITHUB_OUTPUT/GITHUB_STEP_SUMMARY
files, step outputs feeding later steps and `if:` conditions). The upload step (`uses:`) is
recorded, not run.

The install step really creates a venv and pip-installs this checkout; its dependencies come
from the test interpreter (PIP_NO_DEPS + PYTHONPATH) so the test runs offline.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
STEPS: list[dict[str, Any]] = ACTION["runs"]["steps"]
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())


class Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


def _step(step_id: str) -> dict[str, Any]:
    return next(s for s in STEPS if s.get("id") == step_id)


def test_action_is_composite_with_documented_inputs() -> None:
    assert ACTION["runs"]["using"] == "composite"
    assert ACTION["name"] == "mlscan" and ACTION["description"] and ACTION["branding"]
    for name, spec in ACTION["inputs"].items():
        assert spec.get("description"), name
        assert "default" in spec, name
    assert {"paths", "fail-on", "upload-sarif", "sarif-file"} <= set(ACTION["inputs"])
    for name, spec in ACTION["outputs"].items():
        step_id = re.match(r"\$\{\{ steps\.([\w-]+)\.outputs\.", spec["value"])
        assert step_id and _step(step_id.group(1)), name


def test_inputs_reach_scripts_only_through_env() -> None:
    referenced = set()
    for step in STEPS:
        if "run" in step:
            assert "${{" not in step["run"], f"expression inside run: of {step['name']}"
            assert step["shell"] == "bash"
        for value in (step.get("env") or {}).values():
            referenced.update(re.findall(r"inputs\.([\w-]+)", value))
    assert referenced - {"category"} <= set(ACTION["inputs"])
    unused = set(ACTION["inputs"]) - referenced - {"category", "upload-sarif"}
    assert not unused, f"inputs never passed to a script: {unused}"


def test_install_uses_the_actions_own_checkout_and_upload_follows_scan() -> None:
    install = _step("install")
    assert install["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    assert '"$ACTION_PATH"' in install["run"] and "pip install" in install["run"]
    names = [s.get("uses", s.get("id", "")) for s in STEPS]
    upload = next(i for i, n in enumerate(names) if n.startswith("github/codeql-action/upload"))
    assert names.index("scan") < upload < len(STEPS) - 1
    assert STEPS[upload]["with"]["sarif_file"] == "${{ steps.scan.outputs.sarif-file }}"
    assert STEPS[upload]["if"] == "${{ inputs.upload-sarif == 'true' }}"
    assert STEPS[-1]["if"] == "${{ steps.scan.outputs.exit-code == '1' }}"


@dataclass
class Run:
    """One simulated job: step outcomes, outputs, summary and the upload it asked for."""

    outcomes: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    uploads: list[dict[str, str]] = field(default_factory=list)
    summary: str = ""

    @property
    def failed(self) -> bool:
        return any(code != 0 for code in self.outcomes.values())


class Runner:
    """Executes action.yml's steps like the Actions runner, for a workspace and inputs."""

    def __init__(self, temp: Path, python_venv: Path | None = None) -> None:
        self.temp = temp
        self.venv_python = python_venv

    def evaluate(self, expr: str, inputs: dict[str, str], run: Run) -> str:
        m = re.fullmatch(r"inputs\.([\w-]+)", expr)
        if m:
            return inputs[m.group(1)]
        m = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expr)
        if m:
            return run.outputs.get(m.group(1), {}).get(m.group(2), "")
        if expr == "github.action_path":
            return str(ROOT)
        m = re.fullmatch(r"(.+?) == '(.*)'", expr)
        if m:
            return "true" if self.evaluate(m.group(1), inputs, run) == m.group(2) else "false"
        raise AssertionError(f"expression the test runner does not know: {expr}")

    def substitute(self, text: str, inputs: dict[str, str], run: Run) -> str:
        return EXPR.sub(lambda m: self.evaluate(m.group(1), inputs, run), text)

    def __call__(self, workspace: Path, skip_install: bool = True, **given: str) -> Run:
        inputs = {k: str(v.get("default", "")) for k, v in ACTION["inputs"].items()}
        inputs["python"] = sys.executable
        inputs.update({k.replace("_", "-"): v for k, v in given.items()})
        run = Run()
        summary = self.temp / "step_summary.md"
        summary.write_text("")
        for i, step in enumerate(STEPS):
            sid = step.get("id", f"step{i}")
            cond = step.get("if")
            # No `always()`/`failure()`: a step runs only if every earlier step succeeded.
            if run.failed or (cond and self.substitute(cond, inputs, run) != "true"):
                continue
            if "uses" in step:
                run.uploads.append({k: self.substitute(v, inputs, run)
                                    for k, v in step["with"].items()})
                continue
            if sid == "install" and skip_install:
                assert self.venv_python is not None
                run.outputs[sid], run.outcomes[sid] = {"python": str(self.venv_python)}, 0
                continue
            out_file = self.temp / f"output-{sid}"
            out_file.write_text("")
            script = self.temp / f"{sid}.sh"
            script.write_text(step["run"])
            env = _base_env(self.temp)
            env.update({"GITHUB_OUTPUT": str(out_file), "GITHUB_STEP_SUMMARY": str(summary),
                        "GITHUB_WORKSPACE": str(workspace)})
            env.update({k: self.substitute(v, inputs, run)
                        for k, v in (step.get("env") or {}).items()})
            proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail",
                                   str(script)], cwd=workspace, env=env, capture_output=True,
                                  text=True, timeout=600)
            run.outcomes[sid] = proc.returncode
            run.logs[sid] = proc.stdout + proc.stderr
            run.outputs[sid] = dict(line.split("=", 1) for line in
                                    out_file.read_text().splitlines() if "=" in line)
        run.summary = summary.read_text()
        return run


def _base_env(temp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
    env.update({"RUNNER_TEMP": str(temp), "MLSCAN_NO_CACHE": "1",
                "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PYTHONPATH": sysconfig.get_paths()["purelib"]})
    return env


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """Run the real install step once; later runs reuse the venv it made."""
    temp = tmp_path_factory.mktemp("runner-temp")
    r = Runner(temp)
    workspace = tmp_path_factory.mktemp("empty-workspace")
    first = r(workspace, skip_install=False, upload_sarif="false")
    assert first.outcomes["install"] == 0, first.logs["install"]
    r.venv_python = Path(first.outputs["install"]["python"])
    assert r.venv_python.is_relative_to(temp)
    check = subprocess.run([str(r.venv_python), "-c", "import mlscan; print(mlscan.__file__)"],
                           env=_base_env(temp), capture_output=True, text=True, cwd=temp)
    assert str(temp) in check.stdout  # the venv's own copy of this checkout, not the editable
    return r


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "models").mkdir(parents=True)
    (ws / "src").mkdir()
    (ws / "src" / "train.py").write_text("import torch\nmodel = torch.nn.Linear(2, 2)\n")
    (ws / "models" / "ok.pkl").write_bytes(pickle.dumps({"w": [1.0]}))
    return ws


def test_findings_fail_the_job_after_the_upload(runner: Runner, workspace: Path) -> None:
    (workspace / "models" / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    run = runner(workspace)
    assert run.outcomes["scan"] == 0, run.logs["scan"]  # findings do not stop the upload
    scan = run.outputs["scan"]
    assert scan["exit-code"] == "1" and int(scan["findings"]) >= 1
    assert run.uploads == [{"sarif_file": "mlscan.sarif", "category": "mlscan"}]
    doc = json.loads((workspace / "mlscan.sarif").read_text())
    assert not list(jsonschema.Draft4Validator(SCHEMA).iter_errors(doc))
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in doc["runs"][0]["results"]}
    assert "models/evil.pkl" in uris
    assert "mlscan:" in run.summary and "MLS201" in run.summary
    assert "MLS201" in run.logs["scan"]  # the text report is in the job log
    assert run.outcomes[f"step{len(STEPS) - 1}"] == 1  # the last step fails the job
    assert "finding(s)" in run.logs[f"step{len(STEPS) - 1}"]


def test_clean_workspace_passes(runner: Runner, workspace: Path) -> None:
    run = runner(workspace, upload_sarif="false")
    assert not run.failed, run.logs
    assert run.outputs["scan"]["exit-code"] == "0"
    assert run.outputs["scan"]["findings"] == "0"
    assert run.uploads == []
    assert "0 findings" in run.summary


def test_tool_error_fails_at_once_without_upload(runner: Runner, workspace: Path) -> None:
    run = runner(workspace, fail_on="urgent")
    assert run.outcomes["scan"] == 2
    assert "fail-on" in run.logs["scan"]
    assert run.uploads == []
    assert "sarif-file" not in run.outputs["scan"]


def test_fail_on_never_and_threshold(runner: Runner, workspace: Path) -> None:
    (workspace / "models" / "junk.pt").write_bytes(b"junk")  # MLS901, medium
    assert not runner(workspace, fail_on="never").failed
    assert not runner(workspace).failed  # medium < high
    assert runner(workspace, fail_on="medium").failed


def test_paths_are_split_and_never_evaluated_by_the_shell(runner: Runner,
                                                          workspace: Path) -> None:
    (workspace / "models" / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    marker = workspace / "injected"
    run = runner(workspace, paths=f"src\n  $(touch {marker}) *.md", upload_sarif="false")
    assert not marker.exists()
    assert run.outcomes["scan"] == 2  # the odd paths do not exist: a clear error
    run = runner(workspace, paths="src models", upload_sarif="false")
    assert run.outputs["scan"]["exit-code"] == "1"


def test_config_baseline_and_audit_inputs(runner: Runner, workspace: Path) -> None:
    (workspace / "models" / "junk.pt").write_bytes(b"junk")
    (workspace / "audit.toml").write_text('fail-on = "medium"\n')
    assert runner(workspace, config="audit.toml", upload_sarif="false").failed
    env = {**_base_env(runner.temp)}
    subprocess.run([str(runner.venv_python), "-m", "mlscan", "baseline", "write"],
                   cwd=workspace, env=env, check=True, capture_output=True)
    run = runner(workspace, config="audit.toml", baseline=".mlscan-baseline.json",
                 upload_sarif="false", no_inline_ignores="true")
    assert not run.failed, run.logs
    assert "Suppressed findings (1)" in run.summary


def test_workflows_use_the_action_and_the_ci_script() -> None:
    example = yaml.safe_load((ROOT / ".github/workflows/mlscan.yml").read_text())
    job = example["jobs"]["mlscan"]
    assert job["permissions"]["security-events"] == "write"
    step = next(s for s in job["steps"] if s.get("uses") == "./")
    assert set(step["with"]) <= set(ACTION["inputs"])
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    runs = [s.get("run", "") for s in ci["jobs"]["test"]["steps"]]
    assert "bash .ci/run" in runs
