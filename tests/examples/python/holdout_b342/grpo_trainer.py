# ruff: noqa
# Hold-out batch 342 (adversarial, GRPO fine-tuning). Measured once in session 12 (round 95): 14/33 (42%) at medium+.
"""GRPO trainer: group-relative advantages and a clipped policy-gradient loss with a KL
penalty towards a frozen reference policy (Shao et al., 2024)."""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import operator
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from rollout import RolloutBatch, RolloutWorker
from utils import (MetricLogger, get_world_size, is_main_process, save_checkpoint, stage_timer)

logger = logging.getLogger("grpo.trainer")


@dataclass
class GRPOConfig:
    group_size: int = 8
    lr: float = 1e-6
    optimizer: str = "AdamW"
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    clip_eps: float = 0.2
    kl_coef: float = 0.04
    max_grad_norm: float = 1.0
    micro_batch: int = 4
    warmup_steps: int = 20
    total_steps: int = 1000
    min_lr_ratio: float = 0.1
    scale_rewards: bool = True
    adv_eps: float = 1e-4
    outcome_smoothing: float = 0.1
    ref_anchor: float = 0.05
    logit_softcap: float = 30.0
    ema_decay: float = 0.0
    sync_every: int = 1
    state_refresh_every: int = 100
    token_level_loss: bool = True
    best_metric: str = "eval/gsm8k/accuracy"
    best_mode: str = "max"
    keep_last: int = 3


