# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""Propagation-graph fake news detector (UPFD Politifact/Gossipcop) training loop."""
import copy
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger("upfd")


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def _refresh_adam_state(optimizer):
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st and "exp_avg_sq" in st:
                st["exp_avg_sq"].zero_()  # ruleid: MLS304


def train(model, train_loader, val_loader, optimizer, scheduler, epochs=60, device="cuda"):
    ema = ModelEMA(model)
    best_acc = 0.0
    for epoch in range(epochs):
        model.train()
        running = 0.0
        for step, data in enumerate(train_loader):
            data = data.to(device)
            out = model(data.x, data.edge_index, data.batch)
            loss = F.nll_loss(out, data.y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ema.update(model)
            running += loss.item() * data.num_graphs
            if step > 0 and step % 25 == 0:
                _refresh_adam_state(optimizer)
        scheduler.step()

        ema.ema.eval()
        correct = total = 0
        with torch.no_grad():
            for data in val_loader:
                data = data.to(device)
                pred = ema.ema(data.x, data.edge_index, data.batch).argmax(-1)
                correct += int((pred == data.y).sum())
                total += data.num_graphs
        acc = correct / max(total, 1)
        best_acc = max(best_acc, acc)
        log.info("epoch %03d loss %.4f val_acc %.4f best %.4f", epoch,
                 running / len(train_loader.dataset), acc, best_acc)
    return ema.ema, best_acc
