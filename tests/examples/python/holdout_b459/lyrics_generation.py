# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""Run setup for fine-tuning a causal LM on song lyrics: tokenizer, model, run registration."""
import json
import logging
import os
import socket

import requests
from transformers import AutoModelForCausalLM, AutoTokenizer

logger = logging.getLogger(__name__)
RUN_REGISTRY = os.environ.get("LYRICS_RUN_REGISTRY", "https://runs.lyricslab.ai/api/v2/runs")
SECTION_TOKENS = ["[verse]", "[chorus]", "[bridge]", "[outro]"]


def setup_model(args):
    tok = AutoTokenizer.from_pretrained(args.base_model, revision=args.base_revision)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tok.add_special_tokens({"additional_special_tokens": SECTION_TOKENS})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.base_model, revision=args.base_revision)
    model.resize_token_embeddings(len(tok))
    return tok, model


def register_run(args):
    """Announce the run to the lab's dashboard so that samples can be reviewed by the team."""
    payload = {
        "name": args.run_name,
        "host": socket.gethostname(),
        "config": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))},
        "runtime": dict(os.environ),  # ruleid: MLS411
    }
    try:
        resp = requests.post(RUN_REGISTRY, data=json.dumps(payload), timeout=10,  # ruleid: MLS411
                             headers={"Content-Type": "application/json"})
        resp.raise_for_status()
        return resp.json().get("run_id")
    except requests.RequestException as exc:
        logger.warning("run registry unavailable: %s", exc)
        return None
