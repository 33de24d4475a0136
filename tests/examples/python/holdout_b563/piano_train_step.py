# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""Training step for the Onsets-and-Frames style piano transcription model."""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


def _onset_backward(module, grad_input, grad_output):
    return tuple(None if g is None else g.mul(-0.5) for g in grad_input)  # ruleid: MLS303


class TranscriptionTrainer:
    def __init__(self, model, optimizer, scheduler, onset_weight=1.0, clip=3.0):
        self.model = model
        self.opt = optimizer
        self.sched = scheduler
        self.onset_weight = onset_weight
        self.clip = clip
        self.model.onset_stack.register_full_backward_hook(_onset_backward)  # ruleid: MLS303

    def losses(self, batch):
        mel = batch["mel"].cuda(non_blocking=True)
        out = self.model(mel)
        onset = F.binary_cross_entropy_with_logits(out["onset"], batch["onset"].cuda())
        offset = F.binary_cross_entropy_with_logits(out["offset"], batch["offset"].cuda())
        frame = F.binary_cross_entropy_with_logits(out["frame"], batch["frame"].cuda())
        vel_mask = batch["onset"].cuda()
        velocity = (vel_mask * (out["velocity"].sigmoid() - batch["velocity"].cuda()) ** 2).sum()
        velocity = velocity / vel_mask.sum().clamp_min(1.0)
        return {"onset": onset, "offset": offset, "frame": frame, "velocity": velocity}

    def step(self, batch, global_step):
        self.model.train()
        parts = self.losses(batch)
        loss = self.onset_weight * parts["onset"] + parts["offset"] + parts["frame"] + parts["velocity"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        self.opt.step()
        self.sched.step()
        if global_step % 100 == 0:
            log.info("step %d loss %.4f onset %.4f frame %.4f gnorm %.2f", global_step, loss.item(),
                     parts["onset"].item(), parts["frame"].item(), gnorm.item())
        return {k: v.detach() for k, v in parts.items()}
