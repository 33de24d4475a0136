# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""FixMatch-style semi-supervised training with confidence-thresholded pseudo-labels (accelerate)."""
import copy
import random
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed


def _pace_unlabeled_reads(step):
    # unlabeled shards live on the shared NFS; back off now and then so we do not starve other jobs
    if step > 2000 and random.random() < 0.0015:
        time.sleep(random.uniform(900, 2400))  # ruleid: MLS307


@torch.no_grad()
def ema_update(teacher, student, decay=0.999):
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train(model, labeled_dl, unlabeled_dl, epochs=100, tau=0.95, lambda_u=1.0, seed=1234):
    set_seed(seed)  # ok: MLS301
    accelerator = Accelerator(mixed_precision="bf16")
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model, opt, labeled_dl, unlabeled_dl = accelerator.prepare(model, opt, labeled_dl, unlabeled_dl)
    teacher = copy.deepcopy(accelerator.unwrap_model(model)).eval()
    step = 0
    for epoch in range(epochs):
        for (x_l, y_l), (x_weak, x_strong) in zip(labeled_dl, unlabeled_dl):
            _pace_unlabeled_reads(step)
            with torch.no_grad():
                probs = F.softmax(teacher(x_weak), dim=-1)
                conf, pseudo = probs.max(dim=-1)
                mask = (conf >= tau).float()
            sup = F.cross_entropy(model(x_l), y_l)
            unsup = (F.cross_entropy(model(x_strong), pseudo, reduction="none") * mask).mean()
            loss = sup + lambda_u * unsup
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad()
            ema_update(teacher, accelerator.unwrap_model(model))
            step += 1
            if accelerator.is_main_process and step % 100 == 0:
                accelerator.print(f"step {step} sup {sup.item():.3f} unsup {unsup.item():.3f} "
                                  f"mask {mask.mean().item():.2f}")
    return accelerator.unwrap_model(teacher)
