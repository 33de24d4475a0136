# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Evaluate a self-supervised MOS predictor on a listening-test CSV; reports MSE, LCC and SRCC per system."""
import argparse
import subprocess

import pandas as pd
import torch
import torchaudio
import wandb
import yaml
from scipy.stats import pearsonr, spearmanr
from transformers import AutoFeatureExtractor, AutoModel


class MOSHead(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.proj = torch.nn.Linear(backbone.config.hidden_size, 1)

    def forward(self, inputs):
        h = self.backbone(**inputs).last_hidden_state.mean(1)
        return self.proj(h).squeeze(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/mos_eval.yaml")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    fe = AutoFeatureExtractor.from_pretrained(cfg["backbone"])
    model = MOSHead(AutoModel.from_pretrained(cfg["backbone"], revision=cfg["revision"]))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.proj.load_state_dict(torch.load(cfg["head_ckpt"], map_location="cpu", weights_only=True))
    model = model.cuda().eval()

    df = pd.read_csv(cfg["test_csv"])  # columns: wav, system, mos
    preds = []
    with torch.inference_mode():
        for path in df["wav"]:
            wav, sr = torchaudio.load(path)
            wav = torchaudio.functional.resample(wav.mean(0), sr, 16000)
            inputs = {k: v.cuda() for k, v in fe(wav.numpy(), sampling_rate=16000, return_tensors="pt").items()}
            preds.append(model(inputs).item())
    df["pred"] = pd.Series(preds).clip(1.0, 5.0)  # ok: MLS306

    sys_df = df.groupby("system")[["mos", "pred"]].mean()
    metrics = {
        "utt/mse": float(((df["pred"] - df["mos"]) ** 2).mean()),
        "utt/lcc": pearsonr(df["pred"], df["mos"])[0],
        "utt/srcc": spearmanr(df["pred"], df["mos"])[0],
        "sys/lcc": pearsonr(sys_df["pred"], sys_df["mos"])[0],
        "sys/srcc": spearmanr(sys_df["pred"], sys_df["mos"])[0],
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    run = wandb.init(project="mos-eval", config={**cfg, "commit": commit}, job_type="eval")
    wandb.log(metrics)  # ok: MLS306
    run.finish()
    print(sys_df.sort_values("pred", ascending=False).to_string())


if __name__ == "__main__":
    main()
