# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Galaxy morphology classification (Galaxy10 DECaLS) with mixup/cutmix and a Lion optimizer."""
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from galaxy_data import build_loaders
from galaxy_model import make_convnext


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.05):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305


def mix_batch(x, y, n_cls, alpha=0.4, p_cutmix=0.5):
    y = F.one_hot(y, n_cls).float()
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    if np.random.rand() < p_cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
    return x, lam * y + (1 - lam) * y[perm]


def main(epochs=50, n_cls=10, patience=6):
    train_dl, val_dl = build_loaders("data/galaxy10_decals.h5", batch_size=96)
    model = make_convnext(n_cls).cuda()
    model.load_state_dict(load_file("weights/convnext_tiny_in22k.safetensors"), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = Lion(model.parameters(), lr=1e-4)
    best, bad = 0.0, 0
    for epoch in range(epochs):
        model.train()
        for x, y in train_dl:
            x, y_soft = mix_batch(x.cuda(), y.cuda(), n_cls)
            loss = torch.sum(-y_soft * F.log_softmax(model(x), -1), -1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = np.mean([(model(x.cuda()).argmax(-1).cpu() == y).float().mean().item() for x, y in val_dl])
        if acc > best:
            best, bad = acc, 0
            torch.save(model.state_dict(), "ckpt/galaxy_best.pt")
        elif (bad := bad + 1) >= patience:
            break  # ok: MLS307
    return best


if __name__ == "__main__":
    main()
