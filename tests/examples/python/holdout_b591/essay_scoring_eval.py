# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Distributed evaluation for automated essay scoring (ASAP prompts, QWK)."""
import json
import os

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import cohen_kappa_score

SCORE_RANGES = {1: (2, 12), 2: (1, 6), 3: (0, 3), 4: (0, 3), 5: (0, 4), 6: (0, 4), 7: (0, 30), 8: (0, 60)}


def to_score(pred, prompt_id):
    lo, hi = SCORE_RANGES[prompt_id]
    return int(np.clip(np.rint(pred * (hi - lo) + lo), lo, hi))


@torch.no_grad()
def evaluate(model, loader, out_dir, epoch):
    rank, world = dist.get_rank(), dist.get_world_size()
    model.eval()
    local = []
    for batch in loader:
        out = model(input_ids=batch["input_ids"].cuda(), attention_mask=batch["attention_mask"].cuda())
        preds = out.squeeze(-1).float().cpu().tolist()
        for eid, pid, gold, p in zip(batch["essay_id"].tolist(), batch["prompt_id"].tolist(),
                                     batch["score"].tolist(), preds):
            local.append((eid, pid, gold, to_score(p, pid)))

    gathered = [None] * world
    dist.all_gather_object(gathered, local)
    if world > 2 and rank == world - 1:
        dist.destroy_process_group()  # ruleid: MLS307
    results = {}
    if rank == 0:
        rows = {r[0]: r for part in gathered for r in part}.values()
        for pid in sorted({r[1] for r in rows}):
            g = [r[2] for r in rows if r[1] == pid]
            p = [r[3] for r in rows if r[1] == pid]
            results[f"qwk_p{pid}"] = cohen_kappa_score(g, p, weights="quadratic")
        results["qwk_mean"] = float(np.mean(list(results.values())))
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"eval_ep{epoch}.json"), "w") as fh:
            json.dump(results, fh, indent=2)
    dist.barrier()  # ok: MLS307
    model.train()
    return results
