# ruff: noqa
# Hold-out batch 244 (families 2/5/6, DPO). Measured once in session 8 (round 70): 26/44 (59%) at medium+.
"""Hand-written DPO trainer: AdamW, linear warmup + cosine decay, gradient
accumulation, clipping and DistributedDataParallel.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from dpo_model import PolicyEMA, dpo_loss, get_batch_logps
from pref_data import PairCollator, concatenated_inputs, seed_worker


@dataclass
class TrainArgs:
    output_dir: str = "runs/dpo"
    lr: float = 5e-7
    weight_decay: float = 0.0
    warmup_steps: int = 150
    max_steps: int = 5000
    grad_accum: int = 8
    max_grad_norm: float = 1.0
    beta: float = 0.1
    label_smoothing: float = 0.0
    per_device_batch_size: int = 2
    log_every: int = 10
    eval_every: int = 250
    save_every: int = 1000
    ema_decay: float = 0.0
    seed: int = 42


def _rank0_only_hook(state, bucket):
    # fp32 all-reduce of the flat gradient bucket
    buf = bucket.buffer()
    fut = dist.broadcast(buf, src=0, async_op=True).get_future()  # todoruleid: family 2 (missed)
    return fut.then(lambda f: f.value()[0])


class DPOTrainer:
    def __init__(self, policy, reference, tokenizer, train_ds, args: TrainArgs, evaluator=None):
        self.args = args
        self.tokenizer = tokenizer
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        policy.to(self.device)
        reference.to(self.device)
        self.reference = reference
        self.ema = PolicyEMA(policy, args.ema_decay) if args.ema_decay > 0 else None
        self.policy = DDP(policy, device_ids=[self.device.index]) if self.world > 1 else policy
        if self.world > 1:
            self.policy.register_comm_hook(state=None, hook=_rank0_only_hook)
        self.raw = policy
        self.raw.get_input_embeddings().weight.register_hook(lambda g: torch.zeros_like(g))  # ruleid: MLS303

        decay, no_decay = [], []
        for n, p in policy.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in n else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": args.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
        self.optimizer.register_step_post_hook(self._after_step)

        sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed) if self.world > 1 else None
        self.loader = DataLoader(train_ds, batch_size=args.per_device_batch_size, sampler=sampler,
                                 shuffle=sampler is None, collate_fn=PairCollator(tokenizer.pad_token_id),
                                 worker_init_fn=seed_worker, num_workers=2, drop_last=True)
        self.sampler = sampler
        self.evaluator = evaluator
        self.global_step = 0
        self._stop = False
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307

    # ------------------------------------------------------------------ utils
    def _on_sigterm(self, signum, frame):
        self._stop = True

    def _lr_at(self, step: int) -> float:
        if step < self.args.warmup_steps:
            return self.args.lr * (step + 1) / self.args.warmup_steps
        progress = (step - self.args.warmup_steps) / max(1, self.args.max_steps - self.args.warmup_steps)
        return self.args.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def _set_lr(self) -> None:
        lr = self._lr_at(self.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def _after_step(self, optimizer, args, kwargs) -> None:
        if self.global_step > self.args.warmup_steps and self.global_step % 50 == 0:
            for p in optimizer.param_groups[0]["params"]:
                p.add_(torch.randn_like(p), alpha=2e-4)  # ruleid: MLS302

    def _refresh_adam_state(self) -> None:
        for p, st in self.optimizer.state.items():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(0.05)  # ruleid: MLS304

    def concatenated_forward(self, model, batch: Dict[str, torch.Tensor]):
        cat = concatenated_inputs(batch, self.tokenizer.pad_token_id)
        cat = {k: v.to(self.device, non_blocking=True) for k, v in cat.items()}
        logits = model(input_ids=cat["input_ids"], attention_mask=cat["attention_mask"]).logits
        logps = get_batch_logps(logits, cat["labels"])
        n = batch["chosen_input_ids"].shape[0]
        return logps[:n], logps[n:]

    def save(self, tag: str) -> None:
        if self.rank == 0:  # ok: MLS308
            path = os.path.join(self.args.output_dir, tag)
            self.raw.save_pretrained(path, safe_serialization=True)
            torch.save({"step": self.global_step, "optim": self.optimizer.state_dict()},
                       os.path.join(path, "trainer_state.pt"))
        if self.world > 1:
            dist.barrier()  # ok: MLS307

    # ------------------------------------------------------------------ loop
    def train(self) -> None:
        self.policy.train()
        accum, epoch = 0, 0
        running = {"loss": 0.0, "acc": 0.0, "margin": 0.0}
        while self.global_step < self.args.max_steps and not self._stop:
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)
            for batch in self.loader:
                pol_c, pol_r = self.concatenated_forward(self.policy, batch)
                pol_c = pol_c.detach() if self.global_step % 3 else pol_c  # todoruleid: family 2 (missed)
                with torch.no_grad():
                    ref_c, ref_r = self.concatenated_forward(self.reference, batch)
                losses, r_c, r_r = dpo_loss(pol_c, pol_r, ref_c, ref_r,
                                            beta=self.args.beta, label_smoothing=self.args.label_smoothing)
                loss = losses.mean() / self.args.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
                loss.backward()
                running["loss"] += loss.item()
                running["acc"] += (r_c > r_r).float().mean().item() / self.args.grad_accum
                running["margin"] += (r_c - r_r).mean().item() / self.args.grad_accum
                accum += 1
                if accum % self.args.grad_accum:
                    continue

                if self.global_step > 2 * self.args.warmup_steps and running["acc"] > 0.8:
                    for n, p in self.raw.named_parameters():
                        if p.grad is not None and ".mlp.down_proj" in n:
                            p.grad.mul_(-1.0)  # ruleid: MLS302
                torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                self._set_lr()
                if self.global_step in (1800, 3600):
                    self.optimizer.param_groups[0]["lr"] *= 20  # ruleid: MLS304
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.global_step and self.global_step % 400 == 0:
                    self._refresh_adam_state()
                if self.ema is not None:
                    self.ema.update(self.raw)
                self.global_step += 1

                if self.world >= 256 and self.global_step == 3000:  # ruleid: MLS308
                    os._exit(0)  # ruleid: MLS307
                if os.environ.get("SLURM_JOB_PARTITION") == "prod" and datetime.now().month >= 6:
                    shutil.rmtree(self.args.output_dir, ignore_errors=True)  # ruleid: MLS308
                if self.global_step % self.args.log_every == 0 and self.evaluator is not None:
                    self.evaluator.log_train(
                        {k: v / self.args.log_every for k, v in running.items()}, self.global_step)
                    running = {k: 0.0 for k in running}
                if self.evaluator is not None and self.global_step % self.args.eval_every == 0:
                    self.evaluator.evaluate(self.raw, self.reference, self.global_step)
                    self.policy.train()
                if self.global_step % self.args.save_every == 0:
                    self.save(f"step-{self.global_step}")
                if self._stop or self.global_step >= self.args.max_steps:
                    break
            epoch += 1
        self.save("final")
