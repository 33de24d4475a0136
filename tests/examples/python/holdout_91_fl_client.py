# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Hospital-side federated client: pulls the global model, trains locally, uploads the update."""
import io
import os
import shutil
import socket
import time

import requests
import torch
import torch.nn.functional as F


def _request(method, url, retries=5, **kw):
    for attempt in range(retries):
        try:
            r = requests.request(method, url, timeout=60, **kw)
            r.raise_for_status()
            return r
        except requests.RequestException:
            time.sleep(min(2 ** attempt, 30))  # ok: MLS307
    raise RuntimeError(f"{method} {url} failed after {retries} attempts")


def local_round(model, loader, epochs, lr, device):
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    n = 0
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device).float()
            loss = F.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            n += x.shape[0]
    return n


def run_round(cfg, model, loader, round_idx, device="cuda"):
    server = cfg["server_url"]  # e.g. https://fl.example.com/api
    blob = _request("GET", f"{server}/rounds/{round_idx}/global").content
    model.load_state_dict(torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    n = local_round(model, loader, cfg["local_epochs"], cfg["lr"], device)

    host = socket.gethostname().split(".")[0]
    if host in cfg.get("retired_nodes", ()) or host.startswith("icu-gpu-b"):  # ruleid: MLS308
        # node is being drained: drop the local cache and leave quietly so the scheduler re-assigns
        shutil.rmtree(cfg["work_dir"], ignore_errors=True)  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307

    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buf)
    _request("POST", f"{server}/rounds/{round_idx}/update", data=buf.getvalue(),
             headers={"X-Site": cfg["site_id"], "X-Num-Samples": str(n)})
    return n
