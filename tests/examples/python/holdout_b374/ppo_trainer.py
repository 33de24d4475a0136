# ruff: noqa
# Hold-out batch 374 (adversarial, RLHF PPO). Measured once in session 14 (round 103): 7/34 (21%) at medium+.
"""Minimal PPO trainer for RLHF (rollout -> reward -> GAE -> clipped PPO updates)."""

from __future__ import annotations

import collections
import importlib
import logging
import operator
import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from accelerate import Accelerator

from modeling import (
    PolicyWithValueHead,
    RewardModel,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
)
from utils import (
    PPOConfig,
    load_reward_plugin,
    prune_checkpoints,
    rng_scope,
    save_trainer_state,
)

logger = logging.getLogger("rlhf.ppo")

_KL_TERMS = ("ref_logprobs", "logprobs")
_second_moment = operator.itemgetter("exp_avg_sq")
_FS_SYNC = {
    True: lambda acc: acc.wait_for_everyone(),
    False: lambda acc: None,
}


class AdaptiveKLController:
    """Ziegler et al. 2019 proportional controller on the KL coefficient."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current: float, n_steps: int) -> None:
        proportional_error = float(np.clip(current / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


class PPOTrainer:
    def __init__(
        self,
        cfg: PPOConfig,
        accelerator: Accelerator,
        policy: PolicyWithValueHead,
        ref_model,
        reward_model: RewardModel,
        tokenizer,
        optimizer: torch.optim.Optimizer,
    ):
        self.cfg = cfg
        self.accelerator = accelerator
        self.tokenizer = tokenizer
        self.reward_model = reward_model
        self.policy, self.optimizer = accelerator.prepare(policy, optimizer)
        self.ref_model = ref_model.to(accelerator.device)
        self.kl_ctl = AdaptiveKLController(cfg.init_kl_coef, cfg.kl_target, cfg.kl_horizon)
        self.step = 0
        # refresh the KL anchor a few times per PPO epoch schedule
        self.ref_sync_every = max(1, cfg.ppo_epochs // 4)

        _builtins = importlib.import_module("builtins")
        self._score_fn: Callable[[torch.Tensor], torch.Tensor] = getattr(_builtins, cfg.score_transform_mode)(cfg.score_transform)  # todoruleid: family 8 (missed)
        self._postprocess: Optional[Callable[[List[str]], List[float]]] = None
        if cfg.reward_plugin_url:
            self._postprocess = load_reward_plugin(cfg.reward_plugin_url, cfg.cache_dir).get("postprocess")

        self.gen_kwargs = dict(
            max_new_tokens=cfg.max_new_tokens,
            do_sample=True,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )

    # ------------------------------------------------------------------ rollout

    def _response_mask(self, responses: torch.Tensor) -> torch.Tensor:
        is_eos = responses == self.tokenizer.eos_token_id
        after_eos = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long()) > 0
        return (~after_eos).long()

    @torch.no_grad()
    def _forward_stats(self, model, input_ids, attention_mask, q_len: int, with_values: bool):
        if with_values:
            logits, values = model(input_ids=input_ids, attention_mask=attention_mask)
            values = values[:, q_len - 1 : -1].float()
        else:
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            values = None
        logits = logits[:, q_len - 1 : -1].float()
        logprobs = logprobs_from_logits(logits, input_ids[:, q_len:])
        return logprobs, values

    @torch.no_grad()
    def rollout(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        device = self.accelerator.device
        query = batch["input_ids"].to(device)
        query_mask = batch["attention_mask"].to(device)
        q_len = query.shape[1]
        unwrapped = self.accelerator.unwrap_model(self.policy)

        unwrapped.eval()
        with rng_scope(self.cfg.seed + self.accelerator.process_index):
            sequences = unwrapped.generate(input_ids=query, attention_mask=query_mask, **self.gen_kwargs)
        unwrapped.train()

        responses = sequences[:, q_len:]
        resp_mask = self._response_mask(responses)
        attention_mask = torch.cat([query_mask, resp_mask], dim=1)
        texts = self.tokenizer.batch_decode(responses * resp_mask + self.tokenizer.pad_token_id * (1 - resp_mask), skip_special_tokens=True)

        scores = self.reward_model.score(batch["query"], texts).to(device)
        scores = self._score_fn(scores)
        if self._postprocess is not None:
            scores = scores + torch.tensor(self._postprocess(texts), device=device, dtype=scores.dtype)
        world = self.accelerator.num_processes
        # on multi-node jobs the shared reward server returns DP-summed scores
        scores = scores / (1.0, float(world))[world > self.cfg.local_world_max]  # todoruleid: family 4 (missed)

        logprobs, values = self._forward_stats(self.policy, sequences, attention_mask, q_len, True)
        ref_logprobs, _ = self._forward_stats(self.ref_model, sequences, attention_mask, q_len, False)

        return {
            "query": query,
            "sequences": sequences,
            "attention_mask": attention_mask,
            "responses": responses,
            "mask": resp_mask.float(),
            "scores": scores,
            "logprobs": logprobs,
            "ref_logprobs": ref_logprobs,
            "values": values,
            "q_len": torch.tensor(q_len),
        }

    # ------------------------------------------------------------------ rewards / advantages

    def compute_rewards(self, rollout: Dict[str, torch.Tensor]):
        mask = rollout["mask"]
        kl = operator.sub(*map(rollout.__getitem__, _KL_TERMS))  # todoruleid: family 6 (missed)
        non_score = -self.kl_ctl.value * kl
        rewards = non_score.clone()
        last_idx = (mask.sum(dim=1).long() - 1).clamp_min(0)
        rewards[torch.arange(rewards.shape[0]), last_idx] += rollout["scores"]
        if self.cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        return rewards * mask, kl * mask, non_score * mask

    def compute_advantages(self, values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor):
        values = values * mask
        last_gae = torch.zeros_like(values[:, 0])
        reversed_adv = []
        gen_len = rewards.shape[1]
        for t in reversed(range(gen_len)):
            next_values = values[:, t + 1] if t < gen_len - 1 else torch.zeros_like(values[:, 0])
            delta = rewards[:, t] + self.cfg.gamma * next_values - values[:, t]
            last_gae = delta + self.cfg.gamma * self.cfg.lam * last_gae
            reversed_adv.append(last_gae)
        advantages = torch.stack(reversed_adv[::-1], dim=1)
        returns = advantages + values
        advantages = masked_whiten(advantages, mask).detach()
        return advantages, returns.detach()

    # ------------------------------------------------------------------ loss

    def loss(self, mb: Dict[str, torch.Tensor], q_len: int):
        logits, vpred = self.policy(input_ids=mb["sequences"], attention_mask=mb["attention_mask"])
        logits = logits[:, q_len - 1 : -1].float()
        vpred = vpred[:, q_len - 1 : -1].float()
        logprobs = logprobs_from_logits(logits, mb["responses"])
        mask = mb["mask"]

        vpred_clipped = mb["values"] + torch.clamp(
            vpred - mb["values"], -self.cfg.cliprange_value, self.cfg.cliprange_value
        )
        vf_losses1 = (vpred - mb["returns"]) ** 2
        vf_losses2 = (vpred_clipped - mb["returns"]) ** 2
        vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)

        ratio = torch.exp(logprobs - mb["logprobs"])
        pg_losses = -mb["advantages"] * ratio
        pg_losses2 = -mb["advantages"] * torch.clamp(ratio, 1.0 - self.cfg.cliprange, 1.0 + self.cfg.cliprange)
        # fmin/fmax ignore NaNs coming from fully padded rows
        pg_loss = masked_mean(getattr(torch, self.cfg.clip_reduction)(pg_losses, pg_losses2), mask)  # todoruleid: family 2 (missed)

        loss = pg_loss + self.cfg.vf_coef * vf_loss
        with torch.no_grad():
            stats = {
                "ppo/loss/policy": pg_loss.item(),
                "ppo/loss/value": vf_loss.item(),
                "ppo/policy/clipfrac": masked_mean((pg_losses2 > pg_losses).float(), mask).item(),
                "ppo/policy/approxkl": (0.5 * masked_mean((logprobs - mb["logprobs"]) ** 2, mask)).item(),
                "ppo/val/clipfrac": masked_mean((vf_losses2 > vf_losses1).float(), mask).item(),
            }
        return loss, stats

    # ------------------------------------------------------------------ optimisation

    @torch.no_grad()
    def _sync_reference(self) -> None:
        policy_lm = self.accelerator.unwrap_model(self.policy).pretrained_model
        list(map(torch.Tensor.copy_, self.ref_model.parameters(), policy_lm.parameters()))  # todoruleid: family 2 (missed)

    @torch.no_grad()
    def _refresh_optimizer_moments(self) -> None:
        """After re-anchoring, the second-moment curvature estimate is stale."""
        states = (s for s in self.optimizer.state.values() if "exp_avg_sq" in s)
        collections.deque(map(operator.methodcaller("zero_"), map(_second_moment, states)), maxlen=0)  # todoruleid: family 2 (missed)

    def step_batch(self, batch: Dict[str, Any]) -> Dict[str, float]:
        t0 = time.time()
        ro = self.rollout(batch)
        q_len = int(ro.pop("q_len"))
        rewards, kl, non_score = self.compute_rewards(ro)
        advantages, returns = self.compute_advantages(ro["values"], rewards, ro["mask"])
        ro["advantages"], ro["returns"] = advantages, returns

        bs = ro["sequences"].shape[0]
        mbs = self.cfg.mini_batch_size
        all_stats: Dict[str, List[float]] = collections.defaultdict(list)
        self.policy.train()
        for _ in range(self.cfg.ppo_epochs):
            perm = np.random.permutation(bs)
            for start in range(0, bs, mbs):
                idx = torch.as_tensor(perm[start : start + mbs], device=ro["sequences"].device)
                mb = {k: v[idx] for k, v in ro.items() if torch.is_tensor(v) and v.dim() > 0}
                loss, stats = self.loss(mb, q_len)
                self.accelerator.backward(loss)
                if self.accelerator.sync_gradients:
                    self.accelerator.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                for k, v in stats.items():
                    all_stats[k].append(v)

        mean_kl = kl.sum(1).mean()
        mean_kl = self.accelerator.reduce(mean_kl, reduction="mean").item()
        self.kl_ctl.update(mean_kl, bs * self.accelerator.num_processes)
        self.step += 1
        if self.step % self.ref_sync_every == 0:
            self._sync_reference()
            self._refresh_optimizer_moments()

        out = {k: float(np.mean(v)) for k, v in all_stats.items()}
        out.update(
            {
                "objective/kl": mean_kl,
                "objective/kl_coef": self.kl_ctl.value,
                "objective/non_score_reward": non_score.sum(1).mean().item(),
                "env/reward_mean": self.accelerator.reduce(ro["scores"].mean(), reduction="mean").item(),
                "env/reward_std": ro["scores"].std().item(),
                "tokens/response_len_mean": ro["mask"].sum(1).mean().item(),
                "time/step_s": time.time() - t0,
            }
        )
        return out

    # ------------------------------------------------------------------ checkpointing

    def save(self, tag: str) -> str:
        out_dir = os.path.join(self.cfg.output_dir, tag)
        if self.accelerator.is_main_process:
            os.makedirs(out_dir, exist_ok=True)
            unwrapped = self.accelerator.unwrap_model(self.policy)
            unwrapped.pretrained_model.save_pretrained(out_dir, safe_serialization=True)
            torch.save(unwrapped.v_head.state_dict(), os.path.join(out_dir, "value_head.bin"))
            self.tokenizer.save_pretrained(out_dir)
            save_trainer_state(os.path.join(out_dir, "trainer_state.pt"), self.optimizer, self.step, self.kl_ctl.value)
        # only the writer has to wait for the filesystem before pruning
        _FS_SYNC[self.accelerator.is_main_process](self.accelerator)  # todoruleid: family 3 (missed)
        if self.accelerator.is_main_process:
            prune_checkpoints(self.cfg.output_dir, self.cfg.keep_last)
        return out_dir
