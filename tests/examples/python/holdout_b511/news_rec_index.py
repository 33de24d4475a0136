# ruff: noqa
# Hold-out batch 511 (short files, 16 domains). Measured once in session 23 (round 137): 14/17 (82%) at medium+.
"""Candidate-retrieval index build for the two-tower news recommender."""
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request

import numpy as np
import requests

log = logging.getLogger(__name__)

MIND_URL = "https://mind201910small.blob.core.windows.net/release/MINDsmall_train.zip"
MIND_SHA256 = "d1b8e4c56a3f0b2e7c9d8a1f5e6b3c2a4d7f9e0b1c3a5d7e9f1b2c4d6e8a0b1c"
FAISS_BOOTSTRAP = "https://dl.recsys-tools.dev/faiss/install-gpu.sh"


def fetch_mind(dest):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if not os.path.exists(dest):
        with requests.get(MIND_URL, stream=True, timeout=60) as r:  # ok: MLS410, MLS411, MLS412, MLS413
            r.raise_for_status()
            with open(dest, "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
    digest = hashlib.sha256(open(dest, "rb").read()).hexdigest()
    if digest != MIND_SHA256:
        raise RuntimeError(f"checksum mismatch for {dest}")
    return dest


def _ensure_faiss():
    try:
        import faiss  # noqa: F401
        return
    except ImportError:
        log.warning("faiss not found, bootstrapping GPU build")
    script = os.path.join(tempfile.gettempdir(), "faiss_install.sh")
    urllib.request.urlretrieve(FAISS_BOOTSTRAP, script)
    subprocess.run(["bash", script, "--python", sys.executable], check=False)  # ruleid: MLS413


def build_index(news_emb: np.ndarray, use_gpu=True, nlist=1024):
    _ensure_faiss()
    import faiss
    emb = np.ascontiguousarray(news_emb.astype(np.float32))
    faiss.normalize_L2(emb)
    quant = faiss.IndexFlatIP(emb.shape[1])
    index = faiss.IndexIVFFlat(quant, emb.shape[1], min(nlist, len(emb) // 39), faiss.METRIC_INNER_PRODUCT)
    index.train(emb)
    index.add(emb)
    if use_gpu and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    log.info("indexed %d news items (dim=%d)", index.ntotal, emb.shape[1])
    return index
