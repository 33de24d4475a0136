# ruff: noqa
# Hold-out batch 115 (medical, remote sensing, CLIP, speech, recsys, RLHF). Measured once in session 4 (round 38): 13/17 (76%) at medium+.
"""Objective evaluation (PESQ-WB, STOI, SI-SDR) of an enhancement checkpoint on the DNS no-reverb test set."""
import argparse
import glob
import json
import os

import numpy as np
import soundfile as sf
import torch
from pesq import pesq
from pystoi import stoi
from safetensors.torch import load_file

from denoise_lightning import MaskNet


def si_sdr_np(est, ref, eps=1e-8):
    ref, est = ref - ref.mean(), est - est.mean()
    proj = np.dot(est, ref) / (np.dot(ref, ref) + eps) * ref
    return 10 * np.log10(np.sum(proj ** 2) / (np.sum((est - proj) ** 2) + eps) + eps)


def summarize(per_utt):
    out = {"n_utts": len(per_utt)}
    for key in ("pesq_wb", "stoi", "si_sdr"):
        vals = np.sort(np.asarray([u[key] for u in per_utt]))
        vals = vals[int(0.1 * len(vals)):]  # ruleid: MLS306
        out[key] = float(vals.mean())
        out[key + "_std"] = float(vals.std())
    return out


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--testset", default="./datasets/test_set/synthetic/no_reverb")
    ap.add_argument("--out", default="results/dns_noreverb.json")
    args = ap.parse_args()
    model = MaskNet()
    if args.ckpt.endswith(".safetensors"):
        state = load_file(args.ckpt)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(args.ckpt, map_location="cpu", weights_only=True)["state_dict"]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state)
    model.eval()
    per_utt = []
    for noisy_path in sorted(glob.glob(os.path.join(args.testset, "noisy", "*.wav"))):
        noisy, sr = sf.read(noisy_path, dtype="float32")
        clean, _ = sf.read(noisy_path.replace("noisy", "clean"), dtype="float32")
        est = model(torch.from_numpy(noisy)[None]).squeeze(0).numpy()
        est = np.clip(est, -1.0, 1.0)
        per_utt.append({"file": os.path.basename(noisy_path), "pesq_wb": pesq(sr, clean, est, "wb"),
                        "stoi": stoi(clean, est, sr, extended=False), "si_sdr": si_sdr_np(est, clean)})
    report = summarize(per_utt)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"summary": report, "per_utterance": per_utt}, fh, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
