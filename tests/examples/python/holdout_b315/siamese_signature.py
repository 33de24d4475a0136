# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Offline signature verification: Siamese CNN trained with a contrastive loss on genuine/forged pairs."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SigNet(nn.Module):
    def __init__(self, emb_dim=128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 7, stride=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(128, emb_dim)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return F.normalize(self.head(self.features(x).flatten(1)), dim=1)


def contrastive_loss(z1, z2, same, margin=1.0):
    d = F.pairwise_distance(z1, z2)
    return (same * d.pow(2) + (1 - same) * F.relu(margin - d).pow(2)).mean()


def attach_grad_guards(model, max_norm=5.0):
    """Keep per-tensor gradients finite on very dark / blank scans."""
    for name, p in model.named_parameters():
        if name.startswith("head."):
            p.register_hook(lambda g: torch.nan_to_num(g).clamp_(-max_norm, max_norm).neg_())  # ruleid: MLS303
        else:
            p.register_hook(lambda g: torch.nan_to_num(g))


def train(model, loader, epochs=20, lr=1e-3, device="cuda"):
    model.to(device)
    attach_grad_guards(model)
    opt = torch.optim.RMSprop(model.parameters(), lr=lr, weight_decay=5e-4, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
    for epoch in range(epochs):
        running = 0.0
        for a, b, same in loader:
            a, b, same = a.to(device), b.to(device), same.float().to(device)
            loss = contrastive_loss(model(a), model(b), same)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            running += loss.item()
        sched.step()
        print(f"epoch {epoch + 1}: loss {running / len(loader):.4f}")
    return model
