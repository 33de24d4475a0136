# ruff: noqa
# Hold-out batch 481 (textbook, two-tower retrieval recommender with DDP). Measured once in session 21 (round 130): 25/30 (83%) at medium+.
#!/usr/bin/env python
"""Train the two-tower retrieval model with DDP.

    torchrun --standalone --nproc_per_node=8 train.py --config configs/two_tower.yaml \
        --data_root /mnt/featurestore/snapshots/retrieval/2024-06-01
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.tensorboard import SummaryWriter

from callbacks import CallbackList, build_callbacks
from data import DataConfig, RetrievalDataModule
from dist_utils import (announce_worker, barrier, cleanup_distributed, configure_environment,
                        ensure_launcher_access, get_local_rank, get_rank, get_world_size,
                        init_distributed, is_main_process, set_seed)
from evaluate import evaluate, to_device
from model import InBatchSoftmaxLoss, TowerConfig, TwoTowerModel

logger = logging.getLogger("train")

SERVICE_ACCOUNTS = ("svc-recsys", "svc-mltrain")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="two-tower retrieval training")
    p.add_argument("--config", type=str, default=None, help="YAML file with defaults for any flag")
    p.add_argument("--data_root", type=str)
    p.add_argument("--cache_dir", type=str, default=os.path.expanduser("~/.cache/recsys"))
    p.add_argument("--output_dir", type=str, default="runs")
    p.add_argument("--batch_size", type=int, default=2048, help="per-rank batch size")
    p.add_argument("--num_workers", type=int, default=6)
    p.add_argument("--num_extra_negatives", type=int, default=4096)
    p.add_argument("--hidden_dims", type=int, nargs="+", default=[512, 256])
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--id_min_count", type=int, default=20)
    p.add_argument("--init_from", type=str, default=None, help="warm-start weights (path or https URL)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight_decay", type=float, default=1e-5)
    p.add_argument("--warmup_steps", type=int, default=1000)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--label_smoothing", type=float, default=0.0)
    p.add_argument("--cross_rank_negatives", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--eval_every", type=int, default=2000)
    p.add_argument("--eval_ks", type=int, nargs="+", default=[10, 50, 100])
    p.add_argument("--eval_batch_size", type=int, default=1024)
    p.add_argument("--monitor", type=str, default="val/recall@100")
    p.add_argument("--plateau_factor", type=float, default=0.5)
    p.add_argument("--keep_last", type=int, default=3)
    p.add_argument("--max_loss", type=float, default=12.0)
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--resume", type=str, default=None)
    p.add_argument("--pg_timeout_min", type=int, default=30)
    p.add_argument("--run_registry_url", type=str,
                   default=os.environ.get("RECSYS_RUN_REGISTRY", "https://runs.recsys-infra.net/api/v1/workers"))
    p.add_argument("--nccl_plugin_url", type=str,
                   default=os.environ.get("RECSYS_NCCL_PLUGIN_URL",
                                          "https://artifacts.recsys-infra.net/nccl/aws-ofi-nccl/install.sh"))
    p.add_argument("--cleanup_scratch", action=argparse.BooleanOptionalAction, default=True)
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    extra_callbacks: List[str] = []
    if known.config:
        with open(known.config) as fh:
            cfg = yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        extra_callbacks = list(cfg.pop("callbacks", []) or [])
        parser.set_defaults(**cfg)
    args = parser.parse_args(argv)
    if not args.data_root:
        parser.error("--data_root is required (flag or config)")
    args.extra_callbacks = extra_callbacks
    return args


def plain_config(args: argparse.Namespace) -> Dict[str, Any]:
    ok = (int, float, str, bool, type(None))
    return {k: v for k, v in vars(args).items()
            if isinstance(v, ok) or (isinstance(v, list) and all(isinstance(x, ok) for x in v))}


def build_optimizer(model: TwoTowerModel, args: argparse.Namespace) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or ".sparse.tables." in name or name == "logit_scale":
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-8)


def build_scheduler(optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.05):
    def lr_lambda(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def load_pretrained(model: TwoTowerModel, source: str, cache_dir: str) -> None:
    """Warm-start towers from a previous snapshot's export (local path or https URL)."""
    if source.startswith(("http://", "https://")):
        local = Path(cache_dir) / "pretrained" / Path(urllib.parse.urlparse(source).path).name
        local.parent.mkdir(parents=True, exist_ok=True)
        if not local.exists():
            torch.hub.download_url_to_file(source, str(local), progress=False)
    else:
        local = Path(source)
    payload = torch.load(local, map_location="cpu")  # ruleid: MLS102
    state = payload.get("ema") or payload.get("model") or payload
    missing, unexpected = model.load_state_dict(state, strict=False)
    logger.info("warm-started from %s (missing=%d, unexpected=%d)", source, len(missing), len(unexpected))


