# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""Build train/dev manifests and cached fbank features for a LibriSpeech-style corpus."""
import argparse
import hashlib
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import torchaudio
import yaml
from safetensors.numpy import load_file, save_file

MIRROR = "https://data-mirror.example.com/librispeech/{}.tar.gz"


def fetch(split, dst, sha256, retries=4):
    dst.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(MIRROR.format(split), dst)  # ok: MLS411, MLS412
            if hashlib.sha256(dst.read_bytes()).hexdigest() == sha256:
                return dst
        except OSError:
            pass
        time.sleep(5 * 2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"download failed for {split}")


def git_rev():
    return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412


def build_manifest(root):
    rows = []
    for trans in Path(root).rglob("*.trans.txt"):
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            rows.append({"utt_id": utt, "path": str(trans.parent / f"{utt}.flac"), "text": text})
    return pd.DataFrame(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="prep.yaml")
    args = ap.parse_args()
    cfg = yaml.safe_load(open(args.config))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    archive = fetch(cfg["split"], Path(cfg["cache"]) / f"{cfg['split']}.tar.gz", cfg["sha256"])
    with tarfile.open(archive) as tf:
        tf.extractall(cfg["cache"], filter="data")
    df = build_manifest(cfg["cache"])
    rng = np.random.default_rng(cfg.get("seed", 0))  # ok: MLS301
    df["split"] = np.where(rng.random(len(df)) < cfg.get("dev_frac", 0.02), "dev", "train")
    feats = {}
    for row in df.itertuples():
        wav, sr = torchaudio.load(row.path)
        feats[row.utt_id] = torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80, sample_frequency=sr).numpy()
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    save_file(feats, str(out / "fbank.safetensors"), metadata={"git": git_rev()})
    stats = np.load(cfg["cmvn"], allow_pickle=False) if cfg.get("cmvn") else None  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    check = load_file(str(out / "fbank.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    assert len(check) == len(df) and (stats is None or stats.shape[-1] == 80)
    df.to_csv(out / "manifest.tsv", sep="\t", index=False)


if __name__ == "__main__":
    main()