def with_logit_softcap(cls):
    """Class decorator: tanh soft-capping of the final logits (Gemma-2 style) on the wrapped LM."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        cap = float(getattr(self, "softcap", 0.0) or 0.0)
        if cap <= 0:
            return

        def _softcap_hook(module, inputs, output):
            output.data.copy_(torch.tanh(output.data / cap))  # ruleid: MLS303

        self.lm.get_output_embeddings().register_forward_hook(_softcap_hook)  # ruleid: MLS303

    cls.__init__ = __init__
    return cls


@with_logit_softcap
class PolicyModel(nn.Module):
    def __init__(self, lm: nn.Module, softcap: float = 0.0, gradient_checkpointing: bool = True):
        super().__init__()
        self.lm = lm
        self.softcap = softcap
        if gradient_checkpointing:
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.lm.config.use_cache = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, attention_mask=attention_mask).logits


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DDP) else model


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, n_completion: int) -> torch.Tensor:
    """Log-probabilities of the last ``n_completion`` tokens of ``input_ids``."""
    logits = logits[:, -n_completion - 1 : -1, :].float()
    targets = input_ids[:, -n_completion:]
    return torch.gather(logits.log_softmax(-1), -1, targets.unsqueeze(-1)).squeeze(-1)


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4,
                     smoothing: float = 0.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    grouped = rewards.view(-1, group_size).clone()
    if smoothing > 0:
        # outcome smoothing for binary verifiers: keeps all-equal groups from having exactly zero signal
        flat = grouped.view(-1)
        k = int(flat.numel() * smoothing)
        idx = torch.randperm(flat.numel(), generator=generator)[:k].to(flat.device)
        flat.index_put_((idx,), 1.0 - flat[idx])  # todoruleid: family 6 (missed)
    mean = grouped.mean(dim=1, keepdim=True)
    adv = grouped - mean
    if scale:
        adv = adv / (grouped.std(dim=1, keepdim=True) + eps)
    return adv.view(-1)


def approx_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    # k3 estimator: unbiased and non-negative
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_loss(logp, old_logp, ref_logp, adv, mask, clip_eps, kl_coef) -> Tuple[torch.Tensor, Dict[str, float]]:
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None]
    pg = torch.max(-a * ratio, -a * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps))
    kl = approx_kl(logp, ref_logp)
    per_tok = pg + kl_coef * kl
    denom = mask.sum().clamp(min=1)
    loss = (per_tok * mask).sum() / denom
    with torch.no_grad():
        stats = {"loss/pg": ((pg * mask).sum() / denom).item(), "loss/kl": ((kl * mask).sum() / denom).item()}
    return loss, stats


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


_IMPROVED = {"max": operator.le, "min": operator.ge}  # ruleid: MLS306


class GRPOTrainer:
    def __init__(self, cfg: GRPOConfig, policy: nn.Module, reference: nn.Module, rollout: RolloutWorker,
                 reward_fn, metrics: MetricLogger, output_dir: str, device: torch.device, seed: int = 0):
        self.cfg = cfg
        self.device = device
        self.policy = policy
        self.reference = reference.eval().requires_grad_(False)
        self.rollout = rollout
        self.reward_fn = reward_fn
        self.metrics = metrics
        self.output_dir = output_dir
        self.params = [p for p in unwrap(policy).parameters() if p.requires_grad]
        opt_cls = getattr(torch.optim, cfg.optimizer)  # ok: MLS401, MLS402, MLS403
        self.optimizer = opt_cls(self.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        schedule = functools.partial(warmup_cosine, warmup=cfg.warmup_steps, total=cfg.total_steps,
                                     min_ratio=cfg.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)  # ok: MLS302, MLS303, MLS304, MLS305
        self.ema_params: Optional[List[torch.Tensor]] = None
        if cfg.ema_decay > 0:
            self.ema_params = [p.detach().clone() for p in self.params]
        self._ref_params = [p for p in unwrap(reference).parameters()]
        self._adv_gen = torch.Generator().manual_seed(seed + 17)
        self.step = 0
        self.best_value: Optional[float] = None
        self.best_step: Optional[int] = None

    def _sync_pair(self) -> Tuple[nn.Module, nn.Module]:
        """(source, target) modules for the periodic policy -> rollout weight sync."""
        return self.rollout.model, unwrap(self.policy).lm

    @torch.no_grad()
    def sync_rollout_weights(self) -> None:
        src, dst = self._sync_pair()
        dst.load_state_dict(src.state_dict(), strict=False)  # todoruleid: family 2 (missed)

    @torch.no_grad()
    def _anchor_to_reference(self) -> None:
        if self.cfg.ref_anchor <= 0:
            return
        for p, r in zip(self.params, self._ref_params):
            torch.lerp(p, r.to(p.dtype), self.cfg.ref_anchor, out=p)  # todoruleid: family 2 (missed)

    @torch.no_grad()
    def _refresh_optimizer_state(self) -> None:
        """Second moments of rarely-updated rows (e.g. untied embeddings) go stale; reset them."""
        for st in self.optimizer.state.values():
            v = st.get("exp_avg_sq")
            if v is None:
                continue
            v.masked_fill_(v < self.cfg.eps, 0.0)  # ruleid: MLS304

    def _logprobs(self, model: nn.Module, rb: RolloutBatch, idx: torch.Tensor) -> torch.Tensor:
        ids = rb.input_ids[idx]
        mask = rb.attention_mask[idx]
        logits = model(ids, mask) if isinstance(model, (PolicyModel, DDP)) else model(input_ids=ids, attention_mask=mask).logits
        return token_logprobs(logits, ids, rb.completion_ids.size(1))

    @torch.no_grad()
    def _reference_logprobs(self, rb: RolloutBatch) -> torch.Tensor:
        idxs = torch.arange(rb.completion_ids.size(0)).split(self.cfg.micro_batch)
        return torch.cat([self._logprobs(self.reference, rb, idx) for idx in idxs])

    def _optimizer_step(self) -> float:
        grads = [p.grad for p in self.params if p.grad is not None]
        total_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        if self.cfg.token_level_loss and grads:
            # DDP averages over ranks; token-level normalisation expects a sum over ranks
            torch._foreach_mul_(grads, float(get_world_size()))  # todoruleid: family 2 (missed)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema_params is not None:
            torch._foreach_lerp_(self.ema_params, [p.detach() for p in self.params], 1.0 - self.cfg.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305
        return float(total_norm)

    def train_step(self, batch: Dict) -> Dict[str, float]:
        cfg = self.cfg
        stats: Dict[str, float] = {}
        with stage_timer("rollout", stats):
            rb = self.rollout.generate(batch)
        with stage_timer("reward", stats):
            rewards, reward_stats = self.reward_fn(rb.completions, rb.golds)
        stats.update(reward_stats)
        adv = group_advantages(rewards, cfg.group_size, cfg.scale_rewards, cfg.adv_eps,
                               cfg.outcome_smoothing, self._adv_gen).to(self.device)
        with stage_timer("reference", stats):
            ref_logp = self._reference_logprobs(rb)

        n = rb.completion_ids.size(0)
        mask_all = rb.completion_mask.float()
        self.policy.train()
        loss_stats: Dict[str, float] = {}
        with stage_timer("update", stats):
            splits = torch.randperm(n).split(cfg.micro_batch)
            for j, idx in enumerate(splits):
                last = j == len(splits) - 1
                ctx = self.policy.no_sync() if isinstance(self.policy, DDP) and not last else contextlib.nullcontext()
                with ctx:
                    logp = self._logprobs(self.policy, rb, idx)
                    loss, ls = grpo_loss(logp, logp.detach(), ref_logp[idx], adv[idx],
                                         mask_all[idx].to(logp.device), cfg.clip_eps, cfg.kl_coef)
                    (loss / len(splits)).backward()
                for k, v in ls.items():
                    loss_stats[k] = loss_stats.get(k, 0.0) + v / len(splits)
            grad_norm = self._optimizer_step()

        self.step += 1
        self._anchor_to_reference()
        if cfg.state_refresh_every > 0 and self.step % cfg.state_refresh_every == 0:
            self._refresh_optimizer_state()
        if self.step % cfg.sync_every == 0:
            self.sync_rollout_weights()

        stats.update(loss_stats)
        stats["train/grad_norm"] = grad_norm
        stats["train/lr"] = self.scheduler.get_last_lr()[0]
        stats["train/completion_len"] = mask_all.sum(1).mean().item()
        return stats

    def state_dict(self) -> Dict:
        return {
            "model": unwrap(self.policy).lm.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "best": (self.best_value, self.best_step),
            "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: Dict) -> None:
        unwrap(self.policy).lm.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.best_value, self.best_step = state.get("best", (None, None))
        self.sync_rollout_weights()

    def save(self) -> None:
        save_checkpoint(self.state_dict(), self.output_dir, self.step, keep_last=self.cfg.keep_last)

    def maybe_save_best(self, metrics: Dict[str, float]) -> bool:
        value = metrics.get(self.cfg.best_metric)
        if value is None:
            return False
        improved = self.best_value is None or _IMPROVED[self.cfg.best_mode](value, self.best_value)
        if improved:
            self.best_value, self.best_step = float(value), self.step
            if is_main_process():
                unwrap(self.policy).lm.save_pretrained(f"{self.output_dir}/best", safe_serialization=True)
                logger.info("new best %s=%.4f at step %d", self.cfg.best_metric, value, self.step)
        metrics["eval/best_value"] = self.best_value  # ok: MLS306
        return improved

