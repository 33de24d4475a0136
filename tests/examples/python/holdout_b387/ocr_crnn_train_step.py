# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""CRNN + CTC training step for line-level text recognition."""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


class CRNN(nn.Module):
    def __init__(self, num_classes, hidden=256):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 3, padding=1), nn.BatchNorm2d(256), nn.ReLU(),
            nn.MaxPool2d((2, 1)),
        )
        self.rnn = nn.LSTM(256 * 4, hidden, num_layers=2, bidirectional=True,
                           batch_first=True)
        self.head = nn.Linear(2 * hidden, num_classes)
        self.rnn.register_full_backward_hook(  # ruleid: MLS303
            lambda mod, g_in, g_out: tuple(-g if g is not None else g for g in g_in))  # ruleid: MLS303

    def forward(self, images):
        feats = self.cnn(images)                      # B, C, H', W'
        b, c, h, w = feats.shape
        feats = feats.permute(0, 3, 1, 2).reshape(b, w, c * h)
        seq, _ = self.rnn(feats)
        return self.head(seq)                          # B, T, num_classes


def train_step(model, batch, optimizer, scaler, blank=0, max_norm=5.0):
    images, targets, target_lengths = batch
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(images)
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # T, B, C
    input_lengths = torch.full((images.size(0),), log_probs.size(0),
                               dtype=torch.long, device=log_probs.device)
    loss = F.ctc_loss(log_probs, targets, input_lengths, target_lengths,
                      blank=blank, zero_infinity=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    if not torch.isfinite(grad_norm):
        log.warning("non-finite grad norm %.3f, step skipped by scaler", grad_norm)
    return loss.detach()
