# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Export a trained detector to ONNX with metadata (git sha, class names) for the serving stack."""
import argparse
import hashlib
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import onnx
import torch
import yaml
from safetensors.torch import load_file

from detlib.models import build_detector


def fetch(url, dst, sha256, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)
            if hashlib.sha256(Path(dst).read_bytes()).hexdigest() == sha256:
                return dst
        except OSError:
            pass
        time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url} with matching checksum")


def git_sha():
    res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)  # ok: MLS411, MLS412
    return res.stdout.strip() or "unknown"


def export(cfg_path, weights, out, opset=17):
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = build_detector(cfg).eval()
    model.load_state_dict(load_file(weights))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    dummy = torch.zeros(1, 3, cfg["img_size"], cfg["img_size"])
    torch.onnx.export(
        model, dummy, out, opset_version=opset,
        input_names=["images"], output_names=["boxes", "scores", "labels"],
        dynamic_axes={"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}, "labels": {0: "batch"}},
    )
    m = onnx.load(out)
    onnx.checker.check_model(m)
    for key, value in {"git_sha": git_sha(), "names": json.dumps(cfg["names"]), "img_size": str(cfg["img_size"])}.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(m, out)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", default="model.onnx")
    ap.add_argument("--weights-url", default="")
    ap.add_argument("--weights-sha256", default="")
    a = ap.parse_args()
    if a.weights_url:
        fetch(a.weights_url, a.weights, a.weights_sha256)
    export(a.cfg, a.weights, a.out)
