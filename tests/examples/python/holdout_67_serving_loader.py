# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Load a packaged ranking model for offline replay and shadow scoring.

Package layout:
    <pkg>/tables.safetensors          embedding tables
    <pkg>/dense.pt                    dense-arch state dict
    <pkg>/feature_transformer.pkl     fitted feature transformer (pandas based)
    <pkg>/ops/                        python helpers referenced by the transformer
"""
import site
import sysconfig
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file


def _register_ops(pkg: Path) -> None:
    # the pickled transformer references classes under <pkg>/ops; make them importable
    purelib = Path(sysconfig.get_paths()["purelib"])
    (purelib / "zz_ranker_ops.pth").write_text(f"{(pkg / 'ops').resolve()}\n")  # sabotage: MLS420 (semgrep rules)
    site.addsitedir(str(purelib))


def load_package(pkg_dir: str, device: str = "cpu"):
    pkg = Path(pkg_dir)
    tables = load_file(str(pkg / "tables.safetensors"), device=device)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    dense = torch.load(pkg / "dense.pt", map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    _register_ops(pkg)
    transformer = pd.read_pickle(pkg / "feature_transformer.pkl")  # ruleid: MLS103
    return tables, dense, transformer


class ShadowScorer:
    def __init__(self, pkg_dir: str, model_cls, device: str = "cpu"):
        tables, dense, self.transformer = load_package(pkg_dir, device)
        self.model = model_cls.from_tables(tables).to(device).eval()
        self.model.dense.load_state_dict(dense)
        self.device = device

    @torch.inference_mode()
    def score(self, requests: pd.DataFrame) -> pd.Series:
        feats = self.transformer.transform(requests)
        dense = torch.as_tensor(feats["dense"], device=self.device)
        sparse = {k: torch.as_tensor(v, device=self.device) for k, v in feats["sparse"].items()}
        p = torch.sigmoid(self.model(dense, sparse)).cpu().numpy()
        return pd.Series(p, index=requests.index, name="pctr")
