# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Build a nearest-neighbour index of paper embeddings for citation recommendation."""
import argparse
import os
import pickle

import faiss
import numpy as np
import torch

from model import SpecterStyleEncoder


def load_encoder(ckpt_path, device):
    enc = SpecterStyleEncoder()
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    enc.load_state_dict(state["model"])
    return enc.to(device).eval()


def load_corpus_cache(cache_path):
    with open(cache_path, "rb") as fh:
        return pickle.load(fh)  # ruleid: MLS103


@torch.no_grad()
def embed(encoder, papers, tokenizer, device, bs=128):
    out = []
    for i in range(0, len(papers), bs):
        chunk = papers[i:i + bs]
        texts = [p["title"] + tokenizer.sep_token + (p.get("abstract") or "") for p in chunk]
        batch = tokenizer(texts, padding=True, truncation=True, max_length=256,
                          return_tensors="pt").to(device)
        out.append(encoder(**batch).float().cpu())
    return torch.nn.functional.normalize(torch.cat(out), dim=-1).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--corpus-cache", required=True, help="cached parsed S2ORC corpus")
    ap.add_argument("--out", default="index")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = load_encoder(args.ckpt, device)
    corpus = load_corpus_cache(args.corpus_cache)
    vecs = embed(encoder, corpus["papers"], corpus["tokenizer"], device)

    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs.astype(np.float32))
    os.makedirs(args.out, exist_ok=True)
    faiss.write_index(index, os.path.join(args.out, "papers.faiss"))
    np.save(os.path.join(args.out, "paper_ids.npy"), np.array([p["id"] for p in corpus["papers"]]))


if __name__ == "__main__":
    main()
