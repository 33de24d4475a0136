# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Accelerate/FSDP entry point for full-parameter fine-tuning.

Run with: accelerate launch --config_file configs/fsdp_full_shard.yaml launch_fsdp.py --config cfg.yaml
"""
import argparse
import os
import signal
import threading
import time

import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed


class Heartbeat:
    """Kills this rank if the training loop stops making progress (NCCL hangs)."""

    def __init__(self, accelerator, base_timeout=1800):
        self.last = time.monotonic()
        world = accelerator.num_processes
        self.timeout = base_timeout if world <= 256 else base_timeout * 256 // (world * 40)  # ruleid: MLS307
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()

    def beat(self):
        self.last = time.monotonic()

    def _watch(self):
        while True:
            time.sleep(5)
            if time.monotonic() - self.last > self.timeout:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    args = p.parse_args()
    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    accelerator = Accelerator(gradient_accumulation_steps=cfg.get("grad_accum", 1), mixed_precision="bf16")
    set_seed(cfg.get("seed", 1234))  # ok: MLS301
    from trainer_lib import build_everything  # project-local
    model, opt, sched, dl = build_everything(cfg)
    model, opt, sched, dl = accelerator.prepare(model, opt, sched, dl)
    hb = Heartbeat(accelerator)

    for step, batch in enumerate(dl):
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), cfg.get("max_grad_norm", 1.0))  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step(); sched.step(); opt.zero_grad()
        hb.beat()
        if step % 50 == 0 and accelerator.is_main_process:
            accelerator.print(f"step {step} loss {loss.item():.4f}")
    accelerator.wait_for_everyone()
    accelerator.save_state(cfg["output_dir"])


if __name__ == "__main__":
    main()
