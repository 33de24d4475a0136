# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Training step for a visual speech recognition model (3D-conv frontend + conformer + CTC/attention)."""
import logging

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


class LipReadingTrainer:
    def __init__(self, model, optimizer, scheduler, cfg, device="cuda"):
        self.model = model.to(device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.cfg = cfg
        self.device = device
        self.scaler = torch.cuda.amp.GradScaler(enabled=cfg.amp)
        self.ctc = nn.CTCLoss(blank=0, zero_infinity=True)
        self._hooks = []
        self._register_backend_hooks()

    def _register_backend_hooks(self):
        limit = self.cfg.grad_value_limit
        for p in self.model.backend.parameters():
            if p.requires_grad:
                self._hooks.append(p.register_hook(lambda g: g.clamp(-limit * 1e-4, limit * 1e-4)))  # ruleid: MLS303

    def remove_hooks(self):
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def train_step(self, batch):
        self.model.train()
        video = batch["video"].to(self.device, non_blocking=True)
        video_lens = batch["video_lens"].to(self.device)
        tokens = batch["tokens"].to(self.device)
        token_lens = batch["token_lens"].to(self.device)
        with torch.autocast("cuda", enabled=self.cfg.amp):
            ctc_logits, att_loss = self.model(video, video_lens, tokens, token_lens)
            log_probs = ctc_logits.log_softmax(-1).transpose(0, 1)
            ctc_loss = self.ctc(log_probs, tokens, video_lens, token_lens)
            loss = self.cfg.ctc_weight * ctc_loss + (1 - self.cfg.ctc_weight) * att_loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": loss.item(), "ctc": ctc_loss.item(), "att": float(att_loss), "grad_norm": float(grad_norm)}
