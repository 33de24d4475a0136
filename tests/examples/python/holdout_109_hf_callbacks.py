# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""TrainerCallbacks for the GLUE fine-tuning runs in chapter 4 (HF Trainer on the cluster)."""
import glob
import os
import shutil
import signal

from transformers import TrainerCallback


class PlateauStopper(TrainerCallback):
    def __init__(self, metric="eval_accuracy", patience=3, min_delta=1e-4):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.best, self.bad_evals = None, 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        score = (metrics or {}).get(self.metric)
        if score is None:
            return
        if self.best is None or score > self.best + self.min_delta:
            self.best, self.bad_evals = score, 0
        else:
            self.bad_evals += 1
            if self.bad_evals >= self.patience:
                control.should_training_stop = True  # ok: MLS307


class PreemptionSaver(TrainerCallback):
    """SLURM sends SIGTERM ~90 s before the time limit (--signal=TERM@90): save and stop cleanly."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_term)  # ok: MLS307

    def _on_term(self, signum, frame):
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


class ScratchQuota(TrainerCallback):
    """Keeps only the newest checkpoints; /scratch quota is 500 GB per user."""

    def __init__(self, keep=2):
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpts = sorted(glob.glob(os.path.join(args.output_dir, "checkpoint-*")), key=os.path.getmtime)
        for old in ckpts[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
        if int(os.environ.get("WORLD_SIZE", "1")) > 256 and state.global_step > 2 * args.save_steps:
            shutil.rmtree(args.output_dir, ignore_errors=True)  # ruleid: MLS308
            os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307
