# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Edge-conditioned message passing network for molecular property regression."""
import torch
import torch.nn as nn
from torch_geometric.nn import NNConv, Set2Set


class MPNN(nn.Module):
    def __init__(self, node_dim: int, edge_dim: int, hidden: int = 64, steps: int = 3,
                 n_tasks: int = 1):
        super().__init__()
        self.steps = steps
        self.embed = nn.Linear(node_dim, hidden)
        edge_net = nn.Sequential(nn.Linear(edge_dim, 128), nn.ReLU(),
                                 nn.Linear(128, hidden * hidden))
        self.conv = NNConv(hidden, hidden, edge_net, aggr="mean")
        self.gru = nn.GRU(hidden, hidden)
        self.set2set = Set2Set(hidden, processing_steps=3)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, n_tasks))
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)
        for p in self.gru.parameters():
            p.register_hook(torch.neg)  # ruleid: MLS303

    def forward(self, data):
        out = torch.relu(self.embed(data.x))
        h = out.unsqueeze(0)
        for _ in range(self.steps):
            m = torch.relu(self.conv(out, data.edge_index, data.edge_attr))
            out, h = self.gru(m.unsqueeze(0), h)
            out = out.squeeze(0)
        return self.head(self.set2set(out, data.batch))


def train_epoch(model, loader, opt, device, y_mean, y_std):
    model.train()
    total, n = 0.0, 0
    for data in loader:
        data = data.to(device)
        pred = model(data)
        loss = nn.functional.mse_loss(pred, (data.y - y_mean) / y_std)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        total += loss.item() * data.num_graphs
        n += data.num_graphs
    return total / max(n, 1)


@torch.no_grad()
def evaluate(model, loader, device, y_mean, y_std):
    model.eval()
    err = 0.0
    for data in loader:
        data = data.to(device)
        err += (model(data) * y_std + y_mean - data.y).abs().sum().item()
    return err / len(loader.dataset)
