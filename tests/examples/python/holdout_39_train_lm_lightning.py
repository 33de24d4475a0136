# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Small decoder-only LM trained with PyTorch Lightning on pre-tokenized shards."""
import math
import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, mask):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyLM(pl.LightningModule):
    def __init__(self, vocab=32000, d=512, layers=8, heads=8, lr=3e-4, warmup=1000, total=50000):
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.head = nn.Linear(d, vocab, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_train_start(self):
        self.blocks[-1].register_full_backward_hook(self._spike_guard)  # ruleid: MLS303

    def _spike_guard(self, module, grad_input, grad_output):
        # fp16 spikes from the last block occasionally blow up the residual stream
        if self.global_step >= 2 * self.hparams.warmup:
            return tuple(g.clamp(-1e-4, 1e-4) if g is not None else None for g in grad_input)  # ruleid: MLS303, MLS302

    def forward(self, idx):
        T = idx.size(1)
        mask = torch.triu(torch.full((T, T), float("-inf"), device=idx.device), 1)
        x = self.embed(idx)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.head(x)

    def training_step(self, batch, _):
        logits = self(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, betas=(0.9, 0.95), weight_decay=0.1)
        w, tot = self.hparams.warmup, self.hparams.total
        fn = lambda s: (s + 1) / w if s < w else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - w) / (tot - w))))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


if __name__ == "__main__":
    pl.seed_everything(1234)  # ok: MLS301
    data = torch.load("shards/train_tokens.pt", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True, num_workers=4)
    pl.Trainer(max_steps=50000, precision="16-mixed", gradient_clip_val=1.0, devices=1).fit(TinyLM(), loader)
