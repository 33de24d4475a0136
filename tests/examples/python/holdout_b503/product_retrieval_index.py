# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""Gallery indexing and recall@k evaluation for triplet-trained product image embeddings."""
import os
import urllib.request

import numpy as np
import torch
import torch.nn.functional as F

GALLERY_META_URL = "https://storage.googleapis.com/shop-retrieval-assets/gallery_v3_meta.npy"


def load_embedder(model, ckpt_path, device="cuda"):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"] if "model" in state else state)
    return model.to(device).eval()


def fetch_gallery_meta(cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, os.path.basename(GALLERY_META_URL))
    if not os.path.exists(path):
        urllib.request.urlretrieve(GALLERY_META_URL, path)
    meta = np.load(path, allow_pickle=True)  # ruleid: MLS104
    return meta.item() if meta.dtype == object and meta.shape == () else meta


@torch.no_grad()
def embed(model, loader, device="cuda"):
    feats, ids = [], []
    for images, sku in loader:
        z = model(images.to(device, non_blocking=True))
        feats.append(F.normalize(z, dim=-1).cpu())
        ids.append(sku)
    return torch.cat(feats), torch.cat(ids)


def recall_at_k(query_feats, query_ids, gallery_feats, gallery_ids, ks=(1, 5, 10)):
    sims = query_feats @ gallery_feats.T
    topk = sims.topk(max(ks), dim=1).indices
    hits = gallery_ids[topk] == query_ids[:, None]
    return {f"R@{k}": hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def build_index(model, gallery_loader, cache_dir, device="cuda"):
    meta = fetch_gallery_meta(cache_dir)
    feats, ids = embed(model, gallery_loader, device)
    return {"feats": feats, "ids": ids, "meta": meta}
