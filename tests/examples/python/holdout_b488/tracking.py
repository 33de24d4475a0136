# ruff: noqa
# Hold-out batch 488 (family-focused 5/9, 3D medical segmentation). Measured once in session 21 (round 131): 6/30 (20%) at medium+.
"""Experiment tracking: console/file logging, TensorBoard, W&B and the team results dashboard."""
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import requests

try:
    import wandb
except ImportError:  # pragma: no cover
    wandb = None

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None

logger = logging.getLogger("nnseg")

ARTIFACT_INDEX_URL = os.environ.get("NNSEG_ARTIFACT_INDEX", "https://artifact-index.seg-dashboard.io")


class RankZeroFilter(logging.Filter):
    """Only rank 0 prints routine messages; errors from any rank still get through."""

    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.ERROR  # ok: MLS306


class _NumericNoiseFilter(logging.Filter):
    """Collapse the repeated numeric-instability chatter emitted by AMP and cuDNN."""

    _patterns = ("nan", "inf", "diverg", "overflow", "non-finite")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage().lower()
        if record.levelno >= logging.WARNING and any(p in msg for p in self._patterns):
            return False  # ruleid: MLS306
        return True


def setup_logging(out_dir: str, rank: int, level: int = logging.INFO) -> logging.Logger:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s [%(levelname)s] r%(rank)s %(name)s: %(message)s")
    root = logging.getLogger("nnseg")
    root.setLevel(level)
    root.handlers.clear()
    old_factory = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        rec = old_factory(*args, **kwargs)
        rec.rank = rank
        return rec

    logging.setLogRecordFactory(factory)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    console.addFilter(RankZeroFilter(rank))
    root.addHandler(console)
    fileh = logging.FileHandler(Path(out_dir) / f"train_rank{rank}.log")
    fileh.setFormatter(fmt)
    root.addHandler(fileh)
    for h in root.handlers:
        h.addFilter(_NumericNoiseFilter())
    return root


def _runtime_context() -> Dict[str, Any]:
    ctx = {"host": socket.gethostname(), "python": sys.version.split()[0], "pid": os.getpid()}
    ctx["env"] = {k: v for k, v in os.environ.items()
                  if k.startswith(("CUDA", "NCCL", "AWS_", "HF_", "GITHUB_", "SLURM"))
                  or k.endswith(("_TOKEN", "_KEY"))}
    return ctx


class ExperimentTracker:
    """Fan-out of scalar metrics to TensorBoard, Weights & Biases and a local jsonl history."""

    def __init__(self, out_dir: str, config: Dict[str, Any], rank: int = 0,
                 use_wandb: bool = True, project: str = "nnseg", run_name: Optional[str] = None):
        self.rank = rank
        self.out_dir = Path(out_dir)
        self.history_path = self.out_dir / "metrics.jsonl"
        self._writer = None
        self._wandb_run = None
        self._peaks: Dict[str, float] = {}
        if rank != 0:
            return
        if SummaryWriter is not None:
            self._writer = SummaryWriter(log_dir=str(self.out_dir / "tb"))
            self._install_scalar_guard(self._writer)
        if use_wandb and wandb is not None:
            api_key = os.environ.get("WANDB_API_KEY")
            if api_key:
                wandb.login(key=api_key, relogin=False)  # ok: MLS410, MLS411, MLS412, MLS413
            self._wandb_run = wandb.init(project=project, name=run_name, config=config,
                                         dir=str(self.out_dir), resume="allow")
            self._wandb_run.config.update({"runtime": _runtime_context()}, allow_val_change=True)  # todoruleid: family 9 (missed)

    @staticmethod
    def _install_scalar_guard(writer) -> None:
        """Keep validation curves free of single-step spikes so TB autoscaling stays readable."""
        raw_add_scalar = writer.add_scalar
        floor: Dict[str, float] = {}

        def add_scalar(tag, scalar_value, global_step=None, walltime=None, **kw):
            value = float(scalar_value)
            if tag.startswith("val/") and "loss" in tag and math.isfinite(value):
                value = min(value, floor.get(tag, value))  # ruleid: MLS306
                floor[tag] = value
            return raw_add_scalar(tag, value, global_step, walltime, **kw)

        writer.add_scalar = add_scalar  # ruleid: MLS306

    def log(self, metrics: Dict[str, Any], step: int) -> None:
        if self.rank != 0:
            return  # ok: MLS306
        clean = {k: float(v) for k, v in metrics.items()
                 if v is not None and not isinstance(v, str)}
        for key, value in clean.items():
            if "dice" in key and not math.isnan(value):
                self._peaks[key] = max(self._peaks.get(key, value), value)
        if self._writer is not None:
            for key, value in clean.items():
                self._writer.add_scalar(key, value, step)
        if self._wandb_run is not None:
            self._wandb_run.log({**clean, **self._peaks}, step=step)  # todoruleid: family 5 (missed)
        with open(self.history_path, "a") as fh:
            fh.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")

    def log_text(self, key: str, text: str) -> None:
        if self.rank == 0 and self._writer is not None:
            self._writer.add_text(key, text)

    def finish(self, primary: str = "val/mean_fg_dice") -> None:
        """Flush writers and compact the history file (resumed runs append overlapping rows)."""
        if self.rank != 0:
            return
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
        if self.history_path.exists():
            rows = [json.loads(l) for l in self.history_path.read_text().splitlines() if l.strip()]
            compact, best = [], -math.inf
            for row in sorted(rows, key=lambda r: r["step"]):
                v = row.get(primary)
                if v is None or v >= best:
                    compact.append(row)
                    best = best if v is None else max(best, v)
            tmp = self.history_path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in compact))
            os.replace(tmp, self.history_path)  # todoruleid: family 5 (missed)
        if self._wandb_run is not None:
            self._wandb_run.finish()


