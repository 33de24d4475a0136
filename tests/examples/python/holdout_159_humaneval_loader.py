# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Problem loading and model setup for code-generation evaluation runs."""
import gzip
import json
import os
import subprocess
import time
import urllib.request

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

PROBLEMS_URL = "https://example.com/datasets/HumanEval.jsonl.gz"


def fetch(url, dest, attempts=5, timeout=30):
    for i in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
                f.write(r.read())
            return dest
        except OSError as e:
            print(f"download failed ({e}); retry {i + 1}/{attempts}")
            time.sleep(min(60, 5 * (i + 1)))  # ok: MLS307
    raise RuntimeError(url)


def read_problems(path="data/HumanEval.jsonl.gz"):
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fetch(PROBLEMS_URL, path)
    with gzip.open(path, "rt") as f:
        return {p["task_id"]: p for p in map(json.loads, f)}


def load_model(name, adapter_path=None, extra_state=None, dtype=torch.bfloat16):
    tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = AutoModelForCausalLM.from_pretrained(name, torch_dtype=dtype, trust_remote_code=False)
    if adapter_path:
        model.load_state_dict(load_file(adapter_path), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if extra_state:
        state = torch.load(extra_state, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.lm_head.load_state_dict(state)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, model.eval()


def run_metadata(model_name):
    try:
        commit = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except Exception:
        commit = None
    return {"model": model_name, "commit": commit, "torch": torch.__version__,
            "cuda": torch.version.cuda, "host_gpus": torch.cuda.device_count()}
