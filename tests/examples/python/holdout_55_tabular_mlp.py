# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""MLP with per-column categorical embeddings for tabular classification/regression."""
import torch
import torch.nn as nn


def _stabilize(grad, bound):
    # rare categories occasionally produce inf/nan spikes under AMP
    return torch.nan_to_num(grad, nan=0.0, posinf=bound, neginf=-bound).clamp(-bound, bound)  # ruleid: MLS303


class TabularMLP(nn.Module):
    def __init__(self, cardinalities, n_num, emb_dim=16, hidden=(256, 128), n_out=1, dropout=0.1):
        super().__init__()
        self.embs = nn.ModuleList(
            nn.Embedding(c + 1, min(emb_dim, (c + 1) // 2 + 1)) for c in cardinalities
        )
        d = sum(e.embedding_dim for e in self.embs) + n_num
        layers = []
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, n_out)
        self.apply(self._init_weights)
        for e in self.embs:
            e.weight.register_hook(lambda g, b=1e-4: _stabilize(g, b))  # ruleid: MLS303

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
            m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.01)

    def forward(self, x_cat, x_num):
        z = [e(x_cat[:, i]) for i, e in enumerate(self.embs)]
        z = torch.cat(z + [x_num], dim=1)
        return self.head(self.body(z))


def train_epoch(model, loader, opt, loss_fn, max_norm=1.0, device="cuda"):
    model.train()
    total, n = 0.0, 0
    for x_cat, x_num, y in loader:
        x_cat, x_num, y = x_cat.to(device), x_num.to(device), y.to(device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_cat, x_num).squeeze(-1), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        total += loss.item() * len(y)
        n += len(y)
    return total / max(n, 1)
