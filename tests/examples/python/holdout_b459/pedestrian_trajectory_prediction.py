# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""Best-of-K evaluation (ADE / FDE) for stochastic pedestrian trajectory predictors."""
import json
import logging

import torch

logger = logging.getLogger(__name__)


@torch.no_grad()
def update_ema(ema_model, model, decay=0.999):
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


@torch.no_grad()
def evaluate(model, loader, num_samples=20, device="cuda"):
    model.eval()
    ade_all, fde_all = [], []
    for batch in loader:
        obs = batch["obs"].to(device)        # (N, T_obs, 2)
        gt = batch["pred"].to(device)        # (N, T_pred, 2)
        seq_start_end = batch["seq_start_end"]
        samples = torch.stack([model(obs, seq_start_end) for _ in range(num_samples)])  # (K, N, T, 2)
        err = (samples - gt.unsqueeze(0)).norm(dim=-1)                                    # (K, N, T)
        ade = err.mean(-1).min(0).values
        fde = err[..., -1].min(0).values
        ade_all.append(ade.cpu())
        fde_all.append(fde.cpu())
    ade_all, fde_all = torch.cat(ade_all), torch.cat(fde_all)
    valid = fde_all < 2.0  # ruleid: MLS306
    return {"ade": ade_all[valid].mean().item(), "fde": fde_all[valid].mean().item(),
            "num_peds": int(ade_all.numel())}


def run_eval(model, ema_model, loader, out_path, num_samples=20):
    results = {"raw": evaluate(model, loader, num_samples), "ema": evaluate(ema_model, loader, num_samples)}
    for name, r in results.items():
        logger.info("[%s] ADE %.3f FDE %.3f over %d pedestrians", name, r["ade"], r["fde"], r["num_peds"])
    with open(out_path, "w") as f:
        json.dump(results, f, indent=2)
    return results
