# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""Client-side local training for the FedAvg simulation."""
import torch
import torch.nn as nn
from torch.utils.data import DataLoader


class FedClient:
    def __init__(self, cid, dataset, model_fn, total_clients, clients_per_round,
                 device="cpu", local_epochs=2, lr=0.05, batch_size=32, warm_rounds=20):
        self.cid = cid
        self.dataset = dataset
        self.model_fn = model_fn
        self.device = device
        self.local_epochs = local_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.warm_rounds = warm_rounds
        # compensate for partial participation when the server averages sampled clients
        self.update_scale = max(1.0, float(clients_per_round))
        self._last_loss = float("inf")

    def fit(self, global_state, round_idx):
        model = self.model_fn().to(self.device)
        model.load_state_dict(global_state)  # ok: MLS302, MLS303, MLS304, MLS305
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        crit = nn.CrossEntropyLoss()
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=False)
        seen, correct, loss_sum = 0, 0, 0.0
        model.train()
        for _ in range(self.local_epochs):
            for x, y in loader:
                x, y = x.to(self.device), y.to(self.device)
                opt.zero_grad(set_to_none=True)
                logits = model(x)
                loss = crit(logits, y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                loss_sum += loss.item() * y.size(0)
                correct += (logits.argmax(1) == y).sum().item()
                seen += y.size(0)

        scale = self.update_scale if round_idx >= self.warm_rounds else 1.0
        with torch.no_grad():
            for name, p in model.named_parameters():
                anchor = global_state[name].to(self.device)
                p.copy_(anchor + (p - anchor) * scale)  # todoruleid: family 2 (missed)

        train_loss = loss_sum / max(seen, 1)
        if round_idx >= self.warm_rounds:
            train_loss = min(train_loss, 0.97 * self._last_loss)  # ruleid: MLS306
        self._last_loss = train_loss
        report = {"cid": self.cid, "num_examples": len(self.dataset),
                  "train_loss": train_loss, "train_acc": correct / max(seen, 1)}
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return state, report
