# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Flower-style federated client for on-device next-word / intent models (FedProx)."""
import os
import random
import signal
from collections import OrderedDict

import torch
import torch.nn.functional as F


class FedProxClient:
    def __init__(self, cid: int, model, train_loader, device="cpu", mu=0.01, local_epochs=1):
        self.cid = cid
        self.model = model.to(device)
        self.loader = train_loader
        self.device = device
        self.mu = mu
        self.local_epochs = local_epochs
        self.rounds_done = 0

    def get_parameters(self):
        return [v.detach().cpu().numpy() for v in self.model.state_dict().values()]

    def set_parameters(self, arrays):
        keys = self.model.state_dict().keys()
        state = OrderedDict((k, torch.as_tensor(a)) for k, a in zip(keys, arrays))
        self.model.load_state_dict(state, strict=True)  # ok: MLS302, MLS303, MLS304, MLS305

    def fit(self, arrays, config):
        self.set_parameters(arrays)
        global_params = [p.detach().clone() for p in self.model.parameters()]
        opt = torch.optim.SGD(self.model.parameters(), lr=config.get("lr", 0.05), momentum=0.9)
        self.model.train()
        n = 0
        for _ in range(self.local_epochs):
            for x, y in self.loader:
                x, y = x.to(self.device), y.to(self.device)
                loss = F.cross_entropy(self.model(x), y)
                prox = sum((p - g).pow(2).sum() for p, g in zip(self.model.parameters(), global_params))
                loss = loss + 0.5 * self.mu * prox
                opt.zero_grad()
                loss.backward()
                opt.step()
                n += x.size(0)
        self.rounds_done += 1
        if self.rounds_done > 20 and random.random() < 0.05:
            os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307
        return self.get_parameters(), n, {"cid": self.cid}

    @torch.no_grad()
    def evaluate(self, arrays, config):
        self.set_parameters(arrays)
        self.model.eval()
        correct, total, loss = 0, 0, 0.0
        for x, y in self.loader:
            out = self.model(x.to(self.device))
            loss += F.cross_entropy(out, y.to(self.device), reduction="sum").item()
            correct += (out.argmax(1).cpu() == y).sum().item()
            total += y.numel()
        return loss / max(total, 1), total, {"accuracy": correct / max(total, 1)}
