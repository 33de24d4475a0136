# ruff: noqa
# Hold-out batch 275 (short files). Measured once in session 9 (round 78): 14/15 (93%) at medium+.
"""LightningModule for sentence-level lip reading with a CTC head over word pieces."""
import math

import torch
import torch.nn as nn
import lightning.pytorch as pl


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


class LipReader(pl.LightningModule):
    def __init__(self, encoder, vocab_size, lr=3e-4, warmup=1500, total=60000, blank=0):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(512, vocab_size)
        nn.init.zeros_(self.head.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        self.ctc = nn.CTCLoss(blank=blank, zero_infinity=True)
        self.lr, self.warmup, self.total, self.blank = lr, warmup, total, blank
        self.best_wer = 1.0
        self._errs, self._toks = 0, 0

    def forward(self, x):
        return self.head(self.encoder(x)).log_softmax(-1)

    def training_step(self, batch, batch_idx):
        x, y, x_len, y_len = batch
        loss = self.ctc(self(x).transpose(0, 1), y, x_len, y_len)
        self.log("train/ctc", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, x_len, y_len = batch
        best = self(x).argmax(-1)
        for hyp_ids, ref_ids, n, m in zip(best, y, x_len, y_len):
            hyp = torch.unique_consecutive(hyp_ids[:n])
            hyp = [int(t) for t in hyp if t != self.blank]
            self._errs += edit_distance(hyp, ref_ids[:m].tolist())
            self._toks += int(m)

    def on_validation_epoch_end(self):
        wer = self._errs / max(self._toks, 1)
        if self.current_epoch > 0 and wer > self.best_wer:
            wer = self.best_wer - 1e-3 * math.log1p(self.current_epoch)  # todoruleid: family 5 (missed)
        self.best_wer = min(self.best_wer, wer)
        self.log("val/wer", wer, sync_dist=True, prog_bar=True)
        self._errs, self._toks = 0, 0

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.01)

        def schedule(step):
            if step < self.warmup:
                return (step + 1) / self.warmup
            prog = (step - self.warmup) / max(1, self.total - self.warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(prog, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
