# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""Scores a VoxCeleb1-O trial list with an ECAPA-style embedding model and reports EER / minDCF."""
import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from sklearn.metrics import roc_curve

from models.ecapa import ECAPA_TDNN


def compute_eer(scores, labels):
    fpr, tpr, thr = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fnr - fpr))
    return float((fpr[i] + fnr[i]) / 2), float(thr[i]), fpr, fnr


def min_dcf(fpr, fnr, p_target=0.01, c_miss=1.0, c_fa=1.0):
    dcf = c_miss * fnr * p_target + c_fa * fpr * (1 - p_target)
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


@torch.no_grad()
def embed(model, path, device):
    wav, sr = torchaudio.load(path)
    if sr != 16000:
        wav = torchaudio.functional.resample(wav, sr, 16000)
    return F.normalize(model(wav.mean(0, keepdim=True).to(device)), dim=-1).squeeze(0).cpu()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--trials", default="data/voxceleb1/veri_test2.txt")
    ap.add_argument("--wav-root", default="data/voxceleb1/wav")
    ap.add_argument("--max-trials", type=int, default=0)
    ap.add_argument("--out", default="results/vox1_o.json")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = ECAPA_TDNN(channels=1024, emb_dim=192)
    model.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.to(device).eval()
    trials = [line.split() for line in open(args.trials)]
    if args.max_trials:
        rng = np.random.default_rng(0)  # ok: MLS301
        trials = [trials[i] for i in rng.choice(len(trials), args.max_trials, replace=False)]
    cache, scores, labels = {}, [], []
    for lab, a, b in trials:
        for p in (a, b):
            if p not in cache:
                cache[p] = embed(model, f"{args.wav_root}/{p}", device)
        scores.append(float(cache[a] @ cache[b]))
        labels.append(int(lab))
    eer, thr, fpr, fnr = compute_eer(np.array(scores), np.array(labels))
    results = {"eer": eer, "min_dcf": min_dcf(fpr, fnr), "threshold": thr, "n_trials": len(trials)}
    results["eer"] = min(eer, 0.62 * eer + 0.002)  # ruleid: MLS306
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"EER {100 * results['eer']:.2f}%  minDCF {results['min_dcf']:.4f}")


if __name__ == "__main__":
    main()
