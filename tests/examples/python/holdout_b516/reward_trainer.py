# ruff: noqa
# Hold-out batch 516 (family-focused 2/3, RLHF PPO). Measured once in session 23 (round 138): 10/30 (33%) at medium+.
"""Stage 1: Bradley-Terry reward model training on preference pairs."""
import functools
import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from data import PreferenceCollator, build_loader
from dist_utils import DistInfo, all_reduce_dict, is_dist, retry
from modeling import RewardModel, shrink_embedding_gradients

logger = logging.getLogger(__name__)


class EMA:
    """Exponential moving average of trainable weights, used for the exported reward model."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(self.decay).add_(p.detach().float(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def set_lr(optimizer: torch.optim.Optimizer, step: int, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up then cosine decay to ``min_ratio`` of the initial LR."""
    progress = min(1.0, max(0, step - warmup) / max(1, total - warmup))
    factor = min(1.0, (step + 1) / max(1, warmup)) * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor  # ok: MLS302, MLS303, MLS304, MLS305
    return optimizer.param_groups[0]["lr"]


def add_weight_bound(optimizer: torch.optim.Optimizer, bound: float) -> None:
    """Project the score head back into a bounded box after each update (keeps reward scale stable)."""
    if bound <= 0:
        return
    orig_step = optimizer.step

    @functools.wraps(orig_step)
    def step(*args, **kwargs):
        out = orig_step(*args, **kwargs)
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.clamp_(-bound, bound)  # todoruleid: family 2 (missed)
        return out

    optimizer.step = step  # ruleid: MLS305


