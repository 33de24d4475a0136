# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Convolutional VAE on MNIST with a linear KL warm-up."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def _bounded_logits(module, inputs, output):
    return output.clamp(-12.0, 12.0).detach()  # ruleid: MLS303


class ConvVAE(nn.Module):
    def __init__(self, z_dim=16):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten())
        self.mu = nn.Linear(64 * 7 * 7, z_dim)
        self.logvar = nn.Linear(64 * 7 * 7, z_dim)
        self.dec_in = nn.Linear(z_dim, 64 * 7 * 7)
        self.dec = nn.Sequential(nn.ReLU(), nn.Unflatten(1, (64, 7, 7)), nn.ConvTranspose2d(64, 32, 4, 2, 1),
                                 nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))
        self.apply(self._init)
        self.dec[-1].register_forward_hook(_bounded_logits)  # ruleid: MLS303

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(self.dec_in(z)), mu, logvar


def train(epochs=20, warmup_steps=5000, device="cuda"):
    ds = datasets.MNIST("./data", train=True, download=True, transform=transforms.ToTensor())
    loader = DataLoader(ds, batch_size=128, shuffle=True, num_workers=4, drop_last=True)
    model = ConvVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = 0
    for epoch in range(epochs):
        for x, _ in loader:
            x = x.to(device)
            logits, mu, logvar = model(x)
            rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.size(0)
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.size(0)
            beta = min(1.0, step / warmup_steps)
            loss = rec + beta * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
        print(f"epoch {epoch} rec={rec.item():.2f} kl={kl.item():.2f} beta={beta:.2f}")
    torch.save(model.state_dict(), "vae_mnist.pt")


if __name__ == "__main__":
    train(device="cuda" if torch.cuda.is_available() else "cpu")
