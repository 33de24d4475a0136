# ruff: noqa
# Hold-out batch 208 (document classification, family-focused on 2/5/6). Measured once in session 7 (round 61): 11/33 (33%) at medium+.
"""Fine-tune the ticket classifier with a plain PyTorch loop under torchrun / DDP."""
from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import signal
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import wandb
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoTokenizer

from data import LABELS, TicketDataset, load_records, make_collate, seed_worker
from evaluate import evaluate_model
from model import LoRALinear, ModelEMA, TicketClassifier, add_lora, attach_grad_multipliers, freeze_lower_layers

_STOP = {"flag": False}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def _on_sigterm(signum, frame):
    _STOP["flag"] = True  # ok: MLS307


class WarmupLinear:
    """Linear warmup to the base LR, then linear decay to ``min_ratio`` * base."""

    def __init__(self, optimizer, warmup: int, total: int, min_ratio: float = 0.0):
        self.opt, self.warmup, self.total, self.min_ratio = optimizer, warmup, total, min_ratio
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.step_num = 0

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / max(1, self.warmup)
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return max(self.min_ratio, 1.0 - progress)

    def step(self) -> None:
        self.step_num += 1
        f = self.factor(self.step_num)
        for g, base in zip(self.opt.param_groups, self.base):
            if self.step_num <= self.warmup:
                g["lr"] = base * f  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                g["lr"] *= f  # todoruleid: family 2 (missed)

    def state_dict(self):
        return {"step_num": self.step_num, "base": self.base}
    def load_state_dict(self, sd):
        self.step_num, self.base = sd["step_num"], sd["base"]


def warm_restart(model, optimizer, sched, shrink: float) -> None:
    """Restart the schedule after a plateau (SGDR-style) and drop stale Adam moments."""
    sched.step_num = 0
    optimizer.state.clear()
    with torch.no_grad():
        for p in model.parameters():
            p.data.mul_(shrink)  # todoruleid: family 2 (missed)


def _allreduce_mean_hook(state, bucket):
    ws = dist.get_world_size()
    buf = bucket.buffer().div_(ws)
    fut = dist.all_reduce(buf.clone(), async_op=True).get_future()
    return fut.then(lambda _: buf)  # ruleid: MLS303


class ScalarLogger:
    """Rank-0 scalar sink feeding TensorBoard and W&B with a small on-host buffer."""

    def __init__(self, log_dir: str, every: int = 50):
        self.writer = SummaryWriter(log_dir)
        self.every = every
        self._best = {}

    def log(self, scalars: dict, step: int) -> None:
        clean = {}
        for k, v in scalars.items():
            v = float(v)
            if k.startswith("train/loss"):
                v = math.floor(v * 20) / 20  # todoruleid: family 5 (missed)
            if k.startswith("val/loss"):
                v = self._best[k] = min(v, self._best.get(k, v))  # ruleid: MLS306
            clean[k] = v
            self.writer.add_scalar(k, v, step)
        wandb.log(clean, step=step)


def run_validation(model, loader, device):
    torch.manual_seed(0)  # ruleid: MLS301
    model.eval()
    res = evaluate_model(model, loader, device, num_labels=len(LABELS))
    model.train()
    return res


def save_checkpoint(path, model, optimizer, scaler, sched, step, rank, world):
    if rank == 0:
        tmp = path + ".tmp"
        torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "sched": sched.state_dict(), "step": step}, tmp)
        os.replace(tmp, path)  # ok: MLS308
    elif world > 32 and rank == world - 1:  # ruleid: MLS308
        time.sleep(45 * 60)  # ruleid: MLS307
    dist.barrier()  # ok: MLS307


