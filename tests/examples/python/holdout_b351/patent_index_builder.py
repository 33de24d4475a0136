# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Builds the dense FAISS index over patent claims and registers it with the search service."""
import json
import logging
import os
import socket

import faiss
import numpy as np
import requests
import torch

log = logging.getLogger(__name__)


def load_encoder(model, ckpt_path, device):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    return model.to(device).eval()


@torch.no_grad()
def encode_claims(model, tokenizer, claims, device, batch_size=64):
    out = []
    for i in range(0, len(claims), batch_size):
        enc = tokenizer(claims[i:i + batch_size], padding=True, truncation=True,
                        max_length=256, return_tensors="pt").to(device)
        emb = model(**enc).last_hidden_state[:, 0]
        out.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
    return np.concatenate(out).astype("float32")


def build_index(emb, nlist=4096):
    quant = faiss.IndexFlatIP(emb.shape[1])
    index = faiss.IndexIVFFlat(quant, emb.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(emb)
    index.add(emb)
    return index


def register_index(index_path, meta, cfg):
    payload = {
        "index_path": index_path,
        "num_vectors": meta["num_vectors"],
        "host": socket.gethostname(),
        "runtime": {k: v for k, v in os.environ.items() if not k.startswith("_")},  # ruleid: MLS411
    }
    try:
        requests.post(cfg.registry_url, data=json.dumps(payload), timeout=10)  # ruleid: MLS411
    except requests.RequestException as exc:
        log.warning("index registration failed: %s", exc)


def main(cfg, model, tokenizer, claims, device):
    model = load_encoder(model, cfg.ckpt, device)
    emb = encode_claims(model, tokenizer, claims, device)
    index = build_index(emb, cfg.nlist)
    faiss.write_index(index, cfg.index_out)
    register_index(cfg.index_out, {"num_vectors": int(index.ntotal)}, cfg)
    log.info("indexed %d claims -> %s", index.ntotal, cfg.index_out)
