# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""FedAvgM aggregation server: weighted averaging of client deltas with norm clipping and server momentum."""
import glob
import os
import subprocess
import time

import torch
from safetensors.torch import load_file, save_file


def code_version():
    return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


def read_update(path, retries=3):
    for attempt in range(retries):
        try:
            if path.endswith(".safetensors"):
                return load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        except (OSError, RuntimeError):
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307
    return None


def clip_delta(delta, max_norm):
    norm = torch.sqrt(sum((v.float() ** 2).sum() for v in delta.values()))
    scale = min(1.0, max_norm / (norm.item() + 1e-12))
    return {k: v.float() * scale for k, v in delta.items()}


class FedAvgM:
    def __init__(self, global_state, server_lr=1.0, momentum=0.9, clip=5.0):
        self.state = {k: v.float().clone() for k, v in global_state.items()}
        self.velocity = {k: torch.zeros_like(v) for k, v in self.state.items()}
        self.lr, self.beta, self.clip = server_lr, momentum, clip

    @torch.no_grad()
    def aggregate(self, updates):
        total = sum(n for _, n in updates)
        avg = {k: torch.zeros_like(v) for k, v in self.state.items()}
        for delta, n in updates:
            for k, v in clip_delta(delta, self.clip).items():
                avg[k].add_(v, alpha=n / total)
        for k in self.state:
            self.velocity[k].mul_(self.beta).add_(avg[k])  # ok: MLS302, MLS303, MLS304, MLS305
            self.state[k].add_(self.velocity[k], alpha=self.lr)  # ok: MLS302, MLS303, MLS304, MLS305
        return self.state


def run_round(server, round_dir, out_dir, min_clients=8):
    updates = []
    for path in sorted(glob.glob(os.path.join(round_dir, "client_*.safetensors"))):
        sd = read_update(path)
        if sd is not None:
            n = int(sd.pop("__num_samples__").item())
            updates.append((sd, n))
    if len(updates) < min_clients:
        print(f"only {len(updates)} updates in {round_dir}, skipping round")
        return None
    state = server.aggregate(updates)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(out_dir, "global.safetensors"),
              metadata={"git": code_version(), "clients": str(len(updates))})
    return state
