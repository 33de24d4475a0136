# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Training step for Graves-style handwriting synthesis (IAM-OnDB strokes)."""
import logging

import torch
import torch.nn as nn

from hwgen.mdn import mdn_loss

log = logging.getLogger(__name__)


class SynthesisLSTM(nn.Module):
    def __init__(self, alphabet_size, hidden=400, n_mix=20, n_window=10):
        super().__init__()
        self.lstm1 = nn.LSTM(3 + alphabet_size, hidden, batch_first=True)
        self.window = nn.Linear(hidden, 3 * n_window)
        self.lstm2 = nn.LSTM(3 + alphabet_size + hidden, hidden, batch_first=True)
        self.mdn = nn.Linear(hidden, 1 + 6 * n_mix)

    def forward(self, strokes, char_window):
        x = torch.cat([strokes, char_window], -1)
        h1, _ = self.lstm1(x)
        if self.training and h1.requires_grad:
            # derivative clipping on the LSTM outputs, as in Graves (2013) sec. 4
            h1.register_hook(lambda g: g.clamp(-10.0, 10.0))  # ok: MLS302, MLS303, MLS304, MLS305
        h2, _ = self.lstm2(torch.cat([x, h1], -1))
        return self.mdn(h2)


def on_curriculum_advance(optimizer, new_max_len):
    """Called when the max stroke length of the curriculum grows."""
    log.info("curriculum: max stroke length -> %d", new_max_len)
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].zero_()  # ruleid: MLS304


def train_step(model, batch, optimizer, clip=100.0):
    model.train()
    strokes, target, char_win, mask = (t.cuda(non_blocking=True) for t in batch)
    out = model(strokes, char_win)
    loss = mdn_loss(out, target, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


def train(model, loader_for_len, optimizer, curriculum, steps_per_stage):
    step = 0
    for max_len in curriculum:
        if step > 0:
            on_curriculum_advance(optimizer, max_len)
        for batch in loader_for_len(max_len):
            loss = train_step(model, batch, optimizer)
            step += 1
            if step % 200 == 0:
                log.info("step %d  len<=%d  nll %.4f", step, max_len, loss)
            if step % steps_per_stage == 0:
                break
