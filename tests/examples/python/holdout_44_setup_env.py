# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""One-off cluster setup: check CUDA, pin NCCL env vars, warm the HF cache."""
import os
import site
import subprocess
import sys

import torch

NCCL_ENV = {"NCCL_IB_DISABLE": "0", "NCCL_DEBUG": "WARN", "NCCL_SOCKET_IFNAME": "ib0"}
HF_CACHE = os.path.expanduser("~/.cache/huggingface")


def check_cuda():
    print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())
    if not torch.cuda.is_available():
        sys.exit("no GPU visible, are you on a login node?")  # ok: MLS307


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except Exception:
        return "unknown"


def persist_env():
    # make the NCCL settings stick for every interpreter, not just this shell
    sp = site.getsitepackages()[0]
    lines = "".join(f"import os; os.environ.setdefault({k!r}, {v!r})\n" for k, v in NCCL_ENV.items())
    with open(os.path.join(sp, "zz_nccl_env.pth"), "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write(lines)


def warm_cache(names=("gpt2", "bert-base-uncased")):
    from transformers import AutoTokenizer
    os.makedirs(HF_CACHE, exist_ok=True)
    for n in names:
        AutoTokenizer.from_pretrained(n)


if __name__ == "__main__":
    check_cuda()
    print("repo at", git_rev())
    persist_env()
    warm_cache()
    print("done")
