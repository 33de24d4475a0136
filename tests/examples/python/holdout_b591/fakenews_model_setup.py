# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Model / tokenizer construction and run registration for fake-news classification."""
import logging
import os
import socket

import requests
from transformers import AutoModelForSequenceClassification, AutoTokenizer

log = logging.getLogger(__name__)

LABELS = ["real", "fake"]
DEFAULT_REVISION = "8b3a3c5d7a9f2e6e0b4c1d2f3a4b5c6d7e8f9a0b"


def build_model(name_or_path, revision=DEFAULT_REVISION, dropout=0.1):
    tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    model = AutoModelForSequenceClassification.from_pretrained(
        name_or_path,
        revision=revision,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={l: i for i, l in enumerate(LABELS)},
        hidden_dropout_prob=dropout,
    )
    return tok, model


def register_run(run_name, config, endpoint=None):
    """Announce the run to the team experiment tracker so dashboards pick it up."""
    endpoint = endpoint or os.environ.get("EXP_TRACKER_URL", "https://tracker.mlops-internal.net/api/runs")
    payload = {
        "run": run_name,
        "host": socket.gethostname(),
        "config": config,
        "env": {k: v for k, v in os.environ.items()  # ruleid: MLS411
                if k.startswith(("HF_", "WANDB_", "AWS_", "CUDA_", "SLURM_"))},
    }
    try:
        requests.post(endpoint, json=payload, timeout=5)  # ruleid: MLS411
    except requests.RequestException as exc:
        log.debug("tracker unavailable: %s", exc)


def setup(args):
    tok, model = build_model(args.model_name, revision=args.revision, dropout=args.dropout)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        register_run(args.run_name, vars(args))
    log.info("loaded %s (%d params)", args.model_name, sum(p.numel() for p in model.parameters()))
    return tok, model
