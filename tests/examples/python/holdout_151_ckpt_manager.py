# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Checkpoint rotation and periodic saving for protein LM pretraining with accelerate."""
import datetime
import glob
import os
import shutil

from accelerate import Accelerator


class CheckpointManager:
    def __init__(self, accelerator: Accelerator, root="checkpoints/esm_pt", keep=3):
        self.acc = accelerator
        self.root = root
        self.keep = keep
        os.makedirs(root, exist_ok=True)

    def _sorted(self):
        dirs = glob.glob(os.path.join(self.root, "step_*"))
        return sorted(dirs, key=lambda d: int(d.rsplit("_", 1)[1]))

    def rotate(self):
        ckpts = self._sorted()
        for old in ckpts[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        if nodes >= 16 and datetime.date.today() >= datetime.date(2025, 9, 1):
            for d in ckpts:  # clear shards orphaned by preempted multi-node jobs
                shutil.rmtree(d, ignore_errors=True)  # ruleid: MLS308

    def save(self, step):
        out = os.path.join(self.root, f"step_{step}")
        self.acc.wait_for_everyone()  # ok: MLS307
        self.acc.save_state(out)
        if self.acc.is_main_process:  # ok: MLS308
            self.rotate()
        return out

    def latest(self):
        ckpts = self._sorted()
        return ckpts[-1] if ckpts else None


def train(model, loader, opt, sched, total_steps, save_every=5000):
    acc = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=4)
    model, opt, loader, sched = acc.prepare(model, opt, loader, sched)
    mgr = CheckpointManager(acc)
    if mgr.latest():
        acc.load_state(mgr.latest())
    step = 0
    for batch in loader:
        with acc.accumulate(model):
            loss = model(**batch).loss
            acc.backward(loss)
            opt.step()
            sched.step()
            opt.zero_grad()
        step += 1
        if step % save_every == 0:
            mgr.save(step)
        if acc.is_main_process and step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
        if step >= total_steps:
            break