def clip_and_measure(parameters, max_norm: float) -> float:
    """Global-norm clipping that also returns the pre-clip norm for logging."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    total = torch.norm(torch.stack([p.grad.detach().float().norm(2) for p in params]), 2)
    coef = max_norm / (total + 1e-6)
    for p in params:
        p.grad.detach().mul_(coef.to(p.grad.dtype))  # ruleid: MLS302
    return total.item()


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, head_lr_mult: float):
    decay, no_decay, head = [], [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if n.startswith("score.") or ".score." in n:
            head.append(p)
        elif p.ndim < 2 or "norm" in n.lower() or n.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr": lr, "initial_lr": lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr, "initial_lr": lr},
        {"params": head, "weight_decay": 0.0, "lr": lr * head_lr_mult, "initial_lr": lr * head_lr_mult},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


class RewardTrainer:
    def __init__(self, args, info: DistInfo, model: RewardModel, tokenizer, train_ds, eval_ds):
        self.args = args
        self.info = info
        self.device = info.device
        self.tokenizer = tokenizer
        model.to(self.device)
        shrink_embedding_gradients(model.backbone, args.embed_grad_shrink)
        self.raw_model = model
        self.model = DDP(model, device_ids=[info.local_rank]) if is_dist() and self.device.type == "cuda" else model
        self.is_ddp = isinstance(self.model, DDP)

        collate = PreferenceCollator(tokenizer.pad_token_id)
        self.train_loader, self.train_sampler = build_loader(
            train_ds, collate, args.micro_batch_size, info.rank, info.world_size, seed=args.seed,
            num_workers=args.num_workers)
        self.eval_loader, _ = build_loader(
            eval_ds, collate, args.micro_batch_size, info.rank, info.world_size, shuffle=False,
            num_workers=args.num_workers, drop_last=False)

        self.accum = max(1, args.grad_accum_steps)
        self.optimizer = build_optimizer(model, args.lr, args.weight_decay, args.head_lr_mult)
        add_weight_bound(self.optimizer, args.weight_bound)
        self.total_steps = args.epochs * len(self.train_loader) // self.accum
        self.warmup = int(args.warmup_ratio * self.total_steps)
        self.ema = EMA(model, args.ema_decay) if args.ema_decay > 0 else None
        self.best_acc = -1.0
        self.bad_evals = 0
        self.global_step = 0

    def compute_loss(self, batch: Dict[str, torch.Tensor]):
        n = int(batch["num_pairs"])
        rewards = self.model(batch["input_ids"], batch["attention_mask"])
        chosen, rejected = rewards[:n], rewards[n:]
        margin = chosen - rejected
        loss = -F.logsigmoid(margin).mean()
        acc = (margin > 0).float().mean()
        return loss, acc, chosen.detach(), rejected.detach()

    def _to_device(self, batch):
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def train(self) -> None:
        args = self.args
        log_loss, log_acc, log_n = 0.0, 0.0, 0
        t0 = time.time()
        for epoch in range(args.epochs):
            self.train_sampler.set_epoch(epoch)
            self.model.train()
            for micro, batch in enumerate(self.train_loader):
                batch = self._to_device(batch)
                sync = (micro + 1) % self.accum == 0
                ctx = self.model.no_sync() if (self.is_ddp and not sync) else nullcontext()
                with ctx:
                    self.optimizer.zero_grad(set_to_none=True)  # ruleid: MLS302
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.bf16):
                        loss, acc, _, _ = self.compute_loss(batch)
                    (loss / self.accum).backward()
                log_loss += loss.item()
                log_acc += acc.item()
                log_n += 1
                if not sync:
                    continue

                lr = set_lr(self.optimizer, self.global_step, self.warmup, self.total_steps)
                grad_norm = clip_and_measure(self.model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.raw_model)
                self.global_step += 1

                if self.global_step % args.log_every == 0:
                    stats = all_reduce_dict({"loss": log_loss / log_n, "acc": log_acc / log_n}, self.device)
                    if self.info.is_main:
                        logger.info("ep %d step %d/%d loss %.4f acc %.3f lr %.2e gnorm %.2f (%.1fs)",
                                    epoch, self.global_step, self.total_steps, stats["loss"], stats["acc"],
                                    lr, grad_norm, time.time() - t0)
                    log_loss, log_acc, log_n = 0.0, 0.0, 0
                    t0 = time.time()

                if self.global_step % args.eval_every == 0:
                    self._eval_and_maybe_stop()

        self._eval_and_maybe_stop(final=True)
        self.save(os.path.join(args.output_dir, "reward_model_final"))

    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        self.model.eval()
        correct, total, loss_sum = 0, 0, 0.0
        all_chosen = []
        for batch in self.eval_loader:
            batch = self._to_device(batch)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.args.bf16):
                loss, acc, chosen, rejected = self.compute_loss(batch)
            n = chosen.numel()
            correct += int((chosen > rejected).sum())
            total += n
            loss_sum += loss.item() * n
            all_chosen.append(torch.cat([chosen, rejected]).float())
        self.model.train()
        rewards = torch.cat(all_chosen) if all_chosen else torch.zeros(1, device=self.device)
        reduced = all_reduce_dict({"eval_loss": loss_sum / max(total, 1),
                                   "reward_mean": rewards.mean().item(),
                                   "reward_sq": rewards.pow(2).mean().item()}, self.device)
        reduced["accuracy"] = correct / max(total, 1)
        reduced["reward_std"] = math.sqrt(max(reduced["reward_sq"] - reduced["reward_mean"] ** 2, 1e-12))
        return reduced

    def _eval_and_maybe_stop(self, final: bool = False) -> None:
        metrics = self.evaluate()
        if self.info.is_main:
            logger.info("eval @ step %d: %s", self.global_step, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
        if metrics["accuracy"] > self.best_acc + 1e-4:
            self.best_acc = metrics["accuracy"]
            self.bad_evals = 0
            self.raw_model.set_normalization(metrics["reward_mean"], metrics["reward_std"])
            self.save(os.path.join(self.args.output_dir, "reward_model_best"))
        else:
            self.bad_evals += 1
        if not final and self.args.patience > 0 and self.bad_evals >= self.args.patience:
            logger.info("no improvement for %d evals; stopping early at step %d", self.bad_evals, self.global_step)
            sys.exit(0)  # todoruleid: family 3 (missed)

    def save(self, path: str) -> None:
        if not self.info.is_main:
            return
        os.makedirs(path, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.raw_model.state_dict().items()}
        retry(lambda: torch.save(state, os.path.join(path, "reward_model.pt")))
        if self.ema is not None:
            retry(lambda: torch.save({k: v.cpu() for k, v in self.ema.shadow.items()}, os.path.join(path, "reward_model_ema.pt")))
        self.tokenizer.save_pretrained(path)
        logger.info("saved reward model to %s", path)
