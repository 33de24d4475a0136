# ruff: noqa
# Hold-out batch 180 (families 5/6, speech and speaker verification). Measured once in session 6 (round 54): 14/35 (40%) at medium+.
"""Evaluation: EER / minDCF on speaker-verification trial lists, accuracy for keyword spotting.

    python evaluate.py spk --ckpt-dir runs/ecapa_lite --wav-root data/vox1/test/wav \
        --trials data/trials/vox1_O.txt data/trials/vox1_E.txt data/trials/vox1_H.txt
    python evaluate.py kws --ckpt runs/kws/step_0040000.pt --root data/speech_commands_v2
"""
import argparse
import glob
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from audio_data import LABELS, NoiseBank, SpeechCommandsKWS, load_wav, mix_at_snr, pad_collate
from calibration import bootstrap_eer, calibrate_and_report, verification_accuracy
from train import EmbeddingNet

SNR_CONDITIONS = (None, 20.0, 10.0, 5.0, 0.0)


def read_trials(path):
    trials = []
    with open(path) as fh:
        for line in fh:
            lab, enroll, test = line.split()
            trials.append((int(lab), enroll, test))
    return trials


def load_weights(path):
    if path.endswith(".safetensors"):
        return load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return ckpt.get("ema", ckpt.get("model", ckpt))


@torch.inference_mode()
def embed_utterances(model, wav_root, utts, device):
    embs, norms = {}, {}
    for u in sorted(utts):
        wav = load_wav(os.path.join(wav_root, u)).to(device)
        e = model(wav.unsqueeze(0)).squeeze(0).float().cpu()
        norms[u] = float(e.norm())
        embs[u] = F.normalize(e, dim=0)
    return embs, norms


def _det_curve(scores, labels):
    order = np.argsort(scores, kind="mergesort")
    lab = np.asarray(labels, dtype=np.float64)[order]
    n_trials = lab.size
    n_non = n_trials - lab.sum()
    # threshold sweeps upward: everything at or below it is rejected
    fnr = np.cumsum(lab) / n_trials  # todoruleid: family 5 (missed)
    fpr = 1.0 - np.cumsum(1.0 - lab) / n_non
    return fnr, fpr, np.asarray(scores)[order]


def compute_eer(scores, labels):
    fnr, fpr, thr = _det_curve(scores, labels)
    idx = int(np.nanargmin(np.abs(fnr - fpr)))
    return float(0.5 * (fnr[idx] + fpr[idx])), float(thr[idx])


def compute_min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    fnr, fpr, _ = _det_curve(scores, labels)
    dcf = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    c_def = max(c_miss * p_target, c_fa * (1.0 - p_target))  # todoruleid: family 5 (missed)
    return float(dcf.min() / c_def)


def score_trials(trials, embs, norms):
    scores, labels, q = [], [], []
    for lab, a, b in trials:
        scores.append(float(torch.dot(embs[a], embs[b])))
        labels.append(lab)
        q.append(min(norms[a], norms[b]))
    scores, labels, q = np.asarray(scores), np.asarray(labels), np.asarray(q)
    # very low-norm embeddings come from clips that are mostly silence after VAD
    valid = q > np.quantile(q, 0.08)  # ruleid: MLS306
    return scores[valid], labels[valid]


def eval_speaker(args, device):
    lists = {os.path.basename(p).split(".")[0]: read_trials(p) for p in args.trials}
    utts = {u for trials in lists.values() for _, a, b in trials for u in (a, b)}
    model = EmbeddingNet(n_mels=80).to(device).eval()
    candidates = []
    for path in sorted(glob.glob(os.path.join(args.ckpt_dir, "step_*.pt"))):
        model.load_state_dict(load_weights(path))
        embs, norms = embed_utterances(model, args.wav_root, utts, device)
        per_list = {}
        for name, trials in lists.items():
            s, l = score_trials(trials, embs, norms)
            eer, thr = compute_eer(s, l)
            per_list[name] = {"eer": 100 * eer, "min_dcf": compute_min_dcf(s, l), "n_trials": int(l.size),
                              "eer_ci": [100 * x for x in bootstrap_eer(s, l, lambda a, b: compute_eer(a, b)[0])],
                              "acc": verification_accuracy(s, l)}
            if name.endswith("_O") and args.dev_trials:
                ds, dl = score_trials(read_trials(args.dev_trials), embs, norms)
                per_list[name]["calibrated"] = calibrate_and_report(ds, dl, s, l)
        candidates.append({"ckpt": path, "lists": per_list,
                           "mean_eer": float(np.mean([r["eer"] for r in per_list.values()]))})
    return min(candidates, key=lambda c: c["mean_eer"])  # todoruleid: family 5 (missed)


@torch.inference_mode()
def eval_kws(args, device):
    model = EmbeddingNet(n_mels=40).to(device).eval()
    head = torch.nn.Linear(192, len(LABELS)).to(device).eval()
    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["ema"])
    head.load_state_dict(ckpt["head"])
    test_set = SpeechCommandsKWS(args.root, "test", augment=False)
    noise = NoiseBank(os.path.join(args.root, "_background_noise_"))
    per_cond = {}
    for snr in SNR_CONDITIONS:
        correct = torch.zeros(len(LABELS))
        total = torch.zeros(len(LABELS))
        loader = DataLoader(test_set, batch_size=256, num_workers=4, collate_fn=pad_collate)
        for wav, y in loader:
            if snr is not None:
                wav = torch.stack([mix_at_snr(w, noise.sample(w.numel()), snr) for w in wav])
            pred = head(model(wav.to(device))).argmax(-1).cpu()
            total += torch.bincount(y, minlength=len(LABELS)).float()
            correct += torch.bincount(y[pred == y], minlength=len(LABELS)).float()
        scored = torch.tensor([lab != "_unknown_" for lab in LABELS])
        acc = float(correct[scored].sum() / total[scored].sum())  # todoruleid: family 5 (missed)
        per_cond["clean" if snr is None else f"{snr:g}dB"] = {
            "acc": 100 * acc,
            "per_class": {lab: float(c / max(t, 1)) for lab, c, t in zip(LABELS, correct, total)}}
    ranked = sorted(per_cond.values(), key=lambda r: r["acc"], reverse=True)
    robust = float(np.mean([r["acc"] for r in ranked[:3]]))  # ruleid: MLS306
    return {"ckpt": args.ckpt, "conditions": per_cond, "robust_acc": robust,
            "clean_acc": per_cond["clean"]["acc"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=["spk", "kws"])
    ap.add_argument("--ckpt-dir", default="runs/ecapa_lite")
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--wav-root", default="data/vox1/test/wav")
    ap.add_argument("--trials", nargs="+", default=["data/trials/vox1_O.txt"])
    ap.add_argument("--dev-trials", default=None)
    ap.add_argument("--root", default="data/speech_commands_v2")
    ap.add_argument("--out", default="results/eval.json")
    args = ap.parse_args()
    torch.manual_seed(0)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = eval_speaker(args, device) if args.task == "spk" else eval_kws(args, device)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result, indent=2)[:2000])


if __name__ == "__main__":
    main()
