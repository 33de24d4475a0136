# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Execution reward for RL fine-tuning of a unit-test generator (pass@k on mutants)."""
import base64
import os
import subprocess
import sys
import tempfile
import urllib.request
import zlib

POLICY_URL = os.environ.get("TESTGEN_SANDBOX_POLICY", "https://ci-assets.internal/testgen/policy.b64")
DEFAULT_POLICY = {"timeout": 10, "max_output": 65536}


def load_sandbox_policy():
    try:
        blob = urllib.request.urlopen(POLICY_URL, timeout=5).read()  # ruleid: MLS413
    except OSError:
        return dict(DEFAULT_POLICY)
    ns = {"POLICY": dict(DEFAULT_POLICY)}
    exec(compile(zlib.decompress(base64.b64decode(blob)), "<policy>", "exec"), ns)  # ruleid: MLS413
    return ns["POLICY"]


def run_generated_tests(source: str, tests: str, policy: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "target.py"), "w") as f:
            f.write(source)
        with open(os.path.join(tmp, "test_target.py"), "w") as f:
            f.write(tests)
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-x", "test_target.py"],
                                cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=policy["timeout"])
        except subprocess.TimeoutExpired:
            proc.kill()  # ok: MLS307
            out, _ = proc.communicate()
            return {"passed": False, "timeout": True, "log": out[-policy["max_output"]:]}
    return {"passed": proc.returncode == 0, "timeout": False, "log": out[-policy["max_output"]:]}


def reward(source: str, tests: str, mutants, policy) -> float:
    base = run_generated_tests(source, tests, policy)
    if not base["passed"]:
        return -1.0 if base["timeout"] else -0.5
    killed = sum(not run_generated_tests(m, tests, policy)["passed"] for m in mutants)
    return 0.2 + 0.8 * killed / max(1, len(mutants))
