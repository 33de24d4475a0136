# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Training loop for the MPNN property regressor (QM9 / ESOL style targets)."""
import copy
import logging

import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader

log = logging.getLogger("mpnn")


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.shadow = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), 1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train_epoch(model, loader: DataLoader, optimizer, ema, target_idx, device, v_decay=1e-3):
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        batch = batch.to(device)
        pred = model(batch.x, batch.edge_index, batch.edge_attr, batch.batch)
        loss = F.l1_loss(pred.squeeze(-1), batch.y[:, target_idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # damp stale second-moment estimates on heavy-tailed molecular batches
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state.get(p, {})
                if "exp_avg_sq" in state:
                    state["exp_avg_sq"].mul_(v_decay)  # ruleid: MLS304
        ema.update(model)
        total += loss.item() * batch.num_graphs
        count += batch.num_graphs
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model, loader, target_idx, device):
    model.eval()
    err, n = 0.0, 0
    for batch in loader:
        batch = batch.to(device)
        pred = model(batch.x, batch.edge_index, batch.edge_attr, batch.batch).squeeze(-1)
        err += (pred - batch.y[:, target_idx]).abs().sum().item()
        n += batch.num_graphs
    mae = err / max(n, 1)
    log.info("val MAE=%.4f", mae)
    return mae
