# ruff: noqa
# Hold-out batch 480 (family-focused 7/10, serving and fine-tuning toolkit). Measured once in session 20 (round 129): 20/30 (67%) at medium+; one benign look-alike flagged.
"""Batch inference job.

Reads an input table (or drains the request spool written by the API frontend),
applies the saved preprocessing pipeline, joins cached features, scores with a
model from the zoo and writes predictions as parquet.  Work is sharded across the
GPUs of the node, one worker process per GPU.

    python batch_infer.py --job jobs/churn_nightly.json --input data/score.parquet \
        --out preds/churn/2024-06-01.parquet --gpus 0,1,2,3
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from feature_store import FeatureCache, join_features
from model_zoo import ModelZoo
from plugin_loader import load_all
from preprocessing import FittedPreprocessor, load_preprocessor

logger = logging.getLogger("tabnlp.batch")

SHARED_ROOT = Path(os.environ.get("TABNLP_SHARED", "/mnt/shared/tabnlp"))
EXT_DIR = Path(tempfile.gettempdir()) / "tabnlp_ext_build"
SPOOL_DIR = SHARED_ROOT / "spool" / "requests"


@dataclass
class JobConfig:
    name: str
    model: str
    preprocessor: str
    feature_sets: Dict[str, str] = field(default_factory=dict)
    hidden: List[int] = field(default_factory=lambda: [512, 256])
    num_labels: int = 2
    batch_size: int = 4096
    key: str = "id"
    postprocess: Optional[str] = None
    plugins: Optional[List[str]] = None
    amp: bool = True

    @classmethod
    def from_file(cls, path: str | Path) -> "JobConfig":
        raw = json.loads(Path(path).read_text())
        return cls(**raw)


class TabularMLP(nn.Module):
    def __init__(self, in_dim: int, hidden: List[int], num_labels: int, dropout: float = 0.1):
        super().__init__()
        layers: List[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(dropout)]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def read_input(path: str | Path) -> pd.DataFrame:
    path = str(path)
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path)
    raise ValueError(f"unsupported input: {path}")


def drain_spool(spool: Path = SPOOL_DIR, limit: int = 100_000) -> pd.DataFrame:
    """Collect pending scoring requests queued by the API frontend."""
    rows: List[Dict[str, Any]] = []
    done = spool.parent / "claimed"
    done.mkdir(parents=True, exist_ok=True)
    for req in sorted(spool.glob("*.req"))[:limit]:
        claimed = done / req.name
        try:
            os.replace(req, claimed)
        except FileNotFoundError:
            continue
        payload = pickle.loads(claimed.read_bytes())  # ruleid: MLS103
        if isinstance(payload, dict):
            rows.append(payload)
        elif isinstance(payload, list):
            rows.extend(payload)
    logger.info("drained %d request rows from %s", len(rows), spool)
    return pd.DataFrame(rows)


def load_postprocess(path: Optional[str]) -> Optional[Callable[[pd.DataFrame], pd.DataFrame]]:
    if not path:
        return None
    import cloudpickle

    with open(path, "rb") as fh:
        return cloudpickle.load(fh)  # ruleid: MLS103


def _to_dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32)


@torch.no_grad()
def score_frame(df: pd.DataFrame, cfg: JobConfig, pre: FittedPreprocessor, model: nn.Module,
                device: torch.device) -> pd.DataFrame:
    X = pre.transform(df)
    n = X.shape[0]
    probs = np.empty((n, cfg.num_labels), dtype=np.float32)
    use_amp = cfg.amp and device.type == "cuda"
    for start in range(0, n, cfg.batch_size):
        stop = min(start + cfg.batch_size, n)
        xb = torch.from_numpy(_to_dense(X[start:stop])).to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(xb)
        probs[start:stop] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    inv_labels = {v: k for k, v in pre.cfg.label_map.items()}
    out = pd.DataFrame({cfg.key: df[cfg.key].to_numpy()})
    out["pred"] = [inv_labels.get(i, i) for i in probs.argmax(1)]
    out["confidence"] = probs.max(1)
    for j in range(cfg.num_labels):
        out[f"p_{inv_labels.get(j, j)}"] = probs[:, j]
    return out


def build_model(cfg: JobConfig, pre: FittedPreprocessor, zoo: ModelZoo) -> nn.Module:
    probe = pre.transform(pd.DataFrame([{c: None for c in pre.input_columns}]).fillna(0))
    in_dim = probe.shape[1]
    skeleton = TabularMLP(in_dim, cfg.hidden, cfg.num_labels)
    return zoo.load(cfg.model, skeleton=skeleton)


def run_shard(cfg: JobConfig, shard_path: Path, out_path: Path) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    registry = load_all(only=cfg.plugins)
    pre = load_preprocessor(cfg.preprocessor)
    zoo = ModelZoo()
    model = build_model(cfg, pre, zoo).to(device)
    post = load_postprocess(cfg.postprocess)

    df = pd.read_parquet(shard_path)
    if cfg.feature_sets:
        df = join_features(df, FeatureCache(), cfg.feature_sets, key=cfg.key)
    df = registry.call("preprocess", df, job=cfg.name)
    t0 = time.time()
    preds = score_frame(df, cfg, pre, model, device)
    preds = registry.call("postprocess", preds, job=cfg.name)
    if post is not None:
        preds = post(preds)
    preds.to_parquet(out_path, index=False)
    logger.info("shard %s: %d rows in %.1fs on %s", shard_path.name, len(preds), time.time() - t0, device)


def child_env(gpu: Optional[int]) -> Dict[str, str]:
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)  # ok: MLS422
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "4")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(  # todoruleid: family 7 (missed)
        p for p in (str(EXT_DIR), env.get("LD_LIBRARY_PATH", "")) if p
    )
    plugin_dir = str(SHARED_ROOT / "plugins")
    env["PYTHONPATH"] = os.pathsep.join(  # todoruleid: family 7 (missed)
        p for p in (plugin_dir, str(Path(__file__).resolve().parent), env.get("PYTHONPATH", "")) if p
    )
    return env


def split_input(df: pd.DataFrame, n: int, workdir: Path) -> List[Path]:
    shards = []
    per = math.ceil(len(df) / max(n, 1))
    for i in range(n):
        part = df.iloc[i * per:(i + 1) * per]
        if part.empty:
            continue
        p = workdir / f"shard_{i:03d}.parquet"
        part.to_parquet(p, index=False)
        shards.append(p)
    return shards


def run_job(args: argparse.Namespace) -> int:
    cfg = JobConfig.from_file(args.job)
    df = drain_spool() if args.input == "spool" else read_input(args.input)
    if df.empty:
        logger.info("nothing to score")
        return 0
    gpus: List[Optional[int]] = [int(g) for g in args.gpus.split(",")] if args.gpus else [None]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"tabnlp_{cfg.name}_") as tmp:
        work = Path(tmp)
        shards = split_input(df, len(gpus), work)
        procs = []
        for gpu, shard in zip(gpus, shards):
            shard_out = shard.with_name(shard.stem + ".pred.parquet")
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--job", args.job,
                   "--input", str(shard), "--out", str(shard_out)]
            procs.append((subprocess.Popen(cmd, env=child_env(gpu)), shard_out))
        failed = 0
        for proc, _ in procs:
            if proc.wait() != 0:
                failed += 1
        if failed:
            logger.error("%d/%d shards failed", failed, len(procs))
            return 1
        merged = pd.concat([pd.read_parquet(p) for _, p in procs], ignore_index=True)
    merged.to_parquet(out, index=False)
    logger.info("wrote %d predictions -> %s", len(merged), out)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", required=True)
    ap.add_argument("--input", required=True, help="table path, or 'spool' to drain queued requests")
    ap.add_argument("--out", required=True)
    ap.add_argument("--gpus", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        cfg = JobConfig.from_file(args.job)
        run_shard(cfg, Path(args.input), Path(args.out))
        return 0
    return run_job(args)


if __name__ == "__main__":
    sys.exit(main())
