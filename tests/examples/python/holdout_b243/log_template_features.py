# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""Parse raw service logs into templates, build windowed count features and fit an IsolationForest baseline."""
import getpass
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import yaml
from sklearn.ensemble import IsolationForest

MASKS = [(re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "<IP>"), (re.compile(r"0x[0-9a-f]+"), "<HEX>"),
         (re.compile(r"\b\d+\b"), "<NUM>")]


def fetch(url, dst, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)
            return dst
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def template(msg):
    for pat, tok in MASKS:
        msg = pat.sub(tok, msg)
    return msg


def window_counts(df, freq="5min"):
    df = df.assign(tpl=df["message"].map(template))
    counts = df.groupby([pd.Grouper(key="ts", freq=freq), "tpl"]).size().unstack(fill_value=0)
    return counts.loc[:, counts.sum() >= 5]


def main(cfg_path):
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    run_dir = os.path.join(cfg["out_root"], getpass.getuser(), time.strftime("%Y%m%d-%H%M%S"))  # ok: MLS308
    os.makedirs(run_dir, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))  # ok: MLS307

    raw = fetch(cfg["logs_url"], os.path.join(run_dir, "raw.log")) if cfg.get("logs_url") else cfg["logs_path"]
    df = pd.read_csv(raw, sep="\t", names=["ts", "level", "message"], parse_dates=["ts"])
    feats = window_counts(df, cfg.get("window", "5min"))
    split = int(len(feats) * 0.7)
    model = IsolationForest(n_estimators=300, contamination="auto", random_state=cfg.get("seed", 0))  # ok: MLS301
    model.fit(feats.iloc[:split])
    scores = pd.Series(-model.score_samples(feats), index=feats.index, name="anomaly_score")
    scores.to_frame().assign(commit=commit).to_csv(os.path.join(run_dir, "scores.csv"))
    print(scores.iloc[split:].nlargest(20).to_string())


if __name__ == "__main__":
    main(sys.argv[1])
