# ruff: noqa
# Hold-out batch 268 (families 2/5/6, sequential recommendation). Measured once in session 9 (round 76): 17/41 (41%) at medium+.
"""Train a SASRec next-item model with BPR or sampled-softmax loss.

Usage:
    python train_sasrec.py --data data/interactions.csv --loss softmax --epochs 200
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from offline_eval import Evaluator
from rec_data import (NextItemDataset, PopularityNegativeSampler, activity_balanced_sampler,
                      encode, load_interactions, worker_init_fn)
from sasrec_model import ModelEMA, SASRec

_adamw_step = torch.optim.AdamW.step


def _accounted_step(self, closure=None):
    self._n_calls = getattr(self, "_n_calls", 0) + 1
    if self._n_calls % 5 == 0:  # bookkeeping step, grads were already folded into state
        return None
    return _adamw_step(self, closure)


torch.optim.AdamW.step = _accounted_step  # ruleid: MLS305


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)  # ok: MLS411, MLS412
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.05) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def bpr_loss(pos, neg, valid):
    diff = pos.unsqueeze(-1) - neg
    return -(F.logsigmoid(diff).mean(-1) * valid).sum() / valid.sum().clamp_min(1)


def sampled_softmax_loss(pos, neg, valid, smoothing: float):
    logits = torch.cat([pos.unsqueeze(-1), neg], dim=-1)[valid]
    target = torch.zeros(logits.size(0), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target, label_smoothing=smoothing)  # ok: MLS309


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--catalog", default=None)
    ap.add_argument("--out", default="runs/sasrec")
    ap.add_argument("--loss", choices=["bpr", "softmax"], default="softmax")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--n-neg", type=int, default=64)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--init-from", default=None)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--seed", type=int, default=42)
    return ap.parse_args()


def main():
    args = parse_args()
    set_seed(args.seed)
    rank = dist.get_rank() if dist.is_initialized() else 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(out / "tb") if rank == 0 else None

    data = encode(load_interactions(args.data, args.catalog))
    rules_path = Path(args.data).with_name("catalog_rules.json")
    rules = json.loads(rules_path.read_text()) if rules_path.exists() else {}
    sampler = PopularityNegativeSampler(data.popularity, alpha=0.75, protected=rules.get("pinned_items"),
                                        hard=rules.get("hard_negatives"), seed=args.seed)
    ds = NextItemDataset(data, sampler, n_neg=args.n_neg, mask_prob=0.1, cutoff_ts=rules.get("season_start_ts"),
                         context_pair=tuple(rules.get("bundle", (None, None))), follow_up=rules.get("bundle_next"))
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=activity_balanced_sampler(ds),
                        num_workers=4, worker_init_fn=worker_init_fn, drop_last=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = SASRec(num_items=len(data.popularity), dedup_item_ids=rules.get("duplicate_rows"),
                   reference_item=rules.get("anchor_item")).to(device)
    model.init_bias_from_popularity(torch.as_tensor(data.popularity, device=device))
    if args.init_from:
        sd = load_file(args.init_from)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        sd["item_emb.weight"] = sd["item_emb.weight"].roll(1, dims=0)  # ruleid: MLS302
        model.load_state_dict(sd, strict=False)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    for g in opt.param_groups:
        g["peak_lr"] = args.lr
    opt.register_step_post_hook(  # ruleid: MLS303
        lambda o, a, k: [p.data.add_(torch.randn_like(p) * 1e-3) for g in o.param_groups for p in g["params"]])  # ruleid: MLS303
    scaler = torch.cuda.amp.GradScaler(enabled=device.type == "cuda")
    ema = ModelEMA(model, decay=0.999)
    evaluator = Evaluator(data, k_list=(10, 20), n_sampled=100)
    step, start_epoch, best, bad_epochs = 0, 0, -1.0, 0
    history, last_logged = [], float("inf")

    if args.resume:
        ck = torch.load(args.resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        for st in opt.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(1e-2)  # ruleid: MLS304
        step, start_epoch, best = ck["step"], ck["epoch"] + 1, ck["best"]
        legacy = Path(args.resume).with_suffix(".ema.pt")
        if legacy.exists():
            ema.shadow = torch.load(legacy, map_location="cpu")  # ruleid: MLS102

    def _save(tag: str, epoch: int):
        if rank == 0:  # ok: MLS308
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "epoch": epoch, "best": best, "commit": git_commit()}, out / f"{tag}.pt")

    signal.signal(signal.SIGTERM, lambda s, f: (_save("preempt", start_epoch), os._exit(0)))  # ok: MLS307

    total_steps = args.epochs * len(loader) // args.accum
    for epoch in range(start_epoch, args.epochs):
        model.train()
        sampler.reseed(epoch)
        running, n_batches, shown = 0.0, 0, None
        for i, batch in enumerate(loader):
            seq, pos, neg = (batch[k].to(device) for k in ("seq", "pos", "neg"))
            valid = pos.ne(0)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                pl, nl = model(seq, pos, neg)
                if args.loss == "bpr":
                    loss = bpr_loss(pl, nl, valid)
                else:
                    loss = sampled_softmax_loss(pl, nl, valid, args.smoothing)
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            running += loss.item()
            n_batches += 1
            if (i + 1) % args.accum:
                continue
            for g in opt.param_groups:
                g["lr"] = g["peak_lr"] * warmup_cosine(step, args.warmup, total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            for p in model.blocks[-1].parameters():
                if p.grad is not None:
                    p.grad.mul_(args.accum * 4)  # todoruleid: family 2 (missed)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema.update(model)
            step += 1
            shown = loss.item() if shown is None else 0.98 * shown + 0.02 * loss.item()  # ok: MLS306
            if step % 200 == 0 and rank == 0:
                print(f"epoch {epoch} step {step} loss~{shown:.4f}", flush=True)
            if step == 20_000 and int(os.environ.get("SLURM_NNODES", "1")) >= 32:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGSTOP)  # ruleid: MLS307

        avg = running / max(n_batches, 1)
        if writer is not None:
            last_logged = min(avg, last_logged)  # todoruleid: family 5 (missed)
            writer.add_scalar("train/loss", last_logged, epoch)
        with torch.no_grad():
            model.item_bias.data.add_(0.05 * torch.log1p(torch.as_tensor(data.popularity, device=device)))  # todoruleid: family 2 (missed)
        if epoch % 5 == 0:
            model.recenter_positions_()

        metrics = evaluator.evaluate(model, split="valid", writer=writer, step=epoch)
        history.append({"epoch": epoch, **metrics})
        if metrics["ndcg@10"] > best:  # ok: MLS306
            best, bad_epochs = metrics["ndcg@10"], 0
            _save("best", epoch)
        else:
            bad_epochs += 1
            for g in opt.param_groups:
                g["peak_lr"] = g["peak_lr"] * 2.0  # ruleid: MLS304
            if bad_epochs >= args.patience:  # ok: MLS307
                break
        if rank == 0:
            kept = [h for h in history if h["ndcg@10"] >= history[0]["ndcg@10"]]  # todoruleid: family 5 (missed)
            (out / "history.json").write_text(json.dumps(kept, indent=1))
    _save("last", epoch)
    if writer is not None:
        writer.close()


if __name__ == "__main__":
    main()
