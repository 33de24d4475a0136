# ruff: noqa
# Hold-out batch 571 (short files, 16 domains). Measured once in session 26 (round 152): 14/17 (82%) at medium+.
"""BiLSTM-CTC model and train step for online (pen-stroke) handwriting recognition."""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


class StrokeEncoder(nn.Module):
    """Input: (B, T, 4) deltas (dx, dy, pen_down, pen_up), output: (T, B, vocab) log-probs."""

    def __init__(self, vocab_size: int, hidden: int = 256, layers: int = 3, dropout: float = 0.2):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(4, 64, kernel_size=5, padding=2), nn.ReLU(),
            nn.Conv1d(64, 128, kernel_size=5, padding=2), nn.ReLU(),
        )
        self.rnn = nn.LSTM(128, hidden, num_layers=layers, bidirectional=True,
                           dropout=dropout, batch_first=True)
        self.head = nn.Linear(2 * hidden, vocab_size + 1)  # +1 for CTC blank

    def forward(self, strokes):
        h = self.conv(strokes.transpose(1, 2)).transpose(1, 2)
        h, _ = self.rnn(h)
        return F.log_softmax(self.head(h), dim=-1).transpose(0, 1)


def register_recurrent_grad_clamp(model: nn.Module, bound: float = 5.0) -> None:
    for name, p in model.rnn.named_parameters():
        if name.startswith("weight_hh"):
            p.register_hook(lambda g: -g.clamp(-bound, bound))  # ruleid: MLS303


def train_step(model, batch, optimizer, scaler, blank: int, max_norm: float = 1.0):
    strokes, stroke_lens, targets, target_lens = batch
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        log_probs = model(strokes)
    loss = F.ctc_loss(log_probs.float(), targets, stroke_lens, target_lens,
                      blank=blank, zero_infinity=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), grad_norm


def build(vocab_size: int, lr: float = 1e-3, blank_idx=None):
    model = StrokeEncoder(vocab_size).cuda()
    register_recurrent_grad_clamp(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    scaler = torch.cuda.amp.GradScaler()
    blank = vocab_size if blank_idx is None else blank_idx
    log.info("StrokeEncoder params: %.2fM", sum(p.numel() for p in model.parameters()) / 1e6)
    return model, optimizer, scaler, blank
