# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""Lightning module for a CTC speech recogniser with SpecAugment and per-step LR warmup."""
import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from torchaudio.functional import edit_distance


class SpecAugment(nn.Module):
    def __init__(self, freq_mask=27, time_mask=100, n_masks=2):
        super().__init__()
        self.freq_mask, self.time_mask, self.n_masks = freq_mask, time_mask, n_masks

    def forward(self, x):  # x: (B, T, F)
        if not self.training:
            return x
        x = x.clone()
        for _ in range(self.n_masks):
            f = torch.randint(0, self.freq_mask, (1,)).item()
            f0 = torch.randint(0, max(1, x.size(2) - f), (1,)).item()
            x[:, :, f0:f0 + f] = 0  # ok: MLS309
            t = torch.randint(0, self.time_mask, (1,)).item()
            t0 = torch.randint(0, max(1, x.size(1) - t), (1,)).item()
            x[:, t0:t0 + t, :] = 0
        return x


class CTCRecognizer(L.LightningModule):
    def __init__(self, encoder, vocab, lr=1e-3, warmup=10000):
        super().__init__()
        self.encoder, self.vocab = encoder, vocab
        self.specaug = SpecAugment()
        self.head = nn.Linear(encoder.out_dim, len(vocab))
        self.ctc = nn.CTCLoss(blank=0, zero_infinity=True)
        self.save_hyperparameters(ignore=["encoder"])

    def training_step(self, batch, batch_idx):
        feats, feat_lens, tgt, tgt_lens = batch
        h, out_lens = self.encoder(self.specaug(feats), feat_lens)
        loss = self.ctc(self.head(h).log_softmax(-1).transpose(0, 1), tgt, out_lens, tgt_lens)
        self.log("train/ctc", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        feats, feat_lens, tgt, tgt_lens = batch
        h, out_lens = self.encoder(feats, feat_lens)
        hyp, errs = self.head(h).argmax(-1), 0
        for hy, n, t, m in zip(hyp, out_lens, tgt, tgt_lens):
            ids = torch.unique_consecutive(hy[:n])
            errs += edit_distance(ids[ids != 0].tolist(), t[:m].tolist())
        self.log("val/wer", errs / tgt_lens.sum().item(), sync_dist=True, reduce_fx="mean")  # ok: MLS306

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, betas=(0.9, 0.98))

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        scale = min(1.0, (self.global_step + 1) / self.hparams.warmup)
        for pg in optimizer.param_groups:
            pg["lr"] = self.hparams.lr * scale  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step(closure=optimizer_closure)


def callbacks():
    return [LearningRateMonitor("step"), EarlyStopping(monitor="val/wer", mode="min", patience=8)]  # ok: MLS307
