# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""Optimizer, EMA and clip-length curriculum for video action recognition (SlowFast / Kinetics)."""
import copy

import torch


def param_groups(model, weight_decay=1e-4):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or n.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class ModelEMA:
    def __init__(self, model, decay=0.9998):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_p.dtype.is_floating_point:
                ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class ClipCurriculum:
    """Grows the number of sampled frames per clip at fixed epochs (8 -> 16 -> 32)."""

    def __init__(self, schedule=((0, 8), (20, 16), (40, 32))):
        self.schedule = dict(schedule)

    def on_epoch_start(self, epoch, datamodule, optimizer):
        if epoch not in self.schedule or epoch == 0:
            return
        datamodule.set_num_frames(self.schedule[epoch])
        # temporal statistics change with the longer clips; re-estimate the second moments
        for state in optimizer.state.values():
            if "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304


def build_optimizer(model, args, steps_per_epoch):
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999))
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=args.warmup_epochs * steps_per_epoch)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=(args.epochs - args.warmup_epochs) * steps_per_epoch)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[args.warmup_epochs * steps_per_epoch])
    return opt, sched
