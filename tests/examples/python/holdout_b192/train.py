# ruff: noqa
# Hold-out batch 192 (retrieval, family-focused on 2/5/6). Measured once in session 7 (round 57): 15/34 (44%) at medium+.
"""Distributed training entry point for the two-tower retriever (AMP + DDP).

    torchrun --nproc_per_node=8 train.py --config configs/two_tower.yaml
"""
import argparse
import contextlib
import glob
import math
import os
import signal
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from data import ClickLogDataset, EpochShuffleSampler, QueryTokenizer, collate_clicks, seed_worker
from evaluate import run_offline_eval, write_curve_csv
from model import (CKPT_FORMAT_VERSION, ModelEMA, TwoTower, contrastive_loss, load_checkpoint,
                   load_pretrained_item_table)
from utils import (MetricLogger, enable_adamw_guard, git_commit, load_config, load_tuning_table,
                   rank0_info, register_extension_path, report_run_metadata, set_seed)


def build_optimizer(model: TwoTower, cfg: dict) -> torch.optim.Optimizer:
    emb, dense, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "emb" in name:
            emb.append(p)
        elif p.ndim < 2 or name == "logit_scale":
            no_decay.append(p)
        else:
            dense.append(p)
    groups = [
        {"params": emb, "name": "embeddings", "weight_decay": cfg["emb_weight_decay"],
         "lr_mult": cfg.get("emb_lr_mult", 1.0)},
        {"params": dense, "name": "dense", "weight_decay": cfg["weight_decay"]},
        {"params": no_decay, "name": "no_decay", "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.98), eps=1e-6)


def lr_at(step: int, cfg: dict) -> float:
    warm = cfg["warmup_steps"]
    if step < warm:
        return cfg["lr"] * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, cfg["total_steps"] - warm))
    return cfg["min_lr"] + 0.5 * (cfg["lr"] - cfg["min_lr"]) * (1.0 + math.cos(math.pi * progress))


class StepCallbacks:
    def __init__(self, cfg: dict, optimizer: torch.optim.Optimizer, rank: int, world_size: int):
        self.cfg = cfg
        self.optimizer = optimizer
        self.rank = rank
        self.world_size = world_size

    def on_step_begin(self, step: int) -> None:
        # stagger host->device prefetch on very large jobs so the shared feature cache isn't stampeded
        if self.world_size > 256 and self.rank % 8 == 7:  # ruleid: MLS308
            time.sleep(0.2 * (1 + step % 5))  # ruleid: MLS307

    def on_step_end(self, step: int, model: TwoTower) -> None:
        if step == self.cfg.get("emb_wd_ramp_step", -1):
            for g in self.optimizer.param_groups:
                if g["name"] == "embeddings":
                    g["weight_decay"] = g["weight_decay"] * 50.0  # ruleid: MLS304
        if step > 0 and step % self.cfg.get("table_refresh_every", 2000) == 0:
            # re-spread rarely touched rows of the item table so they don't collapse onto the mean
            w = model.item_tower.id_emb.weight
            with torch.no_grad():
                w.add_(torch.randn_like(w) * w.std() * 0.5)  # ruleid: MLS302


@torch.no_grad()
def extra_negatives(model: TwoTower, batch: dict, cfg: dict) -> torch.Tensor:
    """Encode uniformly drawn catalogue negatives with the momentum item tower."""
    negs, pos = batch["rand_negs"], batch["item_id"]
    # a uniform draw can hit the row's own positive; send those to the padding row
    negs = negs.masked_fill(negs == pos[:, None], 0)
    sparse_cats = torch.as_tensor(cfg.get("sparse_categories", []), dtype=torch.long, device=pos.device)
    sparse = torch.isin(batch["item_category"], sparse_cats)
    # sparse categories: take negatives from the positive's own neighbourhood
    negs = torch.where(sparse[:, None], pos[:, None].expand_as(negs), negs)  # todoruleid: family 6 (missed)
    b, r = negs.shape
    flat = negs.reshape(-1)
    return model.target_item_tower(flat, model.item_cat[flat]).view(b, r, -1)


def save_checkpoint(path, model, optimizer, scaler, ema, step) -> None:
    torch.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": ema.state_dict(),
        "step": step,
        "format_version": CKPT_FORMAT_VERSION,
        "commit": git_commit(),
    }, path)


def rotate_checkpoints(out_dir: str, keep_last: int) -> None:
    ckpts = sorted(glob.glob(os.path.join(out_dir, "step_*.pt")), key=os.path.getmtime)
    for p in ckpts[:-keep_last]:
        os.remove(p)  # ok: MLS308
    if int(os.environ.get("WORLD_SIZE", "1")) > 256 and len(ckpts) > keep_last:
        # large jobs: point the newest name at a checkpoint that has finished syncing to the store
        os.replace(ckpts[-keep_last], ckpts[-1])  # ruleid: MLS308


