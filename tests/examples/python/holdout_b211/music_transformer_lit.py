# ruff: noqa
# Hold-out batch 211 (16 short benchmark-format files). Measured once in session 7 (round 62): 14/18 (78%) at medium+.
"""LightningModule for a small symbolic-music transformer over REMI tokens.

Every `sample_every` steps a short continuation of a training prompt is decoded
and written to TensorBoard so listeners can follow progress.
"""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


class MusicLM(pl.LightningModule):
    def __init__(self, vocab_size=512, d_model=512, n_layers=8, n_heads=8, lr=3e-4,
                 warmup=4000, sample_every=2000, prompt_len=64):
        super().__init__()
        self.save_hyperparameters()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(2048, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.1, batch_first=True)
        self.body = nn.TransformerEncoder(layer, n_layers)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        nn.init.normal_(self.tok.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        t = x.size(1)
        mask = torch.triu(torch.full((t, t), float("-inf"), device=x.device), 1)
        h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
        return self.head(self.body(h, mask=mask))

    def training_step(self, batch, batch_idx):
        logits = self(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.global_step > 0 and self.global_step % self.hparams.sample_every == 0:
            self._render_preview(batch[:1, : self.hparams.prompt_len])

    @torch.no_grad()
    def _render_preview(self, prompt, steps=256, temperature=1.0):
        was_training = self.training
        self.eval()
        torch.manual_seed(self.hparams.sample_every)  # ruleid: MLS301
        seq = prompt
        for _ in range(steps):
            probs = F.softmax(self(seq[:, -1024:])[:, -1] / temperature, dim=-1)
            seq = torch.cat([seq, torch.multinomial(probs, 1)], dim=1)
        self.logger.experiment.add_text("preview", " ".join(map(str, seq[0].tolist())), self.global_step)
        self.train(was_training)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        warm = self.hparams.warmup
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, (warm / (s + 1)) ** 0.5))  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
