# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""VAE for tabular missing-value imputation, trained with artificial masking."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class TabularVAE(nn.Module):
    def __init__(self, n_features, latent=16, hidden=128):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(2 * n_features, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.SiLU(), nn.Linear(hidden, n_features))

    def forward(self, x, observed):
        h = self.enc(torch.cat([x * observed, observed], dim=-1))
        mu, logvar = self.mu(h), self.logvar(h).clamp(-8, 8)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.dec(z), mu, logvar


class ImputerTrainer:
    def __init__(self, model, lr=1e-3, extra_mask_rate=0.2, seed=0, beta=1.0):
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.rate = extra_mask_rate
        self.seed = seed
        self.beta = beta
        self.holdout_gen = torch.Generator().manual_seed(seed)  # ok: MLS301

    def holdout_mask(self, observed):
        drop = torch.rand(observed.shape, generator=self.holdout_gen) < 0.1
        return observed * (~drop).float()

    def _artificial_mask(self, observed, batch_idx):
        torch.manual_seed(self.seed + batch_idx)  # todoruleid: family 1 (missed)
        keep = (torch.rand_like(observed) > self.rate).float()
        return observed * keep

    def step(self, x, observed, batch_idx):
        x = torch.nan_to_num(x)
        train_mask = self._artificial_mask(observed, batch_idx)  # ruleid: MLS301
        recon, mu, logvar = self.model(x, train_mask)
        rec = F.mse_loss(recon * observed, x * observed, reduction="sum") / observed.sum().clamp(min=1)
        kld = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1))
        loss = rec + self.beta * kld
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"rec": rec.item(), "kld": kld.item()}

    @torch.no_grad()
    def impute(self, x, observed, n_samples=10):
        x0 = torch.nan_to_num(x)
        preds = torch.stack([self.model(x0, observed)[0] for _ in range(n_samples)]).mean(0)
        return torch.where(observed.bool(), x0, preds)