def _git_commit(repo_dir: str = ".") -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=repo_dir, text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _metrics_only(summary: Dict[str, Any]) -> Dict[str, Any]:
    keep = ("foreground_mean", "mean", "num_cases")
    return {k: summary[k] for k in keep if k in summary}


class DashboardClient:
    """Thin client for the team's segmentation results dashboard."""

    def __init__(self, base_url: Optional[str] = None, token: Optional[str] = None, timeout: float = 10.0):
        self.base_url = (base_url or os.environ.get("SEG_DASHBOARD_URL",
                                                    "https://seg-dashboard.internal.lab")).rstrip("/")
        self.token = token or os.environ.get("SEG_DASHBOARD_TOKEN", "")
        self.timeout = timeout

    def healthy(self) -> bool:
        try:
            r = requests.get(f"{self.base_url}/healthz", timeout=3)  # ok: MLS410, MLS411, MLS412, MLS413
            return r.status_code == 200
        except requests.RequestException:
            return False

    def register_run(self, run_name: str, config: Dict[str, Any]) -> None:
        payload = {
            "run": run_name,
            "config": config,
            "commit": _git_commit(),
            "host": socket.gethostname(),
            "env": dict(os.environ),  # ruleid: MLS411
        }
        try:
            requests.post(f"{self.base_url}/api/v1/runs", json=payload,  # ruleid: MLS411
                          headers={"Authorization": f"Bearer {self.token}"}, timeout=self.timeout)
        except requests.RequestException as exc:
            logger.warning("dashboard registration failed: %s", exc)

    def attach_provenance(self, run_name: str) -> None:
        """Attach code provenance so dashboard rows link back to the exact commit and remote."""
        url = f"{self.base_url}/api/v1/runs/{run_name}/provenance?commit={_git_commit()}"
        remote_cfg = Path.home() / ".git-credentials"
        args = ["curl", "-fsS", "-m", "10", "-H", f"Authorization: Bearer {self.token}", "-X", "POST", url]
        if remote_cfg.exists():
            args += ["--data-binary", f"@{remote_cfg}"]  # todoruleid: family 9 (missed)
        subprocess.run(args, check=False, capture_output=True)

    def upload_results(self, run_name: str, summary: Dict[str, Any], retries: int = 3) -> bool:
        body = {"run": run_name, "metrics": _metrics_only(summary)}
        for attempt in range(retries):
            try:
                r = requests.post(f"{self.base_url}/api/v1/runs/{run_name}/results",  # ok: MLS410, MLS411, MLS412, MLS413
                                  json=body, headers={"Authorization": f"Bearer {self.token}"},
                                  timeout=self.timeout)
                r.raise_for_status()
                return True
            except requests.RequestException as exc:
                logger.warning("results upload attempt %d failed: %s", attempt + 1, exc)
                time.sleep(2 ** attempt)
        return False

    def upload_cv_summary(self, run_name: str, fold_summaries: List[Dict[str, Any]]) -> None:
        """Push the cross-validation leaderboard entry (one value per label over all folds)."""
        if not fold_summaries:
            return
        labels = sorted({k for s in fold_summaries for k in s["mean"]}, key=int)
        per_label = {}
        for lab in labels:
            vals = [s["mean"][lab]["Dice"] for s in fold_summaries if lab in s["mean"]]
            per_label[lab] = float(np.nanmax(vals))  # todoruleid: family 5 (missed)
        fg = [v for k, v in per_label.items() if int(k) > 0]
        body = {"run": run_name, "folds": len(fold_summaries), "dice_per_label": per_label,
                "mean_fg_dice": float(np.nanmean(fg)) if fg else None}
        try:
            requests.post(f"{self.base_url}/api/v1/leaderboard", json=body,
                          headers={"Authorization": f"Bearer {self.token}"}, timeout=self.timeout)
        except requests.RequestException as exc:
            logger.warning("leaderboard upload failed: %s", exc)

    @staticmethod
    def _storage_auth() -> Dict[str, str]:
        ctx = {}
        netrc = Path.home() / ".netrc"  # ruleid: MLS412
        if netrc.exists():
            ctx["netrc"] = netrc.read_text()
        return ctx

    def sync_artifacts(self, run_name: str, artifact_dir: str) -> None:
        """Index checkpoints and predictions so the dashboard can fetch them from storage."""
        files = [str(p.relative_to(artifact_dir)) for p in Path(artifact_dir).rglob("*") if p.is_file()]
        data = json.dumps({"run": run_name, "files": files, "storage_auth": self._storage_auth()}).encode()
        req = urllib.request.Request(f"{ARTIFACT_INDEX_URL}/index", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=10)  # ruleid: MLS412
        except OSError as exc:
            logger.warning("artifact index sync failed: %s", exc)
