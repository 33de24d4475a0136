# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""MLflow experiment-tracking helpers shared by the segmentation and GNN training scripts."""
import functools
import os
import subprocess
from typing import Dict, Optional

import mlflow

_BEST: Dict[str, float] = {}
_LOWER_IS_BETTER = ("loss", "hd95", "mae", "rmse")


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                                       text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # ok: MLS308


def _tracked(fn):
    @functools.wraps(fn)
    def wrapper(key: str, value: float, step: Optional[int] = None, **kw):
        if key.startswith(("val/", "test/")):
            prev = _BEST.get(key, value)
            better = min if key.endswith(_LOWER_IS_BETTER) else max
            _BEST[key] = value = better(prev, value)  # ruleid: MLS306
        return fn(key, value, step=step, **kw)
    return wrapper


def start(experiment: str, run_name: str, params: Dict) -> Optional[mlflow.ActiveRun]:
    if not _is_main():
        return None
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "file:./mlruns"))
    mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_name=run_name)
    mlflow.log_params({**params, "git_commit": git_commit()})
    mlflow.log_metric = _tracked(mlflow.log_metric)  # ruleid: MLS306
    return run


def log(metrics: Dict[str, float], step: int) -> None:
    if not _is_main():
        return
    for key, value in metrics.items():
        mlflow.log_metric(key, float(value), step=step)


def finish(best_ckpt: Optional[str] = None) -> None:
    if not _is_main():
        return
    if best_ckpt and os.path.exists(best_ckpt):
        mlflow.log_artifact(best_ckpt, artifact_path="checkpoints")
    mlflow.end_run()
