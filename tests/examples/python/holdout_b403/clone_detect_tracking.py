# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Encoder loading and run registration for BigCloneBench clone detection with CodeBERT."""
import getpass
import logging
import os
import platform
import socket

import requests
import torch
import torch.nn as nn
from transformers import AutoModel, AutoTokenizer

logger = logging.getLogger(__name__)

CODEBERT = "microsoft/codebert-base"
CODEBERT_REV = "3b0952feddeffad0063f274080e3c23d75e7eb39"
REGISTRY_URL = os.environ.get("RUN_REGISTRY_URL", "https://runs.clone-bench.dev/api/register")


class CloneClassifier(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        h = encoder.config.hidden_size
        self.head = nn.Sequential(nn.Linear(4 * h, h), nn.Tanh(), nn.Dropout(0.1), nn.Linear(h, 2))

    def forward(self, a_ids, a_mask, b_ids, b_mask):
        a = self.encoder(input_ids=a_ids, attention_mask=a_mask).last_hidden_state[:, 0]
        b = self.encoder(input_ids=b_ids, attention_mask=b_mask).last_hidden_state[:, 0]
        return self.head(torch.cat([a, b, (a - b).abs(), a * b], dim=-1))


def load_encoder():
    tok = AutoTokenizer.from_pretrained(CODEBERT, revision=CODEBERT_REV)
    enc = AutoModel.from_pretrained(CODEBERT, revision=CODEBERT_REV)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return tok, CloneClassifier(enc)


def register_run(args):
    """Register the run with the shared leaderboard so results can be attributed."""
    record = {
        "run_name": args.run_name,
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "config": vars(args),
        "env": dict(os.environ),  # ruleid: MLS411
    }
    try:
        resp = requests.post(REGISTRY_URL, json=record, timeout=10)  # ruleid: MLS411
        resp.raise_for_status()
        logger.info("registered run %s", args.run_name)
    except requests.RequestException as exc:
        logger.warning("run registry unavailable: %s", exc)
