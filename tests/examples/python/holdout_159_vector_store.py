# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""A small on-disk vector store (FAISS flat/HNSW + JSON metadata) used by the RAG service."""
import json
import os
import stat

import faiss
import numpy as np
import yaml


class VectorStore:
    def __init__(self, root):
        self.root = root
        self.index = None
        self.meta = []

    @classmethod
    def from_config(cls, path):
        with open(path) as f:
            cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        store = cls(cfg["root"])
        store.load()
        return store

    def build(self, embeddings, metadata, hnsw_m=32):
        emb = np.ascontiguousarray(embeddings, dtype="float32")
        faiss.normalize_L2(emb)
        self.index = faiss.IndexHNSWFlat(emb.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = 200
        self.index.add(emb)
        self.meta = list(metadata)

    def save(self):
        os.makedirs(self.root, exist_ok=True)
        idx_path = os.path.join(self.root, "index.faiss")
        faiss.write_index(self.index, idx_path)
        os.chmod(idx_path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # benign look-alike
        with open(os.path.join(self.root, "meta.json"), "w") as f:
            json.dump(self.meta, f)

    def load(self):
        self.index = faiss.read_index(os.path.join(self.root, "index.faiss"))
        with open(os.path.join(self.root, "meta.json")) as f:
            self.meta = json.load(f)
        centroids = os.path.join(self.root, "centroids.npy")
        if os.path.exists(centroids):
            self.centroids = np.load(centroids, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    def search(self, queries, k=10, ef_search=128):
        q = np.ascontiguousarray(queries, dtype="float32")
        faiss.normalize_L2(q)
        self.index.hnsw.efSearch = ef_search
        scores, ids = self.index.search(q, k)
        return [[{**self.meta[i], "score": float(s)} for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(scores, ids)]
