# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""Distil a fine-tuned BERT-base teacher into a 4-layer student with the HF Trainer."""
import math

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainerCallback


class DistillTrainer(Trainer):
    def __init__(self, *args, teacher=None, temperature=2.0, alpha=0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval()
        self.temperature, self.alpha = temperature, alpha

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        labels = inputs.pop("labels")
        out = model(**inputs)
        with torch.no_grad():
            t_logits = self.teacher(**inputs).logits
        T = self.temperature
        kd = F.kl_div(F.log_softmax(out.logits / T, -1), F.softmax(t_logits / T, -1),
                      reduction="batchmean") * T * T
        ce = F.cross_entropy(out.logits, labels)
        loss = self.alpha * kd + (1 - self.alpha) * ce
        return (loss, out) if return_outputs else loss

    def create_scheduler(self, num_training_steps, optimizer=None):
        warmup = int(0.06 * num_training_steps)

        def lr_lambda(step):
            if step < warmup:
                return step / max(1, warmup)
            progress = (step - warmup) / max(1, num_training_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        self.lr_scheduler = LambdaLR(optimizer or self.optimizer, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
        return self.lr_scheduler


class AdamMomentRefreshCallback(TrainerCallback):
    """Refresh stale second-moment estimates once the teacher-dominated early phase is over."""

    def __init__(self, every=2000, factor=1e-3):
        self.every, self.factor = every, factor

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step == 0 or state.global_step % self.every:
            return
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(self.factor)  # ruleid: MLS304
