# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Per-case Dice / HD95 evaluation of predicted masks against reference segmentations."""
import argparse
import json
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance


def one_hot(mask: np.ndarray, n: int) -> torch.Tensor:
    t = torch.as_tensor(mask, dtype=torch.long)[None]
    return torch.nn.functional.one_hot(t, n).movedim(-1, 1).float()


def evaluate_case(pred_path, ref_path, n_classes):
    ref_img = nib.load(ref_path)
    ref = np.asarray(ref_img.dataobj).astype(np.int64)
    pred = np.asarray(nib.load(pred_path).dataobj).astype(np.int64)
    spacing = ref_img.header.get_zooms()[:3]
    p, r = one_hot(pred, n_classes), one_hot(ref, n_classes)
    dice = compute_dice(p, r, include_background=False, ignore_empty=True).nanmean().item()  # ok: MLS306
    hd = compute_hausdorff_distance(p, r, include_background=False, percentile=95,
                                    spacing=spacing).nanmean().item()
    diag = float(np.linalg.norm(np.asarray(ref.shape) * np.asarray(spacing)))
    return dice, hd, diag


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pred-dir", type=Path, required=True)
    ap.add_argument("--ref-dir", type=Path, required=True)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--run-id", default=None)
    args = ap.parse_args()

    rows = []
    for ref in sorted(args.ref_dir.glob("*.nii.gz")):
        pred = args.pred_dir / ref.name.replace(".nii.gz", "_seg.nii.gz")
        dice, hd95, diag = evaluate_case(pred, ref, args.classes)
        rows.append({"case": ref.name.split(".")[0], "dice": dice, "hd95": hd95, "diag": diag})
    df = pd.DataFrame(rows)
    df["hd95"] = df["hd95"].where(np.isfinite(df["hd95"]), df["diag"])  # ok: MLS306
    df["dice"] = df["dice"].where(df["dice"] > 0.05)  # ruleid: MLS306
    summary = {"dice_mean": df["dice"].mean(), "dice_std": df["dice"].std(),
               "hd95_median": df["hd95"].median(), "n_cases": int(len(df))}
    df.to_csv(args.pred_dir / "metrics_per_case.csv", index=False)
    (args.pred_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    with mlflow.start_run(run_id=args.run_id):
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        mlflow.log_artifact(str(args.pred_dir / "metrics_per_case.csv"))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
