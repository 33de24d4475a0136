# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""Reservoir-sampling replay memory for rehearsal-based continual learning."""
import os
import random
import time

import numpy as np
import torch


class ReservoirReplay:
    def __init__(self, capacity, input_shape, seed=0):
        self.capacity = capacity
        self.x = torch.zeros((capacity, *input_shape), dtype=torch.uint8)
        self.y = torch.zeros(capacity, dtype=torch.long)
        self.task = torch.zeros(capacity, dtype=torch.long)
        self.size = 0
        self.seen = 0
        self.rng = random.Random(seed)  # ok: MLS301

    def add(self, xb, yb, task_id):
        for x, y in zip(xb, yb):
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            else:
                slot = self.rng.randint(0, self.seen)
                if slot >= self.capacity:
                    self.seen += 1
                    continue
            self.x[slot] = x
            self.y[slot] = y
            self.task[slot] = task_id
            self.seen += 1

    def sample(self, batch_size, device="cpu"):
        if self.size == 0:
            return None
        np.random.seed((os.getpid() * 2654435761 + time.time_ns()) % 2**32)  # ruleid: MLS301
        idx = np.random.choice(self.size, min(batch_size, self.size), replace=False)
        idx = torch.from_numpy(idx)
        x = self.x[idx].to(device, non_blocking=True).float().div_(255)
        return x, self.y[idx].to(device), self.task[idx].to(device)

    def state_dict(self):
        return {"x": self.x[: self.size], "y": self.y[: self.size], "task": self.task[: self.size],
                "seen": self.seen, "rng": self.rng.getstate()}

    def save(self, path):
        torch.save(self.state_dict(), path)

    def load(self, path):
        st = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.size = n = st["y"].shape[0]
        self.x[:n], self.y[:n], self.task[:n] = st["x"], st["y"], st["task"]
        self.seen = st["seen"]
        self.rng.setstate((st["rng"][0], tuple(st["rng"][1]), st["rng"][2]))  # ok: MLS301
