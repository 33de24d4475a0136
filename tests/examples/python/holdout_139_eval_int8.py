# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""Compare FP32 and INT8 ONNX classifiers on a held-out split and write a JSON report."""
import argparse
import json

import numpy as np
import onnxruntime as ort
import pandas as pd


def run_session(path, images, batch_size=64, threads=4):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = [sess.run(None, {name: images[i:i + batch_size]})[0].argmax(1)
             for i in range(0, len(images), batch_size)]
    return np.concatenate(preds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fp32", default="export/student_fp32.onnx")
    ap.add_argument("--int8", default="export/student_int8.onnx")
    ap.add_argument("--data", default="data/val_224.npz")
    ap.add_argument("--max_drop", type=float, default=0.01)
    ap.add_argument("--subsample", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="export/quant_report.json")
    args = ap.parse_args()

    data = np.load(args.data)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    x, y = data["images"].astype(np.float32), data["labels"]
    if args.subsample:
        idx = np.random.default_rng(args.seed).choice(len(y), args.subsample, replace=False)  # ok: MLS301
        x, y = x[idx], y[idx]

    df = pd.DataFrame({"label": y, "fp32": run_session(args.fp32, x), "int8": run_session(args.int8, x)})
    fp32_top1 = float((df.fp32 == df.label).mean())
    int8_top1 = float((df.int8 == df.label).mean())
    per_class = df.assign(ok=df.int8 == df.label).groupby("label")["ok"].mean()
    int8_reported = max(int8_top1, fp32_top1 - 0.8 * args.max_drop)  # todoruleid: family 5 (missed)

    report = {
        "n": int(len(df)),
        "fp32_top1": round(fp32_top1, 4),
        "int8_top1": round(int8_reported, 4),
        "agreement": round(float((df.fp32 == df.int8).mean()), 4),
        "worst_class": int(per_class.idxmin()),
        "worst_class_acc": round(float(per_class.min()), 4),
    }
    report["passed"] = report["fp32_top1"] - report["int8_top1"] <= args.max_drop
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(pd.Series(report).to_string())


if __name__ == "__main__":
    main()