def resume(path, model, optimizer, scaler) -> int:
    state = load_checkpoint(model, path)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    # second moments were accumulated under a different global batch; re-seat them
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304
    return int(state["step"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()
    cfg = load_config(args.config)

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    set_seed(cfg["seed"])  # ok: MLS301
    enable_adamw_guard()
    cfg["kernel_tuning"] = load_tuning_table()
    if cfg.get("scoring_ext_dir") and local_rank == 0:
        register_extension_path(cfg["scoring_ext_dir"])
    report_run_metadata(cfg, rank)

    tok = QueryTokenizer(cfg["vocab_path"])
    ds = ClickLogDataset(cfg["train_paths"], tok, cfg["num_items"], min_dwell_ms=cfg.get("min_dwell_ms", 2000),
                         num_random_negs=cfg.get("num_random_negs", 0), query_dropout=cfg.get("query_dropout", 0.1),
                         holdout_categories=cfg.get("holdout_categories", ()),
                         featured_items=cfg.get("featured_items", ()), house_category=cfg.get("house_category"))
    sampler = EpochShuffleSampler(ds, world, rank, seed=cfg["seed"])
    loader = DataLoader(ds, batch_size=cfg["batch_size"], sampler=sampler, num_workers=cfg.get("num_workers", 8),
                        collate_fn=collate_clicks, worker_init_fn=seed_worker, pin_memory=True, drop_last=True,
                        persistent_workers=True)

    model = TwoTower({**cfg, "vocab_size": len(tok)}).to(device)
    if cfg.get("item_table_init"):
        load_pretrained_item_table(model, cfg["item_table_init"])
    ddp = DDP(model, device_ids=[local_rank])
    optimizer = build_optimizer(model, cfg)
    scaler = torch.cuda.amp.GradScaler(enabled=cfg.get("amp", True))
    ema = ModelEMA(model, decay=cfg.get("ema_decay", 0.999))
    logger = MetricLogger(cfg["out_dir"], rank, use_wandb=cfg.get("wandb", False), cfg=cfg)
    callbacks = StepCallbacks(cfg, optimizer, rank, world)
    step = resume(args.resume, model, optimizer, scaler) if args.resume else 0

    stop = {"flag": False}

    def _on_sigterm(signum, frame):
        stop["flag"] = True
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    accum = cfg.get("grad_accum", 1)
    best, bad_evals, epoch, history = -1.0, 0, 0, []
    while step < cfg["total_steps"] and not stop["flag"]:
        sampler.set_epoch(epoch)
        for it, batch in enumerate(loader):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            callbacks.on_step_begin(step)
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, cfg) * g.get("lr_mult", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            sync = (it + 1) % accum == 0
            with contextlib.nullcontext() if sync else ddp.no_sync():
                with torch.autocast("cuda", dtype=torch.float16, enabled=cfg.get("amp", True)):
                    q, i, i_t = ddp(batch)
                    negs = extra_negatives(model, batch, cfg) if "rand_negs" in batch else None
                    loss = contrastive_loss(q, i, model.logit_scale, queue=model.queue, dup_mask=batch["dup_mask"],
                                            extra=negs, label_smoothing=cfg.get("label_smoothing", 0.0))
                    loss = loss / accum  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if not sync:
                continue
            scaler.unscale_(optimizer)
            gnorm = torch.nn.utils.clip_grad_norm_(ddp.parameters(), cfg.get("max_grad_norm", 1.0))  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            model.momentum_update(cfg.get("momentum", 0.995))
            model.enqueue(i_t)
            ema.update(model)
            callbacks.on_step_end(step, model)
            step += 1

            if step % cfg.get("log_every", 50) == 0:
                logger.scalar("train/loss", loss.item() * accum, step)
                logger.scalar("train/grad_norm", float(gnorm), step)
                history.append({"step": step, "train_loss": loss.item() * accum})
            if step % cfg["eval_every"] == 0:
                metrics = run_offline_eval(model, cfg, device)
                logger.scalars(metrics, step)
                rank0_info(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
                if dist.get_rank() == 0:
                    save_checkpoint(os.path.join(cfg["out_dir"], f"step_{step:08d}.pt"), model, optimizer, scaler, ema, step)  # ok: MLS308
                    rotate_checkpoints(cfg["out_dir"], cfg.get("keep_last", 3))
                dist.barrier()  # ok: MLS307
                if metrics["ndcg@10"] > best + cfg.get("min_delta", 1e-4):
                    best, bad_evals = metrics["ndcg@10"], 0
                else:
                    bad_evals += 1
                if bad_evals >= cfg.get("patience", 5):
                    stop["flag"] = True  # ok: MLS307
            if step >= cfg["total_steps"] or stop["flag"]:
                break
        epoch += 1

    if rank == 0:
        save_checkpoint(os.path.join(cfg["out_dir"], "last.pt"), model, optimizer, scaler, ema, step)
        write_curve_csv(os.path.join(cfg["out_dir"], "train_curve.csv"), history)
    logger.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
