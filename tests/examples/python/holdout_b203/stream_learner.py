# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""Online learner for a click-stream: consumes mini-batches from a queue, updates the model
incrementally and tracks prequential accuracy with a Page-Hinkley drift detector."""
import queue

import torch
import torch.nn as nn
import torch.nn.functional as F


class PageHinkley:
    def __init__(self, delta=0.005, threshold=30.0):
        self.delta, self.threshold = delta, threshold
        self.mean, self.n, self.cum, self.min_cum = 0.0, 0, 0.0, 0.0

    def update(self, err):
        self.n += 1
        self.mean += (err - self.mean) / self.n
        self.cum += err - self.mean - self.delta
        self.min_cum = min(self.min_cum, self.cum)
        return self.cum - self.min_cum > self.threshold


class OnlineLearner:
    def __init__(self, n_features, n_classes, lr=1e-2, seed=0):
        self.gen = torch.Generator().manual_seed(seed)  # ok: MLS301
        self.model = nn.Sequential(nn.Linear(n_features, 64), nn.ReLU(), nn.Dropout(0.2),
                                   nn.Linear(64, n_classes))
        self.lr = lr
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9)
        self.detector = PageHinkley()
        self._rng_state = torch.get_rng_state()
        self.correct = self.seen = 0

    def _on_drift(self):
        # fresh optimizer so stale momentum does not drag the model toward the old concept
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=0.9)  # ok: MLS302, MLS303, MLS304, MLS305
        self.detector = PageHinkley()
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301

    def step(self, x, y):
        self.model.eval()
        with torch.no_grad():
            pred = self.model(x).argmax(-1)
        self.correct += (pred == y).sum().item()
        self.seen += len(y)
        self.model.train()
        loss = F.cross_entropy(self.model(x), y)
        self.opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        self.opt.step()
        if self.detector.update(1.0 - (pred == y).float().mean().item()):
            self._on_drift()
        return loss.item()

    def run(self, q: "queue.Queue", log_every=500):
        step = 0
        while True:
            item = q.get()
            if item is None:
                break
            self.step(*item)
            step += 1
            if step % log_every == 0:
                print(f"step {step} prequential acc {self.correct / max(self.seen, 1):.4f}")
