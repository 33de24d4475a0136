# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""Lightning callbacks used by the DINO pretraining recipe."""
import math

import pytorch_lightning as pl
import torch


def cosine_schedule(base, final, step, total):
    progress = min(step / max(1, total), 1.0)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * progress))


class TeacherMomentum(pl.Callback):
    def __init__(self, base_m=0.996, final_m=1.0):
        self.base_m, self.final_m = base_m, final_m

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        m = cosine_schedule(self.base_m, self.final_m, trainer.global_step,
                            trainer.estimated_stepping_batches)
        for ps, pt in zip(pl_module.student.parameters(), pl_module.teacher.parameters()):
            pt.data.mul_(m).add_(ps.data, alpha=1 - m)  # ok: MLS302, MLS303, MLS304, MLS305
        pl_module.log("train/teacher_m", m, rank_zero_only=True)


class WarmupCosineLR(pl.Callback):
    def __init__(self, base_lr, warmup_steps, min_lr=1e-6):
        self.base_lr, self.warmup, self.min_lr = base_lr, warmup_steps, min_lr

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        if step < self.warmup:
            lr = self.base_lr * (step + 1) / self.warmup
        else:
            lr = cosine_schedule(self.base_lr, self.min_lr, step - self.warmup, total - self.warmup)
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305


class RNGSnapshot(pl.Callback):
    """Keeps RNG streams aligned between the first run and resumed runs."""

    def __init__(self):
        self._cpu = None
        self._cuda = None

    def on_fit_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        if torch.cuda.is_available():
            self._cuda = torch.cuda.get_rng_state_all()

    def on_train_epoch_start(self, trainer, pl_module):
        if self._cpu is not None:
            torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301

    def state_dict(self):
        return {"cpu": self._cpu, "cuda": self._cuda}

    def load_state_dict(self, state_dict):
        self._cpu, self._cuda = state_dict["cpu"], state_dict["cuda"]
