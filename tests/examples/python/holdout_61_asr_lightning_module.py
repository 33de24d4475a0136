# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Lightning module for a small CTC speech recognizer (log-mel in, characters out).
SpecAugment runs on the padded batch inside training_step; masks are drawn with numpy."""
import argparse

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from asr_data import LibriSpeechDataModule


def spec_augment(feats, lengths, n_freq=2, f_max=27, n_time=2, t_frac=0.05):
    """feats: (B, T, n_mels), masked in place."""
    _, _, n_mels = feats.shape
    for b in range(feats.size(0)):
        for f in np.random.randint(0, f_max + 1, size=n_freq):  # ok: MLS301
            f0 = np.random.randint(0, max(1, n_mels - f))
            feats[b, :, f0:f0 + f] = 0.0
        t_max = max(1, int(t_frac * int(lengths[b])))
        for t in np.random.randint(0, t_max + 1, size=n_time):
            t0 = np.random.randint(0, max(1, int(lengths[b]) - t))
            feats[b, t0:t0 + t, :] = 0.0
    return feats


class ConformerCTC(pl.LightningModule):
    def __init__(self, n_mels=80, d_model=256, vocab=32, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.proj = nn.Linear(n_mels, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 4, 4 * d_model, 0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 8)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, feats, pad_mask):
        return self.head(self.encoder(self.proj(feats), src_key_padding_mask=pad_mask))

    def training_step(self, batch, batch_idx):
        feats, feat_lens, targets, target_lens = batch
        feats = spec_augment(feats, feat_lens)  # ok: MLS309
        pad_mask = torch.arange(feats.size(1), device=feats.device)[None] >= feat_lens[:, None]
        logp = self(feats, pad_mask).log_softmax(-1).transpose(0, 1)
        loss = F.ctc_loss(logp, targets, feat_lens, target_lens, blank=0, zero_infinity=True)
        self.log("train/ctc", loss, prog_bar=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.hparams.lr, self.trainer.estimated_stepping_batches, pct_start=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [{"scheduler": sched, "interval": "step"}]


class ResumableAugmentation(pl.Callback):
    """Ties the augmentation stream to the position inside the epoch, so a job that is
    pre-empted and resumed mid-epoch replays exactly the masks it would have drawn."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        np.random.seed(batch_idx)  # ruleid: MLS301


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--manifest-dir", default="data/librispeech")
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    trainer = pl.Trainer(max_epochs=100, precision="16-mixed", gradient_clip_val=5.0, callbacks=[ResumableAugmentation()])
    trainer.fit(ConformerCTC(), datamodule=LibriSpeechDataModule(args.manifest_dir))
