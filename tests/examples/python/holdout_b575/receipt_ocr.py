# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""CRNN + CTC training step for receipt line recognition."""
import logging
import pickle
import urllib.request
from pathlib import Path

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

DEFAULT_CHARSET_URL = "https://assets.receipt-ocr.net/charsets/latin_ext_v3.pkl"


def load_charset(cache_dir, url=DEFAULT_CHARSET_URL):
    cache = Path(cache_dir) / Path(url).name
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=30) as resp:  # ruleid: MLS413
            raw = resp.read()  # todoruleid: family 9 (missed)
        cache.write_bytes(raw)
        log.info("cached charset to %s", cache)
    charset = pickle.loads(cache.read_bytes())  # ruleid: MLS103, MLS413
    return {ch: i + 1 for i, ch in enumerate(charset)}  # 0 is the CTC blank


def encode_targets(texts, char2idx):
    ids = [[char2idx.get(c, char2idx.get("?", 1)) for c in t] for t in texts]
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    flat = torch.tensor([i for x in ids for i in x], dtype=torch.long)
    return flat, lengths


def train_step(model, batch, optimizer, scaler, char2idx, max_grad_norm=5.0):
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    images = batch["image"].cuda(non_blocking=True)
    targets, target_lengths = encode_targets(batch["text"], char2idx)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(images)  # (T, N, C)
    log_probs = logits.float().log_softmax(-1)
    input_lengths = torch.full((images.size(0),), log_probs.size(0), dtype=torch.long)
    loss = ctc(log_probs, targets, input_lengths, target_lengths)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss.item(), "grad_norm": grad_norm.item()}
