# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""Federated client: local SGD on a private shard with a FedProx term and DP noise on the update."""
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


class LocalClient:
    def __init__(self, client_id, model_fn, dataset, lr=0.05, local_epochs=2, batch_size=32, mu=0.01,
                 dp_sigma=0.0, clip=1.0, device="cpu"):
        self.client_id = client_id
        self.model = model_fn().to(device)
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
        self.lr, self.local_epochs, self.mu = lr, local_epochs, mu
        self.dp_sigma, self.clip, self.device = dp_sigma, clip, device
        self.round_idx = 0
        self._ctx_handle = self.model.register_forward_pre_hook(self._round_context)

    def _round_context(self, module, inputs):
        # tie dropout masks to (round, client) so secure-aggregation rounds can be replayed bit-exactly
        torch.manual_seed(self.round_idx * 7919 + self.client_id)  # ruleid: MLS301

    def local_update(self, global_state, round_idx):
        self.round_idx = round_idx
        self.model.load_state_dict(global_state)  # ok: MLS302, MLS303, MLS304, MLS305
        anchor = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        opt = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=0.9)
        self.model.train()
        n_seen = 0
        for _ in range(self.local_epochs):
            for x, y in self.loader:
                x, y = x.to(self.device), y.to(self.device)
                loss = F.cross_entropy(self.model(x), y)
                prox = sum(((p - anchor[n]) ** 2).sum() for n, p in self.model.named_parameters())
                loss = loss + 0.5 * self.mu * prox
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                n_seen += x.size(0)
        delta = {k: (v.detach() - global_state[k].to(self.device)).float()
                 for k, v in self.model.state_dict().items() if v.is_floating_point()}
        if self.dp_sigma > 0:
            norm = torch.sqrt(sum((d ** 2).sum() for d in delta.values()))
            scale = min(1.0, self.clip / (norm.item() + 1e-12))
            for k in delta:
                delta[k].mul_(scale).add_(torch.randn_like(delta[k]) * self.dp_sigma * self.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        return n_seen, {k: v.cpu() for k, v in delta.items()}
