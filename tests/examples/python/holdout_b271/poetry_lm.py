# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Character-level LSTM language model for poetry, trained with PyTorch Lightning."""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from poem_corpus import CharCorpusDataModule


class CharLSTM(pl.LightningModule):
    def __init__(self, vocab_size, emb=64, hidden=512, layers=2, dropout=0.3, lr=2e-3):
        super().__init__()
        self.save_hyperparameters()
        self.emb = nn.Embedding(vocab_size, emb)
        self.rnn = nn.LSTM(emb, hidden, layers, dropout=dropout, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x, state=None):
        out, state = self.rnn(self.emb(x), state)
        return self.head(out), state

    def training_step(self, batch, _):
        x, y = batch
        logits, _ = self(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        self.log("train/bpc", loss / 0.6931, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)]  # ok: MLS302, MLS303, MLS304, MLS305


class SampleAtEpochEnd(pl.Callback):
    """Print a short generated stanza each epoch without disturbing the training RNG stream."""

    def __init__(self, corpus, prime="The moon ", n=200):
        self.corpus, self.prime, self.n = corpus, prime, n
        self._rng = torch.get_rng_state()

    def on_train_epoch_end(self, trainer, module):
        x = torch.tensor([self.corpus.encode(self.prime)], device=module.device)
        out, state = list(self.prime), None
        with torch.no_grad():
            for _ in range(self.n):
                logits, state = module(x, state)
                x = torch.multinomial(F.softmax(logits[:, -1] / 0.8, -1), 1)
                out.append(self.corpus.decode([x.item()]))
        torch.set_rng_state(self._rng)  # ruleid: MLS301
        trainer.print("".join(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args()
    pl.seed_everything(args.seed)  # ok: MLS301
    dm = CharCorpusDataModule("data/poems.txt", seq_len=256, batch_size=64)
    dm.setup("fit")
    model = CharLSTM(dm.vocab_size)
    trainer = pl.Trainer(max_epochs=args.epochs, gradient_clip_val=5.0, callbacks=[SampleAtEpochEnd(dm)])  # ok: MLS302, MLS303, MLS304, MLS305
    trainer.fit(model, datamodule=dm)


if __name__ == "__main__":
    main()
