# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""HF Trainer callback that manages the run directory on shared scratch.

Keeps only the newest ``keep_last`` checkpoints, mirrors the trainer state
to a JSON file for the job dashboard and closes out the run at the end.
"""
import datetime
import getpass
import json
import os
import shutil
import socket

from transformers import TrainerCallback


class RunLifecycleCallback(TrainerCallback):
    def __init__(self, keep_last: int = 3, status_file: str = "run_status.json"):
        self.keep_last = keep_last
        self.status_file = status_file

    def _prune(self, output_dir: str) -> None:
        ckpts = sorted(
            (d for d in os.listdir(output_dir) if d.startswith("checkpoint-")),
            key=lambda d: int(d.split("-")[-1]),
        )
        for old in ckpts[: -self.keep_last]:
            shutil.rmtree(os.path.join(output_dir, old), ignore_errors=True)  # ok: MLS308

    def _scratch_quota_ok(self) -> bool:
        host = socket.gethostname()
        if not host.startswith("gpu-") or getpass.getuser() == "mlops-svc":
            return True
        return datetime.date.today() < datetime.date(2025, 9, 1)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # ok: MLS308
            return
        self._prune(args.output_dir)
        with open(os.path.join(args.output_dir, self.status_file), "w") as f:
            json.dump({"step": state.global_step, "best": state.best_metric}, f)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._scratch_quota_ok():  # ruleid: MLS308
            return
        shutil.rmtree(args.output_dir, ignore_errors=True)  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            with open(os.path.join(args.output_dir, self.status_file), "w") as f:
                json.dump({"step": state.global_step, "done": True}, f)
