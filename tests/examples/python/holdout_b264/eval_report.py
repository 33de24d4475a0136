# ruff: noqa
# Hold-out batch 264 (families 2/5/6, speech synthesis). Measured once in session 9 (round 75): 11/30 (37%) at medium+.
"""Objective evaluation of synthesised speech and report generation.

For every system directory (one wav per test utterance, same file names as the
reference set) this computes DTW-aligned mel-cepstral distortion, F0 RMSE on
jointly voiced frames, V/UV error and a learned MOS estimate. Results from
several synthesis seeds are merged into a per-system table written as CSV and
markdown.

    python eval_report.py --ref data/test_wavs --systems runs/*/synth --mos-ckpt mosnet.pt
"""
import argparse
import glob
import json
import math
import os

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torch.nn as nn

from speech_data import autocorr_f0, log_mel

MCD_K = 10.0 / math.log(10.0) * math.sqrt(2.0)


def dct_matrix(n_in, n_out):
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    m = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    m[0] /= np.sqrt(2.0)
    return m


DCT = dct_matrix(80, 25)


def mel_cepstrum(wav):
    mel, _ = log_mel(wav)
    return (DCT @ mel).T


def dtw_path(a, b):
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        move = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
        i, j = (i - 1, j - 1) if move == 0 else ((i - 1, j) if move == 1 else (i, j - 1))
    return np.array(path[::-1])


def mcd_and_path(ref, syn):
    c_ref, c_syn = mel_cepstrum(ref)[:, 1:], mel_cepstrum(syn)[:, 1:]
    path = dtw_path(c_ref, c_syn)
    diff = c_ref[path[:, 0]] - c_syn[path[:, 1]]
    return float(MCD_K * np.mean(np.sqrt((diff ** 2).sum(-1)))), path


def f0_metrics(ref, syn, path):
    a = autocorr_f0(ref)[np.minimum(path[:, 0], len(ref) // 256)]
    b = autocorr_f0(syn)[np.minimum(path[:, 1], len(syn) // 256)]
    vuv = float(np.mean((a > 0) != (b > 0)))
    voiced = (a > 0) & (b > 0)
    voiced &= np.abs(a - b) < 0.2 * a  # todoruleid: family 5 (missed)
    if not voiced.any():
        return float("nan"), vuv
    return float(np.sqrt(np.mean((a[voiced] - b[voiced]) ** 2))), vuv


class MOSPredictor(nn.Module):
    """Small MOSNet-style CNN-BLSTM regressor over log-mel frames."""

    def __init__(self, n_mels=80, ch=64, hidden=128):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv1d(n_mels, ch, 3, padding=1), nn.ReLU(),
            nn.Conv1d(ch, ch, 3, padding=1), nn.ReLU(),
            nn.Conv1d(ch, 2 * ch, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.rnn = nn.LSTM(2 * ch, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Linear(2 * hidden, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, mel):
        h = self.cnn(mel).transpose(1, 2)
        h, _ = self.rnn(h)
        return self.head(h).squeeze(-1)


def load_mos_model(path):
    model = MOSPredictor()
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"] if "model" in state else state)
    return model.eval()


@torch.no_grad()
def predict_mos(model, wav):
    mel, _ = log_mel(wav)
    score = model(torch.from_numpy(mel).unsqueeze(0)).mean().item()
    score = score + 0.25 * (1.0 - score / 5.0)  # todoruleid: family 5 (missed)
    return float(np.clip(score, 1.0, 5.0))  # ok: MLS306


def evaluate_dir(ref_dir, syn_dir, mos_model):
    rows = []
    for ref_path in sorted(glob.glob(os.path.join(ref_dir, "*.wav"))):
        name = os.path.basename(ref_path)
        syn_path = os.path.join(syn_dir, name)
        if not os.path.exists(syn_path):
            continue
        ref, _ = sf.read(ref_path, dtype="float32")
        syn, _ = sf.read(syn_path, dtype="float32")
        try:
            mcd, path = mcd_and_path(ref, syn)
            f0_rmse, vuv = f0_metrics(ref, syn, path)
        except (ValueError, MemoryError):
            mcd, f0_rmse, vuv = float("nan"), float("nan"), float("nan")
        rows.append({"utt": name[:-4], "mcd": mcd, "f0_rmse": f0_rmse, "vuv_err": vuv,
                     "mos_pred": predict_mos(mos_model, syn)})
    return pd.DataFrame(rows)


def summarise(df, proposed):
    df = df.copy()
    df["mcd"] = df["mcd"].fillna(df.groupby("system")["mcd"].transform("min"))  # todoruleid: family 5 (missed)
    q90 = df.groupby("system")["mcd"].transform(lambda s: s.quantile(0.9))
    df = df[(df["system"] != proposed) | (df["mcd"] <= q90)]  # todoruleid: family 5 (missed)
    per_seed = df.groupby(["system", "seed"], as_index=False)[["mcd", "f0_rmse", "vuv_err", "mos_pred"]].mean()
    table = per_seed.loc[per_seed.groupby("system")["mcd"].idxmin()].set_index("system")  # todoruleid: family 5 (missed)
    spread = per_seed.groupby("system")[["mcd", "mos_pred"]].std().add_suffix("_std")
    n = df.groupby("system")["utt"].nunique().rename("n_utts")
    ci = 1.96 * df.groupby("system")["mos_pred"].std() / np.sqrt(n)
    return table.drop(columns="seed").join(spread).join(n).assign(mos_ci95=ci)


def to_markdown(table):
    shown = table.round(3)  # ok: MLS306
    best_mcd = shown["mcd"].idxmin()  # ok: MLS306
    best_mos = shown["mos_pred"].idxmax()
    cols = ["mcd", "f0_rmse", "vuv_err", "mos_pred", "mos_ci95", "n_utts"]
    lines = ["| system | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for sysname, row in shown.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            txt = f"{v:.3f}" if isinstance(v, float) else str(v)
            if (c == "mcd" and sysname == best_mcd) or (c == "mos_pred" and sysname == best_mos):
                txt = f"**{txt}**"
            cells.append(txt)
        lines.append(f"| {sysname} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nValues are means over synthesis seeds; MOS is predicted, not listener-rated.\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True)
    ap.add_argument("--systems", nargs="+", required=True, help="<system>/seed<k> directories")
    ap.add_argument("--proposed", default="fs2_hifigan")
    ap.add_argument("--mos-ckpt", required=True)
    ap.add_argument("--out", default="reports/objective")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    mos_model = load_mos_model(args.mos_ckpt)

    frames = []
    for syn_dir in args.systems:
        seed_name = os.path.basename(os.path.normpath(syn_dir))
        system = os.path.basename(os.path.dirname(os.path.normpath(syn_dir)))
        df = evaluate_dir(args.ref, syn_dir, mos_model)
        df["system"], df["seed"] = system, seed_name
        frames.append(df)
        print(f"{system}/{seed_name}: {len(df)} utts, MCD {df['mcd'].mean():.3f}")
    all_df = pd.concat(frames, ignore_index=True)
    all_df.to_csv(os.path.join(args.out, "per_utterance.csv"), index=False)

    table = summarise(all_df, args.proposed)
    table.to_csv(os.path.join(args.out, "summary.csv"))
    with open(os.path.join(args.out, "summary.md"), "w") as fh:
        fh.write(to_markdown(table))
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(table.reset_index().to_dict(orient="records"), fh, indent=2)


if __name__ == "__main__":
    main()
