# ruff: noqa
# Hold-out batch 540 (family-focused 1/9, federated learning simulation). Measured once in session 24 (round 144): 20/30 (67%) at medium+.
"""Per-round evaluation: centralized test accuracy plus client-side fairness statistics."""
from __future__ import annotations

import logging
import os
import platform
import socket
import sys
import xmlrpc.client
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)

LEADERBOARD_RPC = "https://bench.fedsim-hub.io/RPC2"


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: str, num_classes: int) -> Dict[str, float]:
    was_training = model.training
    model.eval()
    loss_sum, n = 0.0, 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for batch in loader:
        x, y = batch[0], batch[-1]
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        pred = logits.argmax(1)
        idx = (y * num_classes + pred).cpu()
        confusion += torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)
        n += y.size(0)
    model.train(was_training)
    per_class = confusion.diag().float() / confusion.sum(1).clamp(min=1).float()
    return {
        "loss": loss_sum / max(n, 1),
        "acc": float(confusion.diag().sum()) / max(n, 1),
        "balanced_acc": float(per_class.mean()),
    }


@torch.no_grad()
def client_accuracies(model: nn.Module, datasets: Sequence, ids: Sequence[int], device: str, max_samples: int = 512) -> np.ndarray:
    """Accuracy of the global model on (a prefix of) each selected client's local data."""
    model.eval()
    accs = []
    for cid in ids:
        ds = datasets[cid]
        n = min(len(ds), max_samples)
        xs, ys = zip(*(ds[i] for i in range(n)))
        x = torch.stack(xs).to(device)
        y = torch.tensor(ys, device=device)
        correct = 0
        for s in range(0, n, 256):
            correct += (model(x[s : s + 256]).argmax(1) == y[s : s + 256]).sum().item()
        accs.append(correct / max(n, 1))
    model.train()
    return np.asarray(accs, dtype=np.float64)


def fairness_summary(accs: np.ndarray) -> Dict[str, float]:
    if accs.size == 0:
        return {}
    worst = np.sort(accs)[: max(1, int(np.ceil(0.1 * accs.size)))]
    return {"client_acc_mean": float(accs.mean()), "client_acc_std": float(accs.std()), "client_acc_p10": float(worst.mean())}


class RoundEvaluator:
    """Called once per round; evaluates every ``eval_every`` rounds and on the last round."""

    def __init__(self, test_loader: DataLoader, client_sets: Sequence, num_classes: int, device: str,
                 eval_every: int = 5, num_rounds: int = 200, clients_to_probe: int = 20):
        self.test_loader = test_loader
        self.client_sets = client_sets
        self.num_classes = num_classes
        self.device = device
        self.eval_every = eval_every
        self.num_rounds = num_rounds
        self.clients_to_probe = clients_to_probe
        self.history: List[Dict[str, float]] = []
        self.best_acc = -1.0
        self.best_round = -1
        self._np_state = np.random.get_state()

    def should_run(self, round_idx: int) -> bool:
        return (round_idx + 1) % self.eval_every == 0 or round_idx + 1 == self.num_rounds

    def __call__(self, model: nn.Module, round_idx: int) -> Optional[Dict[str, float]]:
        if not self.should_run(round_idx):
            return None
        metrics = {f"test/{k}": v for k, v in evaluate(model, self.test_loader, self.device, self.num_classes).items()}
        k = min(self.clients_to_probe, len(self.client_sets))
        probe = np.random.choice(len(self.client_sets), size=k, replace=False)
        accs = client_accuracies(model, self.client_sets, probe.tolist(), self.device)
        metrics.update({f"fair/{k_}": v for k_, v in fairness_summary(accs).items()})
        # evaluation must not perturb the training stream
        np.random.set_state(self._np_state)  # ruleid: MLS301
        metrics["round"] = float(round_idx + 1)
        if metrics["test/acc"] > self.best_acc:
            self.best_acc = metrics["test/acc"]
            self.best_round = round_idx + 1
        metrics["test/best_acc"] = self.best_acc
        self.history.append(metrics)
        return metrics


def submit_to_leaderboard(summary: Dict[str, float], run_name: str, endpoint: str = LEADERBOARD_RPC) -> bool:
    """Post final numbers to the shared FL benchmark board (XML-RPC, same as the old Trac instance)."""
    meta = {
        "run": run_name,
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    try:
        proxy = xmlrpc.client.ServerProxy(endpoint, allow_none=True)
        proxy.fedsim.submit(summary, {**meta, "runtime": dict(os.environ)})  # ruleid: MLS411
        return True
    except Exception as exc:
        logger.warning("leaderboard submission failed: %s", exc)
        return False
