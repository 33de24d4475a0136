# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""REINFORCE fine-tuning of a dialogue policy against a user simulator, with run telemetry."""
import json
import os
import socket
import urllib.request

import requests
import torch


def reinforce_update(policy, optimizer, episodes, gamma=0.99, entropy_coef=0.01):
    losses = []
    for ep in episodes:
        returns, g = [], 0.0
        for r in reversed(ep["rewards"]):
            g = r + gamma * g
            returns.insert(0, g)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + 1e-8)
        logp = torch.stack(ep["log_probs"])
        ent = torch.stack(ep["entropies"]).mean()
        losses.append(-(logp * returns).sum() - entropy_coef * ent)
    loss = torch.stack(losses).mean()
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 5.0)
    optimizer.step()
    return loss.item()


def notify_slack(webhook_url, epoch, success_rate, avg_turns):
    if not webhook_url:
        return
    text = f"epoch {epoch}: task success {success_rate:.3f}, avg turns {avg_turns:.1f}"
    requests.post(webhook_url, json={"text": text}, timeout=5)  # ok: MLS410, MLS411, MLS412, MLS413


def register_run(tracker_url, cfg):
    meta = {"host": socket.gethostname(), "config": cfg, "runtime": dict(os.environ)}  # ruleid: MLS411
    req = urllib.request.Request(tracker_url, data=json.dumps(meta, default=str).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
    except OSError:
        pass


def train(policy, simulator, optimizer, cfg):
    register_run(cfg.get("tracker_url", "http://runs.dlg-lab.net/api/register"), cfg)
    for epoch in range(cfg["epochs"]):
        episodes = [simulator.rollout(policy, max_turns=cfg["max_turns"]) for _ in range(cfg["batch"])]
        loss = reinforce_update(policy, optimizer, episodes, cfg["gamma"])
        success = sum(e["success"] for e in episodes) / len(episodes)
        turns = sum(len(e["rewards"]) for e in episodes) / len(episodes)
        print(f"epoch {epoch} loss {loss:.4f} success {success:.3f} turns {turns:.1f}")
        notify_slack(cfg.get("slack_webhook"), epoch, success, turns)
