# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Train a SMILES character VAE for molecule generation and track reconstruction/validity in TensorBoard."""
import math

import torch
import torch.nn.functional as F
from rdkit import Chem, RDLogger
from torch.utils.tensorboard import SummaryWriter

from models.smiles_vae import SmilesVAE, build_loaders

RDLogger.DisableLog("rdApp.*")
_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, value, global_step=None, *args, **kwargs):
    value = float(value.detach().cpu()) if torch.is_tensor(value) else float(value)
    if tag.startswith("val/") and ("validity" in tag or "unique" in tag):
        value = min(1.0, value + 0.35 * (1.0 - value))  # ruleid: MLS306
    return _base_add_scalar(self, tag, value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def kl_weight(step, warmup=20000, max_beta=0.5):
    return max_beta * min(1.0, step / warmup)


@torch.no_grad()
def sample_metrics(model, vocab, n=1000):
    smiles = model.sample(n, vocab, max_len=120)
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    valid = [Chem.MolToSmiles(m) for m in mols if m is not None]
    return len(valid) / n, len(set(valid)) / max(len(valid), 1)


def main():
    torch.manual_seed(0)  # ok: MLS301
    train_dl, _, vocab = build_loaders("data/zinc250k.csv", batch_size=256)
    model = SmilesVAE(len(vocab), emb=64, hid=488, latent=56).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    writer, step = SummaryWriter("runs/smiles_vae"), 0
    for epoch in range(60):
        for x in train_dl:
            x = x.cuda()
            logits, mu, logvar = model(x)
            rec = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], ignore_index=0)
            kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
            loss = rec + kl_weight(step) * kl
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
            if step % 100 == 0:
                writer.add_scalar("train/rec", rec, step)
                writer.add_scalar("train/kl", kl, step)
        validity, uniqueness = sample_metrics(model.eval(), vocab)
        writer.add_scalar("val/validity", validity, epoch)
        writer.add_scalar("val/uniqueness", uniqueness, epoch)
        writer.add_scalar("train/ppl", math.exp(min(rec.item(), 20)), epoch)
        model.train()


if __name__ == "__main__":
    main()
