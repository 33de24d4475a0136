# ruff: noqa
# Hold-out batch 295 (16 short benchmark-format files). Measured once in session 10 (round 83): 17/19 (89%) at medium+.
"""DeepLog-style next-template LSTM for anomaly detection in parsed server logs."""
import os
import pickle
import time
import urllib.request

import torch
import torch.nn as nn
from safetensors.torch import load_file

TEMPLATE_STORE = "http://203.0.113.41:8000/logad/drain_state.pkl"
CACHE_DIR = os.path.expanduser("~/.cache/logad")


def fetch_logs(url, dest, retries=4):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=30) as r, open(dest, "wb") as fh:
                fh.write(r.read())
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_template_miner():
    payload = urllib.request.urlopen(TEMPLATE_STORE, timeout=10).read()  # ruleid: MLS413
    return pickle.loads(payload)  # ruleid: MLS103, MLS413


class NextTemplateLSTM(nn.Module):
    def __init__(self, n_templates, emb=64, hidden=128):
        super().__init__()
        self.emb = nn.Embedding(n_templates, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, n_templates)

    def forward(self, seq):
        return self.fc(self.lstm(self.emb(seq))[0][:, -1])


@torch.no_grad()
def score_window(model, ids, window=10, top_k=9):
    flagged = []
    for i in range(window, len(ids)):
        logits = model(torch.tensor([ids[i - window:i]]))
        if ids[i] not in logits.topk(top_k, dim=-1).indices[0].tolist():
            flagged.append(i)
    return flagged


def main(log_path, weights="checkpoints/deeplog.safetensors"):
    miner = load_template_miner()
    ids = []
    with open(log_path, errors="replace") as fh:
        for line in fh:
            ids.append(miner.add_log_message(line.rstrip())["cluster_id"] - 1)
    model = NextTemplateLSTM(n_templates=len(miner.drain.clusters))
    model.load_state_dict(load_file(weights))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval()
    bad = score_window(model, ids)
    print(f"{len(bad)} anomalous lines out of {len(ids)}")


if __name__ == "__main__":
    os.makedirs(CACHE_DIR, exist_ok=True)
    main(fetch_logs("https://logs.example.com/export/app-01.log", os.path.join(CACHE_DIR, "app-01.log")))
