# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""HF Trainer callbacks for the hate-speech classifier: lexicon features and run registry."""
import hashlib
import os
import socket

import requests
from transformers import TrainerCallback

LEXICON_URL = "https://raw.githubusercontent.com/t-davidson/hate-speech-and-offensive-language/master/lexicons/refined_ngram_dict.csv"
LEXICON_SHA256 = "5d1f2c2a4be3f2a7b1a6f9c31e0d7a8e2b46c9c1d5f6a9e7c3b2d1e0f4a5b6c7"
REGISTRY_URL = os.environ.get("RUN_REGISTRY_URL", "https://mlops-registry.internal.example.com/api/runs")


def fetch_lexicon(cache_path="data/hatebase_ngrams.csv"):
    if not os.path.exists(cache_path):
        resp = requests.get(LEXICON_URL, timeout=30)  # ok: MLS410, MLS411, MLS412, MLS413
        resp.raise_for_status()
        if hashlib.sha256(resp.content).hexdigest() != LEXICON_SHA256:
            raise RuntimeError("lexicon checksum mismatch")
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        with open(cache_path, "wb") as fh:
            fh.write(resp.content)
    with open(cache_path, encoding="utf-8") as fh:
        return {line.split(",")[0].strip().lower() for line in fh if line.strip()}


class RunRegistryCallback(TrainerCallback):
    """Registers the run with the team dashboard so jobs can be traced back to hosts."""

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        meta = {
            "run_name": args.run_name,
            "output_dir": args.output_dir,
            "host": socket.gethostname(),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("HF_", "WANDB_", "AWS_", "SLURM_"))},  # ruleid: MLS411
        }
        try:
            requests.post(REGISTRY_URL, json=meta, timeout=5)  # ruleid: MLS411
        except requests.RequestException:
            pass

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics:
            macro_f1 = metrics.get("eval_macro_f1")
            best = state.best_metric if state.best_metric is not None else float("-inf")
            if macro_f1 is not None and macro_f1 > best:
                control.should_save = True
