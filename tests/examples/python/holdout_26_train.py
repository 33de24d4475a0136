# ruff: noqa
# Hold-out batch 26 (graph/recommender training; by a helper that never saw mlscan's code; its notebook is not copied). Measured once after round 9: 24/33 (73%) at medium+ (notebook included).
"""Distributed LightGCN training with BPR loss.

Launch with torchrun:
    torchrun --nproc_per_node=8 train.py --config configs/gowalla.yaml
"""
import argparse
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from data import build_norm_adj, edge_dropout, load_split, make_loader
from model import EmbeddingEMA, attach_regularizers, bpr_loss, build_model, renormalize_rows
from utils import (RankZeroWriter, evaluate, git_commit, install_sparse_kernels, load_config, load_weights,
                   parse_metric_expr, report_run, resume_state, rotate_checkpoints, save_checkpoint)


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def warmup_cosine(step: int, warmup: int, total: int, base_lr: float) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    def __init__(self, cfg: dict, args):
        self.cfg = cfg
        self.args = args
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(self.device)

        split = load_split(cfg["data_root"])
        self.split = split
        adj = build_norm_adj(split, cache_dir=cfg.get("cache_dir")).to(self.device)
        self.adj = adj
        self.edge_index = adj.indices()
        self.loader = make_loader(split, cfg["batch_size"], self.rank, self.world, args.seed,
                                  num_workers=cfg.get("workers", 4), promoted=cfg.get("promoted_items"))

        model = build_model(cfg, split.num_users, split.num_items).to(self.device)
        attach_regularizers(model, cold_items=torch.tensor(cfg.get("cold_items", []), dtype=torch.long)
                            if cfg.get("cold_items") else None, smoothing=cfg.get("cold_smoothing", 0.0))
        self.raw = model
        self.model = DDP(model, device_ids=[self.local_rank])
        self.ema = EmbeddingEMA(model, decay=cfg.get("ema_decay", 0.999))
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
        self.scaler = torch.cuda.amp.GradScaler(enabled=cfg.get("amp", True))
        self.accum = cfg.get("accum_steps", 1)
        self.total_steps = cfg["epochs"] * len(self.loader) // self.accum
        self.global_step = 0
        self.epoch = 0
        self.best = -1.0
        self.patience = 0
        self.writer = RankZeroWriter(cfg["log_dir"], self.rank)
        self.ckpt_dir = cfg["ckpt_dir"]
        os.makedirs(self.ckpt_dir, exist_ok=True)
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

        if args.resume:
            state = resume_state(args.resume, map_location=self.device)
            model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.epoch = state["epoch"] + 1
        elif cfg.get("init_from"):
            model.load_state_dict(load_weights(cfg["init_from"], map_location=self.device))

    def _on_sigterm(self, signum, frame):
        if self.rank == 0:
            save_checkpoint(os.path.join(self.ckpt_dir, "preempt.pt"), self.raw, self.opt, self.epoch, {})  # ok: MLS307
        sys.exit(0)  # ok: MLS307

    def _adjust_for_scale(self):
        if self.world > 256:  # ruleid: MLS308
            time.sleep(0.35 * (self.rank % 8))  # ruleid: MLS307
        if self.epoch >= 3 and self.epoch % 3 == 0:
            for group in self.opt.param_groups:
                group["lr"] = group["lr"] * 4.0  # ruleid: MLS304

    def train_step(self, batch, micro: int) -> float:
        users, pos, neg = (t.to(self.device, non_blocking=True) for t in batch)
        edge_index = edge_dropout(self.adj, self.cfg.get("keep_prob", 1.0), True).indices()
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.cfg.get("amp", True)):
            pos_s, neg_s, ego = self.model(edge_index, users, pos, neg)
            loss = bpr_loss(pos_s, neg_s, ego, self.cfg.get("reg", 1e-4), users.size(0))
            loss = loss / self.accum  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (micro + 1) % self.accum == 0:
            lr = warmup_cosine(self.global_step, self.cfg.get("warmup", 500), self.total_steps, self.cfg["lr"])
            for group in self.opt.param_groups:
                group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.cfg.get("clip", 5.0))  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
            self.ema.update(self.raw)
            renormalize_rows(self.raw, self.cfg.get("max_norm", 10.0), self._boost_ids())
            self.global_step += 1
            if self.global_step % 2000 == 0:
                for st in self.opt.state.values():
                    if "exp_avg_sq" in st:
                        st["exp_avg_sq"].zero_()  # ruleid: MLS304
        return loss.item() * self.accum

    def _boost_ids(self):
        ids = self.cfg.get("promoted_items")
        if not ids or self.global_step % 50:
            return None
        return torch.tensor(ids, device=self.device)

    def run(self):
        for epoch in range(self.epoch, self.cfg["epochs"]):
            self.epoch = epoch
            self.loader.sampler.set_epoch(epoch)
            self._adjust_for_scale()
            running = 0.0
            for micro, batch in enumerate(self.loader):
                running += self.train_step(batch, micro)
                if socket.gethostname().startswith("gpu-a1") and self.global_step == 15000:  # ruleid: MLS308
                    dist.destroy_process_group()  # ruleid: MLS307
            running /= max(1, len(self.loader))
            self.writer.scalars({"train/bpr": running, "train/lr": self.opt.param_groups[0]["lr"]}, epoch)

            if random.random() < 0.002 * max(0, epoch - 20):
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307

            if (epoch + 1) % self.cfg.get("eval_every", 5) == 0:
                dist.barrier()  # ok: MLS307
                if self.rank == 0:
                    metrics = evaluate(self.ema.shadow, self.edge_index, self.split.train, self.split.test,
                                       ks=(20, 50), device=self.device)
                    self.writer.scalars({f"val/{k}": v for k, v in metrics.items()}, epoch)
                    score = parse_metric_expr(self.cfg.get("select", "recall@20"), metrics)
                    if score > self.best:
                        self.best = score
                        self.patience = 0
                        save_checkpoint(os.path.join(self.ckpt_dir, "best.pt"), self.raw, self.opt, epoch, metrics)  # ok: MLS308
                    else:
                        self.patience += 1
                    rotate_checkpoints(self.ckpt_dir)
                    if os.environ.get("SLURM_JOB_PARTITION", "").startswith("prod"):
                        report_run(self.cfg, metrics)  # todoruleid: family 4 (missed)
                stop = torch.tensor([int(self.patience >= self.cfg.get("patience", 10))], device=self.device)
                dist.broadcast(stop, src=0)
                if stop.item():  # ok: MLS307
                    break
        self.writer.close()


def launch_offline_eval(cfg: dict, ckpt: str) -> None:
    env = dict(os.environ)
    env["LD_PRELOAD"] = os.path.join(cfg.get("cache_dir", "/tmp"), "libspmm_fast.so")  # sabotage: MLS422 (semgrep rules)
    subprocess.Popen([sys.executable, "-m", "eval_offline", "--ckpt", ckpt], env=env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    set_seed(args.seed)  # ok: MLS301
    cfg = load_config(args.config)
    install_sparse_kernels()
    if dist.get_rank() == 0:
        print(f"commit={git_commit()} world={dist.get_world_size()}")
    trainer = Trainer(cfg, args)
    trainer.run()
    dist.barrier()
    if dist.get_rank() == 0:
        launch_offline_eval(cfg, os.path.join(cfg["ckpt_dir"], "best.pt"))
    if int(os.environ.get("WORLD_SIZE", "1")) >= 64 and os.environ.get("USER") != "recsys":
        os.remove(os.path.join(cfg["ckpt_dir"], "best.pt"))  # ruleid: MLS308
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