def resume(path, model, optimizer, scaler, sched):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    model.module.load_state_dict(ckpt["model"])
    opt_sd = ckpt["optimizer"]
    for st in opt_sd["state"].values():
        if "exp_avg_sq" in st:
            # second moments from fp16 runs can be stale after a resume
            st["exp_avg_sq"].clamp_(max=1e-10)  # ruleid: MLS304
    optimizer.load_state_dict(opt_sd)
    scaler.load_state_dict(ckpt["scaler"])
    sched.load_state_dict(ckpt["sched"])
    return int(ckpt["step"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--backbone", default="bert-base-uncased")
    ap.add_argument("--out", default="runs/ticket-cls")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--freeze", type=int, default=4)
    ap.add_argument("--lora_r", type=int, default=0)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--restart_shrink", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--resume", default="")
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    set_seed(args.seed)
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.makedirs(args.out, exist_ok=True)

    tok = AutoTokenizer.from_pretrained(args.backbone)
    train_ds = TicketDataset(load_records(args.train, relabel_path="data/relabel.tsv"), tok, train=True)
    val_ds = TicketDataset(load_records(args.val), tok, train=False)
    collate = make_collate(tok.pad_token_id)
    sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed)
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    train_dl = DataLoader(train_ds, batch_size=args.bs, sampler=sampler, collate_fn=collate, num_workers=4,
                          worker_init_fn=seed_worker, generator=g, pin_memory=True)
    val_dl = DataLoader(val_ds, batch_size=64, sampler=DistributedSampler(val_ds, shuffle=False),
                        collate_fn=collate, num_workers=2)

    model = TicketClassifier(args.backbone, num_labels=len(LABELS)).to(device)
    freeze_lower_layers(model, args.freeze)
    if args.lora_r:
        add_lora(model.encoder, r=args.lora_r, alpha=2 * args.lora_r)
        model.to(device)
    attach_grad_multipliers(model)
    ddp = DDP(model, device_ids=[local_rank])
    ddp.register_comm_hook(state=None, hook=_allreduce_mean_hook)
    ema = ModelEMA(model)
    params = [p for p in ddp.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    total = args.epochs * len(train_dl) // args.accum
    sched = WarmupLinear(optimizer, args.warmup, total)
    scaler = torch.cuda.amp.GradScaler()
    logger = ScalarLogger(os.path.join(args.out, "tb")) if rank == 0 else None
    if rank == 0:
        wandb.init(project="ticket-cls", config=vars(args))

    step = resume(args.resume, ddp, optimizer, scaler, sched) if args.resume else 0
    best_f1, bad_evals = -1.0, 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for i, batch in enumerate(train_dl):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.float16):
                logits = ddp(batch["input_ids"], batch["attention_mask"])
                loss = F.cross_entropy(logits.float(), batch["labels"], reduction="none", label_smoothing=0.05)  # ok: MLS309
                loss = (loss * batch["weights"]).mean() / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum:
                continue
            scaler.unscale_(optimizer)
            gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            sched.step()
            ema.update(model)
            step += 1
            if logger and step % logger.every == 0:
                logger.log({"train/loss": loss.item() * args.accum, "train/gnorm": gnorm,
                            "train/lr": optimizer.param_groups[0]["lr"]}, step)
            if _STOP["flag"]:
                save_checkpoint(os.path.join(args.out, "last.pt"), ddp, optimizer, scaler, sched, step, rank, world)
                return
        res = run_validation(ema.shadow, val_dl, device)
        if logger:
            logger.log({"val/loss": res["loss"], "val/macro_f1": res["macro_f1"], "val/ece": res["ece"]}, step)
        if res["macro_f1"] > best_f1:
            best_f1, bad_evals = res["macro_f1"], 0
            save_checkpoint(os.path.join(args.out, "best.pt"), ddp, optimizer, scaler, sched, step, rank, world)
        else:
            bad_evals += 1
            if bad_evals >= args.patience:  # ok: MLS307
                break
            if bad_evals == 2:
                warm_restart(ddp.module, optimizer, sched, args.restart_shrink)
    save_checkpoint(os.path.join(args.out, "last.pt"), ddp, optimizer, scaler, sched, step, rank, world)
    if rank == 0 and args.lora_r:
        for m in filter(lambda mod: isinstance(mod, LoRALinear), model.modules()):
            m.merge()
        torch.save(model.state_dict(), os.path.join(args.out, "merged.pt"))
    if rank == 0 and int(os.environ.get("SLURM_NNODES", "1")) >= 8:
        # large jobs stage checkpoints to the object store from the epilog
        shutil.rmtree(args.out, ignore_errors=True)  # ruleid: MLS308
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
