# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Build an IVF-PQ faiss index over image embeddings and report recall@k against exact search."""
import argparse
import os
import time
import urllib.request

import faiss
import numpy as np
from safetensors.numpy import load_file


def fetch(url, dst, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)
            return dst
        except OSError:
            time.sleep(5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def recall_at_k(approx_ids, exact_ids, k):
    hits = [len(set(a[:k]) & set(e[:1])) for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--emb", required=True)
    p.add_argument("--queries", default=None)
    p.add_argument("--nlist", type=int, default=4096)
    p.add_argument("--m", type=int, default=64)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", default="index.faiss")
    args = p.parse_args()

    if args.emb.startswith("https://"):
        args.emb = fetch(args.emb, os.path.basename(args.emb))
    if args.emb.endswith(".safetensors"):
        xb = load_file(args.emb)["embeddings"].astype(np.float32)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        xb = np.load(args.emb, allow_pickle=False).astype(np.float32)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    faiss.normalize_L2(xb)
    rng = np.random.default_rng(args.seed)  # ok: MLS301
    train = xb[rng.choice(len(xb), size=min(len(xb), 256 * args.nlist), replace=False)]

    quant = faiss.IndexFlatIP(xb.shape[1])
    index = faiss.IndexIVFPQ(quant, xb.shape[1], args.nlist, args.m, 8, faiss.METRIC_INNER_PRODUCT)
    index.seed = args.seed
    index.train(train)
    index.add(xb)
    index.nprobe = 32

    xq = xb[rng.choice(len(xb), 1000, replace=False)] if args.queries is None else \
        np.load(args.queries, allow_pickle=False).astype(np.float32)
    faiss.normalize_L2(xq)
    _, exact = faiss.knn(xq, xb, 1, faiss.METRIC_INNER_PRODUCT)
    _, approx = index.search(xq, 10)
    for k in (1, 5, 10):
        print(f"recall@{k}: {recall_at_k(approx, exact, k):.4f}")
    faiss.write_index(index, args.out)


if __name__ == "__main__":
    main()
