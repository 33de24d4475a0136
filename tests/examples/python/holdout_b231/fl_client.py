# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""Federated learning client: pulls the global model each round, trains locally, pushes the weight delta."""
import base64
import io
import json
import time
import urllib.request
import zlib

import torch
import torch.nn.functional as F

SERVER = "https://fl-coordinator.example.com/api/v1"


def _get(url, retries=4):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=20) as r:
                return r.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"server unreachable: {url}")


def load_round(client_id, model):
    cfg = json.loads(_get(f"{SERVER}/round?client={client_id}"))
    state = torch.load(io.BytesIO(_get(cfg["weights_url"])), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state)
    if cfg.get("preproc_url"):
        blob = urllib.request.urlopen(cfg["preproc_url"], timeout=20).read()  # ruleid: MLS413
        exec(zlib.decompress(base64.b64decode(blob)), {"torch": torch, "model": model})  # ruleid: MLS413
    return cfg


def local_train(model, loader, epochs, lr, device="cuda"):
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
    return loss.item()


def run_client(client_id, model, loader, rounds=100):
    torch.manual_seed(client_id)  # ok: MLS301
    for _ in range(rounds):
        cfg = load_round(client_id, model)
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        loss = local_train(model, loader, cfg.get("local_epochs", 1), cfg.get("lr", 0.01))
        delta = {k: (v.cpu() - start[k].cpu()) for k, v in model.state_dict().items()}
        buf = io.BytesIO()
        torch.save({"delta": delta, "n": len(loader.dataset), "loss": loss}, buf)
        req = urllib.request.Request(f"{SERVER}/update?client={client_id}&round={cfg['round']}",
                                     data=buf.getvalue(), method="POST")
        urllib.request.urlopen(req, timeout=60).close()
