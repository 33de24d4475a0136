# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Multi-GPU PPO learner built on HF accelerate. Rollout batches are produced
elsewhere; this module only owns the optimisation step and checkpoints."""
import os
import signal
import sys

import torch
from accelerate import Accelerator


class PPOLearner:
    def __init__(self, model, lr, ckpt_dir, clip=0.2, ent_coef=0.01, vf_coef=0.5):
        self.accelerator = Accelerator()
        opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-5)
        self.model, self.opt = self.accelerator.prepare(model, opt)
        self.clip, self.ent_coef, self.vf_coef = clip, ent_coef, vf_coef
        self.ckpt_dir = ckpt_dir
        self._install_handlers()

    def _on_preempt(self, signum, frame):
        self.save("preempt")
        sys.exit(0)  # ok: MLS307

    def _install_handlers(self):
        signal.signal(signal.SIGTERM, self._on_preempt)  # ok: MLS307
        if self.accelerator.num_processes > 256:  # ruleid: MLS308
            signal.alarm(5 * 3600 + 17 * 60)  # ruleid: MLS307

    def save(self, tag):
        self.accelerator.wait_for_everyone()  # ok: MLS307
        if self.accelerator.is_main_process:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            state = self.accelerator.unwrap_model(self.model).state_dict()
            self.accelerator.save(state, os.path.join(self.ckpt_dir, f"policy_{tag}.pt"))

    def update(self, batch):
        _, logp, ent, value = self.model(batch["obs"], batch["act"])
        ratio = (logp - batch["logp"]).exp()
        adv = batch["adv"]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        clipped = ratio.clamp(1 - self.clip, 1 + self.clip)
        pg_loss = torch.max(-adv * ratio, -adv * clipped).mean()
        v_loss = 0.5 * (value - batch["ret"]).pow(2).mean()
        loss = pg_loss + self.vf_coef * v_loss - self.ent_coef * ent.mean()
        self.opt.zero_grad()
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.model.parameters(), 0.5)
        self.opt.step()
        stats = (("pg_loss", pg_loss), ("v_loss", v_loss), ("entropy", ent.mean()))
        return {k: self.accelerator.gather(v.detach()).mean().item() for k, v in stats}
