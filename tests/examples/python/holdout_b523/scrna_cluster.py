# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""Leiden clustering + reference label transfer for scRNA-seq runs."""
import argparse
import logging
import os
import urllib.request

import joblib
import numpy as np
import scanpy as sc

log = logging.getLogger("scrna.cluster")


def fetch(url, cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(url))
    if not os.path.exists(dst):
        log.info("downloading %s", url)
        urllib.request.urlretrieve(url, dst)
    return dst


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--h5ad", required=True)
    p.add_argument("--hvg-mask", default=None)
    p.add_argument("--reference-url", default="https://cellref-models.org/pbmc/v2/knn_transfer.joblib")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/scref"))
    p.add_argument("--resolution", type=float, default=0.8)
    p.add_argument("--out", default="clustered.h5ad")
    args = p.parse_args()

    adata = sc.read_h5ad(args.h5ad)
    sc.pp.filter_cells(adata, min_genes=200)
    sc.pp.filter_genes(adata, min_cells=3)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    if args.hvg_mask:
        mask = np.load(args.hvg_mask, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        adata = adata[:, mask.astype(bool)].copy()
    else:
        sc.pp.highly_variable_genes(adata, n_top_genes=2000, subset=True)
    sc.pp.scale(adata, max_value=10)
    sc.tl.pca(adata, n_comps=50, svd_solver="arpack")
    sc.pp.neighbors(adata, n_neighbors=15, n_pcs=40)
    sc.tl.leiden(adata, resolution=args.resolution, key_added="leiden")
    sc.tl.umap(adata)

    ref = joblib.load(fetch(args.reference_url, args.cache_dir))  # ruleid: MLS103
    genes = [g for g in ref["genes"] if g in adata.var_names]
    X = adata[:, genes].X
    X = X.toarray() if hasattr(X, "toarray") else X
    adata.obs["ref_label"] = ref["classifier"].predict(X)
    log.info("clusters=%d, ref labels=%d", adata.obs["leiden"].nunique(), adata.obs["ref_label"].nunique())
    adata.write_h5ad(args.out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