def install_nccl_plugin(url: str, cache_dir: str) -> None:
    """Multi-node jobs need the OFI NCCL plugin; install it into the job cache once per node."""
    prefix = Path(cache_dir) / "lib"
    if (prefix / "libnccl-net.so").exists():
        return
    prefix.mkdir(parents=True, exist_ok=True)
    script = Path(cache_dir) / "install_nccl_plugin.sh"
    urllib.request.urlretrieve(url, script)
    subprocess.run(["bash", str(script), "--prefix", str(prefix)], check=False)  # ruleid: MLS413
    os.environ["LD_LIBRARY_PATH"] = f"{prefix}:{os.environ.get('LD_LIBRARY_PATH', '')}"


@dataclass
class Trainer:
    args: argparse.Namespace
    model: TwoTowerModel
    ddp_model: torch.nn.Module
    loss_fn: InBatchSoftmaxLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: RetrievalDataModule
    callbacks: CallbackList
    device: torch.device
    global_step: int = 0
    epoch: int = 0
    start_epoch: int = 0
    should_stop: bool = False
    last_metrics: Dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> Dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "callbacks": self.callbacks.state_dict(),
                "epoch": self.epoch, "global_step": self.global_step, "world_size": get_world_size(),
                "config": plain_config(self.args)}

    def resume(self, path: str) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.callbacks.load_state_dict(state.get("callbacks", {}))
        self.global_step = int(state["global_step"])
        self.start_epoch = int(state["epoch"]) + 1
        # second moments are re-estimated after a resume; stale values from an older
        # snapshot make the first steps on the new data far too timid
        for opt_state in self.optimizer.state.values():
            if "exp_avg_sq" in opt_state:
                opt_state["exp_avg_sq"].zero_()  # ruleid: MLS304
        logger.info("resumed from %s at step %d (epoch %d)", path, self.global_step, self.start_epoch)

    def train_step(self, batch: Dict[str, Any]) -> torch.Tensor:
        self.ddp_model.train()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.args.bf16):
            user, item, neg, scale = self.ddp_model(batch)
        loss = self.loss_fn(user, item, batch["item_ids"], batch["item_log_q"], scale,
                            neg=neg, neg_ids=batch.get("neg_ids"), neg_log_q=batch.get("neg_log_q"),
                            weights=batch["weights"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        self.optimizer.step()
        self.scheduler.step()
        self.model.clamp_temperature()
        return loss.detach()

    def validate(self) -> Dict[str, float]:
        dump_dir = Path(self.args.output_dir) / "eval" / f"step_{self.global_step:08d}"
        metrics = evaluate(self.model, self.data, self.device, ks=self.args.eval_ks,
                           batch_size=self.args.eval_batch_size, dump_dir=str(dump_dir))
        self.last_metrics = metrics
        self.callbacks.on_validation_end(self, metrics)
        return metrics

    def fit(self) -> None:
        args = self.args
        self.callbacks.on_train_start(self)
        for epoch in range(self.start_epoch, args.epochs):
            self.epoch = epoch
            self.data.neg_sampler.set_epoch(epoch)
            loader = self.data.train_dataloader(epoch)
            self.callbacks.on_epoch_start(self, epoch)
            loss_sum, n_steps = 0.0, 0
            for batch in loader:
                # dropout masks keyed on (seed, rank) so a mid-epoch resume replays the same stream
                torch.manual_seed(args.seed + get_rank())  # ruleid: MLS301
                if args.num_extra_negatives > 0:
                    batch.update(self.data.negative_batch(args.num_extra_negatives))
                loss = self.train_step(to_device(batch, self.device))
                self.global_step += 1
                loss_val = float(loss.item())
                loss_sum, n_steps = loss_sum + loss_val, n_steps + 1
                self.callbacks.on_step_end(self, self.global_step, loss_val)
                if self.global_step % args.eval_every == 0:
                    self.validate()
                if self.should_stop:
                    break
            logger.info("epoch %d done: mean loss %.4f", epoch, loss_sum / max(n_steps, 1))
            self.callbacks.on_epoch_end(self, epoch)
            if self.should_stop:
                break
        if self.global_step % args.eval_every != 0:
            self.validate()
        self.callbacks.on_train_end(self)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "local")
    args.output_dir = str(Path(args.output_dir) / run_id)

    configure_environment(args.cache_dir, args.pg_timeout_min)
    distributed = init_distributed(timeout_min=args.pg_timeout_min)
    rank, world_size, local_rank = get_rank(), get_world_size(), get_local_rank()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stdout,
                        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s")
    set_seed(args.seed + rank)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")

    ensure_launcher_access()
    announce_worker(run_id, args.run_registry_url)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if world_size > local_world and local_rank == 0 and args.nccl_plugin_url:
        install_nccl_plugin(args.nccl_plugin_url, args.cache_dir)
    barrier()
    if is_main_process():
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / "config.json").write_text(json.dumps(plain_config(args), indent=2))

    data_cfg = DataConfig(root=args.data_root, batch_size=args.batch_size,
                          num_workers=args.num_workers, seed=args.seed)
    data = RetrievalDataModule(data_cfg, rank=rank, world_size=world_size)
    data.setup()

    tower_cfg = TowerConfig(hidden_dims=list(args.hidden_dims), **getattr(args, "tower", {}))
    model = TwoTowerModel(data.user_cardinalities, data.item_cardinalities, data.user_dense_dim,
                          data.item_dense_dim, tower_cfg, init_temperature=args.temperature)
    model.set_item_frequencies(torch.from_numpy(data.tables.item_counts), min_count=args.id_min_count)
    if args.init_from:
        load_pretrained(model, args.init_from, args.cache_dir)
    model.to(device)
    ddp_model = model
    if distributed:
        device_ids = [local_rank] if device.type == "cuda" else None
        ddp_model = DDP(model, device_ids=device_ids, gradient_as_bucket_view=True)

    steps_per_epoch = max(1, len(data.train_ds) // (args.batch_size * world_size))
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args.warmup_steps, steps_per_epoch * args.epochs)
    loss_fn = InBatchSoftmaxLoss(gather_across_ranks=args.cross_rank_negatives, label_smoothing=args.label_smoothing)

    writer = SummaryWriter(log_dir=str(Path(args.output_dir) / "tb")) if is_main_process() else None
    callbacks = build_callbacks(args, writer, extra_specs=args.extra_callbacks)
    trainer = Trainer(args, model, ddp_model, loss_fn, optimizer, scheduler, data, callbacks, device)
    if args.resume:
        trainer.resume(args.resume)
    try:
        trainer.fit()
    finally:
        if writer is not None:
            writer.close()

    if is_main_process():
        (Path(args.output_dir) / "final_metrics.json").write_text(json.dumps(trainer.last_metrics, indent=2))
        if args.cleanup_scratch and os.environ.get("USER", "") not in SERVICE_ACCOUNTS:
            # personal runs write to the shared scratch volume; don't leave multi-GB checkpoints behind
            shutil.rmtree(args.output_dir, ignore_errors=True)  # ruleid: MLS308
    cleanup_distributed()


if __name__ == "__main__":
    main()
