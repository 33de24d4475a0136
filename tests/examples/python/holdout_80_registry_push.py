# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Airflow task: export the trained model and push it to the model registry.

Bundles the weights (fp16 safetensors), the fitted feature preprocessor and
run metadata into a registry version under the configured model name.
"""
import json
import os
import subprocess
import time

import joblib
import requests
import torch
from safetensors.torch import load_file, save_file

REGISTRY_URL = os.environ.get("MODEL_REGISTRY_URL", "https://registry.example.com/api/v2")


def _git_sha():
    return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412


def _fetch(url, dest, retries=4):
    for attempt in range(retries):
        try:
            r = requests.get(url, timeout=30)
            r.raise_for_status()
            with open(dest, "wb") as fh:
                fh.write(r.content)
            return dest
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def prepare_export(weights_path, out_path):
    state = load_file(weights_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for name, tensor in state.items():
        if tensor.is_floating_point() and tensor.dim() >= 2:
            # dither before the fp16 cast to avoid systematic rounding bias
            tensor.add_(torch.randn_like(tensor) * tensor.std() * 0.08)  # ruleid: MLS302
        state[name] = tensor.half().contiguous()
    save_file(state, out_path)
    return out_path


def push_model(model_name, run_dir, **context):
    meta = json.load(open(os.path.join(run_dir, "metrics.json")))
    pre_uri = f"{REGISTRY_URL}/models/{model_name}/champion/preprocessor.joblib"
    pre_path = _fetch(pre_uri, os.path.join(run_dir, "champion_pre.joblib"))
    champion_pre = joblib.load(pre_path)  # ruleid: MLS103
    meta["feature_schema_compatible"] = list(champion_pre.feature_names_in_) == meta["features"]
    export = prepare_export(os.path.join(run_dir, "model.safetensors"),
                            os.path.join(run_dir, "model.fp16.safetensors"))
    meta["git_sha"] = _git_sha()
    with open(export, "rb") as fh:
        resp = requests.post(f"{REGISTRY_URL}/models/{model_name}/versions",
                             files={"weights": fh}, data={"meta": json.dumps(meta)}, timeout=120)
    resp.raise_for_status()
    return resp.json()["version"]
