# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""Federated averaging server: per-round client sampling, weighted aggregation and server momentum (FedAvgM)."""
import copy
import os
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file


class FedAvgServer:
    def __init__(self, model, clients, frac=0.1, server_lr=1.0, momentum=0.9, seed=0, out_dir="fl_ckpt"):
        self.model, self.clients, self.frac = model, clients, frac
        self.server_lr, self.momentum, self.seed, self.out_dir = server_lr, momentum, seed, out_dir
        self.velocity = {k: torch.zeros_like(v) for k, v in model.state_dict().items() if v.is_floating_point()}
        self.best, self.bad_rounds = float("inf"), 0

    def resume(self, path):
        self.model.load_state_dict(load_file(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    def sample_clients(self, rnd):
        rng = np.random.default_rng(self.seed + rnd)  # ok: MLS301
        m = max(1, int(self.frac * len(self.clients)))
        return [int(i) for i in rng.choice(len(self.clients), size=m, replace=False)]

    @torch.no_grad()
    def aggregate(self, updates):
        total = float(sum(n for n, _ in updates))
        state = self.model.state_dict()
        for k, v in self.velocity.items():
            d = sum(delta[k] * (n / total) for n, delta in updates)
            v.mul_(self.momentum).add_(d)  # ok: MLS302, MLS303, MLS304, MLS305
            state[k].add_(v, alpha=self.server_lr)  # ok: MLS302, MLS303, MLS304, MLS305

    def collect(self, selected, deadline_s=600):
        updates, t0 = [], time.time()
        for cid in selected:
            while not self.clients[cid].ready() and time.time() - t0 < deadline_s:
                time.sleep(2.0)  # ok: MLS307
            if self.clients[cid].ready():
                updates.append(self.clients[cid].result())
        return updates

    def run(self, rounds, evaluate, patience=20):
        for rnd in range(rounds):
            selected = self.sample_clients(rnd)
            global_state = copy.deepcopy(self.model.state_dict())
            for cid in selected:
                self.clients[cid].start(global_state, rnd)
            updates = self.collect(selected)
            if updates:
                self.aggregate(updates)
            val_loss = evaluate(self.model)
            print(f"round {rnd}: {len(updates)}/{len(selected)} clients, val_loss={val_loss:.4f}")
            if val_loss < self.best - 1e-4:
                self.best, self.bad_rounds = val_loss, 0
                os.makedirs(self.out_dir, exist_ok=True)
                save_file({k: v.contiguous() for k, v in self.model.state_dict().items()},
                          os.path.join(self.out_dir, "best.safetensors"))
            else:
                self.bad_rounds += 1
            if self.bad_rounds >= patience:
                return rnd  # ok: MLS307
        return rounds
