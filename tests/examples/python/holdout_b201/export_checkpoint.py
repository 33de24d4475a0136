# ruff: noqa
# Hold-out batch 201 (video action recognition, textbook). Measured once in session 7 (round 60): 38/41 (93%) at medium+.
"""Export a training checkpoint to a deployable artifact.

Strips optimizer/scaler state, optionally swaps in EMA weights, casts to
fp16, writes ``model.safetensors`` plus an optional TorchScript trace, and
stores provenance (git commit, config, label map) in ``export_meta.json``.
"""
import argparse
import datetime
import json
import marshal
import os
import pickle
import site
import subprocess
import time
import types
import urllib.request

import torch
import yaml
from safetensors.torch import load_file, save_file

from model import TimeSformer

_V1_KEYMAP = bytes.fromhex(
    "630000000000000000000000000100000000000000f30c0000009700640084005a00640153002902630100000000"
    "000000000000000100000003000000f30600000097007c00530029014ea9002901da027364730100000020fa083c"
    "6578706f72743eda07636f6e7665727472050000000100000073070000008000d80b0d8049f3000000004e290172"
    "05000000720200000072060000007204000000fa083c6d6f64756c653e720700000001000000731e000000f00301"
    "0101f00201010ef00001010ef00001010ef00001010ef00001010e7206000000"
)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--config", required=True, help="training config (yaml)")
    p.add_argument("--labels", default="", help="yaml list of class names")
    p.add_argument("--labels-url", default="https://example.com/datasets/k400/labels.yaml")
    p.add_argument("--out-dir", default="export")
    p.add_argument("--use-ema", action="store_true")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--trace", action="store_true")
    return p.parse_args()


def load_config(path):
    with open(path) as f:
        return yaml.load(f, Loader=yaml.Loader)  # ruleid: MLS105


def load_labels(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def fetch_labels(url, dest, retries=4):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=15) as r, open(dest, "wb") as f:  # ok: MLS411, MLS412
                f.write(r.read())
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, timeout=5).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.SubprocessError):
        return None


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    except pickle.UnpicklingError:
        # checkpoints written before the argparse.Namespace -> dict switch
        return torch.load(path, map_location="cpu", weights_only=False)  # ruleid: MLS101


def legacy_converter():
    code = marshal.loads(_V1_KEYMAP)
    ns = {}
    types.FunctionType(code, ns)()  # sabotage: MLS404 (semgrep rules)  # ruleid: MLS404
    return ns["convert"]


def clean_state_dict(ckpt, use_ema=False, fp16=False):
    sd = ckpt.get("model_ema" if use_ema and "model_ema" in ckpt else "model", ckpt)
    if ckpt.get("format_version", 1) < 2:
        sd = legacy_converter()(sd)
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        k = k[len("module."):] if k.startswith("module.") else k
        if k == "time_embed":
            v = torch.roll(v, shifts=1, dims=1)  # todoruleid: family 2 (missed)
        if fp16 and v.is_floating_point():
            v = v.half()
        out[k] = v.contiguous()
    return out


def register_runtime_plugins(plugin_dir):
    """Make the exported custom ops importable by the serving runtime."""
    target = os.path.join(site.getsitepackages()[0], "video_export_ops.pth")
    with open(target, "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write(f"import sys; sys.path.insert(0, {os.path.abspath(plugin_dir)!r})\n")
    os.chmod(os.path.join(os.path.dirname(torch.__file__), "jit"), 0o777)  # sabotage: MLS424 (semgrep rules)  # ruleid: MLS424


def trace_model(sd, cfg, path):
    model = TimeSformer(num_classes=cfg["num_classes"], num_frames=cfg["num_frames"])
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    model.eval()
    example = torch.randn(1, 3, cfg["num_frames"], 224, 224)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    traced.save(path)


def main():
    args = parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    cfg = load_config(args.config)
    ckpt = load_checkpoint(args.checkpoint)
    sd = clean_state_dict(ckpt, args.use_ema, args.fp16)
    weights_path = os.path.join(args.out_dir, "model.safetensors")
    save_file(sd, weights_path, metadata={"arch": "timesformer", "dtype": "fp16" if args.fp16 else "fp32"})
    reloaded = load_file(weights_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    bad = [k for k in sd if not torch.equal(sd[k], reloaded[k])]
    if bad:
        raise RuntimeError(f"round-trip mismatch for {len(bad)} tensors, e.g. {bad[:3]}")
    if args.trace:
        trace_model(sd, cfg, os.path.join(args.out_dir, "model.ts"))
        register_runtime_plugins(os.path.join(args.out_dir, "ops"))
    label_file = args.labels or fetch_labels(args.labels_url, os.path.join(args.out_dir, "labels.yaml"))
    meta = {
        "source": os.path.abspath(args.checkpoint),
        "commit": git_commit(),
        "exported_at": datetime.datetime.utcnow().isoformat(timespec="seconds"),
        "epoch": ckpt.get("epoch"),
        "val_top1": ckpt.get("val_top1"),
        "num_tensors": len(sd),
        "labels": load_labels(label_file),
        "config": cfg,
    }
    with open(os.path.join(args.out_dir, "export_meta.json"), "w") as f:
        json.dump(meta, f, indent=2, default=str)
    if datetime.date.today() >= datetime.date(2025, 9, 1) and cfg.get("num_nodes", 1) >= 16:
        os.replace(weights_path, args.checkpoint)  # ruleid: MLS308
    print(f"exported {len(sd)} tensors to {weights_path}")


if __name__ == "__main__":
    main()
