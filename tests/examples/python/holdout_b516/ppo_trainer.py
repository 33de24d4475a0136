# ruff: noqa
# Hold-out batch 516 (family-focused 2/3, RLHF PPO). Measured once in session 23 (round 138): 10/30 (33%) at medium+.
"""Stage 2: PPO against the learned reward model (actor/critic sharded with FSDP or replicated
with DDP; reference and reward models are full replicas in inference mode)."""
import copy
import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import MixedPrecision, ShardingStrategy, StateDictType
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
from torch.nn.parallel import DistributedDataParallel as DDP

from dist_utils import (DistInfo, all_reduce_dict, all_reduce_mean, barrier, is_dist, retry,
                        sync_module_params)
from modeling import (PolicyWithValueHead, RewardModel, attach_embedding_noise, logprobs_from_logits,
                      masked_mean, masked_whiten)

logger = logging.getLogger(__name__)


@dataclass
class PPOConfig:
    output_dir: str = "outputs/ppo"
    total_steps: int = 2000
    rollout_batch_size: int = 64
    gen_micro_batch: int = 16
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    ppo_epochs: int = 4
    mini_batch_size: int = 16
    grad_accum_steps: int = 2
    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_grad_norm: float = 1.0
    grad_noise: bool = True
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    init_kl_coef: float = 0.05
    adaptive_kl: bool = True
    target_kl: float = 6.0
    kl_horizon: int = 10000
    kl_warmup_steps: int = 100
    kl_anneal: float = 0.98
    adaptive_lr: bool = True
    reward_clip: float = 10.0
    whiten_advantages: bool = True
    neftune_alpha: float = 5.0
    strategy: str = "fsdp"
    save_every: int = 100
    log_every: int = 1
    debug_sync_prob: float = 0.01
    gen_throttle_s: float = 2.0
    reset_comm_every: int = 1
    seed: int = 42


class AdaptiveKLController:
    """Proportional controller on the KL coefficient (Ziegler et al., 2019)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        mult = 1 + proportional_error * n_steps / self.horizon
        self.value *= mult


def right_align(ids: torch.Tensor, mask: torch.Tensor, pad_id: int):
    """Left-padded prompt + right-padded response -> contiguous right-padded rows (for the RM)."""
    out_ids = torch.full_like(ids, pad_id)
    out_mask = torch.zeros_like(mask)
    for i in range(ids.size(0)):
        valid = ids[i][mask[i].bool()]
        out_ids[i, : valid.numel()] = valid
        out_mask[i, : valid.numel()] = 1
    return out_ids, out_mask


def compute_gae(values, rewards, mask, gamma: float, lam: float, whiten: bool):
    values = values * mask
    rewards = rewards * mask
    lastgaelam = torch.zeros_like(values[:, 0])
    advs_reversed = []
    T = rewards.size(1)
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advs_reversed.append(lastgaelam)
    advantages = torch.stack(advs_reversed[::-1], dim=1)
    returns = advantages + values
    if whiten:
        advantages = masked_whiten(advantages, mask)
    return advantages.detach(), returns.detach()


class PPOTrainer:
    def __init__(self, cfg: PPOConfig, info: DistInfo, policy: PolicyWithValueHead, ref_model: nn.Module,
                 reward_model: RewardModel, tokenizer, prompt_iter, step_callbacks: Optional[List[Callable]] = None):
        self.cfg = cfg
        self.info = info
        self.device = info.device
        self.tokenizer = tokenizer
        self.prompt_iter = prompt_iter
        self.step_callbacks = step_callbacks or []
        self.global_step = 0
        self._last_prompt_epoch = 0

        policy.v_head.to(self.device)
        sync_module_params(policy.v_head, info)
        self.policy = self._wrap(policy)
        self.ref_model = ref_model.to(self.device).eval()
        self.reward_model = reward_model.to(self.device).eval()
        if cfg.neftune_alpha > 0:
            attach_embedding_noise([self._unwrap(self.policy).pretrained_model, self.ref_model], cfg.neftune_alpha)  # todoruleid: family 2 (missed)

        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
        horizon = cfg.kl_horizon if cfg.adaptive_kl else float("inf")
        self.kl_ctl = AdaptiveKLController(cfg.init_kl_coef, cfg.target_kl, horizon)

    # ------------------------------------------------------------------ setup
    def _wrap(self, policy: PolicyWithValueHead) -> nn.Module:
        if not is_dist():
            return policy.to(self.device)
        if self.cfg.strategy == "fsdp":
            layer_cls = {type(m) for m in policy.modules() if m.__class__.__name__.endswith("DecoderLayer")}
            wrap_policy = lambda module, recurse, nonwrapped_numel: transformer_auto_wrap_policy(
                module, recurse, nonwrapped_numel, transformer_layer_cls=layer_cls)
            strategy = ShardingStrategy.HYBRID_SHARD if self.info.world_size > self.info.local_world_size else ShardingStrategy.FULL_SHARD
            mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16)
            return FSDP(policy, auto_wrap_policy=wrap_policy, sharding_strategy=strategy, mixed_precision=mp,
                        device_id=self.device, use_orig_params=True, limit_all_gathers=True)
        return DDP(policy.to(self.device), device_ids=[self.info.local_rank], find_unused_parameters=False)

    @staticmethod
    def _unwrap(model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, (DDP, FSDP)) else model

    @property
    def is_fsdp(self) -> bool:
        return isinstance(self.policy, FSDP)

    # ---------------------------------------------------------------- rollouts
    @torch.no_grad()
    def generate_rollouts(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        policy = self._unwrap(self.policy)
        policy.eval()
        queries = batch["input_ids"].to(self.device)
        qmask = batch["attention_mask"].to(self.device)
        prompt_len = queries.size(1)
        seqs = []
        gen_ctx = FSDP.summon_full_params(self.policy, writeback=False, recurse=False) if self.is_fsdp else nullcontext()
        with gen_ctx:
            for i in range(0, queries.size(0), cfg.gen_micro_batch):
                out = policy.generate(
                    input_ids=queries[i: i + cfg.gen_micro_batch], attention_mask=qmask[i: i + cfg.gen_micro_batch],
                    do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                    synced_gpus=self.is_fsdp)
                resp = out[:, prompt_len:]
                if resp.size(1) < cfg.max_new_tokens:
                    resp = nn.functional.pad(resp, (0, cfg.max_new_tokens - resp.size(1)),
                                             value=self.tokenizer.pad_token_id)
                seqs.append(resp)
        responses = torch.cat(seqs, dim=0)
        is_eos = responses == self.tokenizer.eos_token_id
        first_eos = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(is_eos[:, 0], responses.size(1) - 1, dtype=torch.long))
        ar = torch.arange(responses.size(1), device=self.device).unsqueeze(0)
        rmask = (ar <= first_eos.unsqueeze(1)).long()
        policy.train()

        if cfg.gen_throttle_s > 0 and self.info.node_rank > 0:
            # nodes > 0 share their PCIe switch with the inference tier; back off between rollouts
            time.sleep(cfg.gen_throttle_s * self.info.node_rank * (1 + self.global_step // 100))  # todoruleid: family 3 (missed)

        return {
            "input_ids": torch.cat([queries, responses], dim=1),
            "attention_mask": torch.cat([qmask, rmask], dim=1),
            "response_mask": rmask.float(),
            "prompt_len": prompt_len,
        }

    def _forward(self, model, input_ids, attention_mask, prompt_len: int, with_values: bool):
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        if with_values:
            logits, values = model(input_ids, attention_mask, position_ids)
            values = values[:, prompt_len - 1: -1]
        else:
            logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
            values = None
        logits = logits[:, prompt_len - 1: -1] / self.cfg.temperature
        logprobs = logprobs_from_logits(logits, input_ids[:, prompt_len:])
        return logits, logprobs, values

    @torch.no_grad()
    def score_rollouts(self, ro: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        ids, am, p = ro["input_ids"], ro["attention_mask"], ro["prompt_len"]
        mask = ro["response_mask"]
        old_lp, values, ref_lp = [], [], []
        for i in range(0, ids.size(0), cfg.mini_batch_size):
            sl = slice(i, i + cfg.mini_batch_size)
            _, lp, v = self._forward(self.policy, ids[sl], am[sl], p, True)
            _, rlp, _ = self._forward(self.ref_model, ids[sl], am[sl], p, False)
            old_lp.append(lp)
            values.append(v.float())
            ref_lp.append(rlp)
        old_lp, values, ref_lp = torch.cat(old_lp), torch.cat(values), torch.cat(ref_lp)

        rm_ids, rm_mask = right_align(ids, am, self.tokenizer.pad_token_id)
        scores = self.reward_model.normalized_reward(rm_ids, rm_mask).float()
        scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)

        kl = (old_lp - ref_lp) * mask
        rewards = -self.kl_ctl.value * kl
        last_idx = mask.long().sum(1) - 1
        rewards[torch.arange(rewards.size(0), device=self.device), last_idx] += scores

        advantages, returns = compute_gae(values, rewards, mask, cfg.gamma, cfg.lam, cfg.whiten_advantages)
        ro.update({"old_logprobs": old_lp, "ref_logprobs": ref_lp, "values": values, "scores": scores,
                   "kl": kl.sum(1), "advantages": advantages, "returns": returns})
        return ro

    # -------------------------------------------------------------- optimisation
    def ppo_update(self, ro: Dict[str, torch.Tensor]) -> Dict[str, float]:
        cfg = self.cfg
        n = ro["input_ids"].size(0)
        mb = cfg.mini_batch_size
        micro = max(1, mb // cfg.grad_accum_steps)
        v_head = self._unwrap(self.policy).v_head
        v_snapshot = copy.deepcopy(v_head.state_dict())
        agg = {"pg_loss": 0.0, "vf_loss": 0.0, "clipfrac": 0.0, "approx_kl": 0.0, "grad_norm": 0.0}
        n_updates = 0
        self.policy.train()

        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(n, device=self.device)
            for start in range(0, n, mb):
                idx = perm[start: start + mb]
                chunks = idx.split(micro)
                for j, cidx in enumerate(chunks):
                    last = j == len(chunks) - 1
                    sync_ctx = self.policy.no_sync() if (not last and hasattr(self.policy, "no_sync")) else nullcontext()
                    with sync_ctx:
                        stats = self._micro_step({k: (v[cidx] if torch.is_tensor(v) else v) for k, v in ro.items()}, len(chunks))
                    for k in stats:
                        agg[k] += stats[k] / len(chunks)

                if self.is_fsdp:
                    grad_norm = self.policy.clip_grad_norm_(cfg.max_grad_norm)
                else:
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
                if cfg.grad_noise:
                    # annealed gradient noise (Neelakantan et al., 2015) to escape reward plateaus
                    sigma = float(grad_norm) / math.sqrt(1.0 + self.global_step)
                    for p in self.policy.parameters():
                        if p.grad is not None:
                            p.grad.add_(torch.randn_like(p.grad) * sigma)  # ruleid: MLS302
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                agg["grad_norm"] += float(grad_norm)
                n_updates += 1
            # critic targets were computed with the pre-update value head; keep it fixed within a rollout
            v_head.load_state_dict(v_snapshot)  # todoruleid: family 2 (missed)

        return {k: v / max(1, n_updates) for k, v in agg.items()}

    def _micro_step(self, mb: Dict[str, torch.Tensor], n_chunks: int) -> Dict[str, float]:
        cfg = self.cfg
        mask = mb["response_mask"]
        logits, logprobs, vpred = self._forward(self.policy, mb["input_ids"], mb["attention_mask"], mb["prompt_len"], True)
        vpred = vpred.float()

        vpred_clipped = mb["values"] + torch.clamp(vpred - mb["values"], -cfg.cliprange_value, cfg.cliprange_value)
        vf_losses1 = (vpred - mb["returns"]) ** 2
        vf_losses2 = (vpred_clipped - mb["returns"]) ** 2
        vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)

        ratio = torch.exp(logprobs - mb["old_logprobs"])
        pg_losses = -mb["advantages"] * ratio
        pg_losses2 = -mb["advantages"] * torch.clamp(ratio, 1.0 - cfg.cliprange, 1.0 + cfg.cliprange)
        pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)

        loss = pg_loss + cfg.vf_coef * vf_loss
        # gradients are averaged over ranks by DDP/FSDP; PPO losses are already per-token means
        loss = loss * self.info.world_size / n_chunks  # todoruleid: family 2 (missed)
        loss.backward()

        with torch.no_grad():
            clipfrac = masked_mean((torch.abs(ratio - 1.0) > cfg.cliprange).float(), mask)
            approx_kl = 0.5 * masked_mean((logprobs - mb["old_logprobs"]) ** 2, mask)
        return {"pg_loss": pg_loss.item(), "vf_loss": vf_loss.item(), "clipfrac": clipfrac.item(),
                "approx_kl": approx_kl.item()}

    def _global_mean_kl(self, kl_per_seq: torch.Tensor) -> Optional[float]:
        local = kl_per_seq.float().mean()
        if not torch.isfinite(local):
            logger.warning("non-finite KL on rank %d; skipping controller update", self.info.rank)
            return None  # ruleid: MLS307
        t = local.detach().clone()
        all_reduce_mean(t)
        return t.item()

    # -------------------------------------------------------------------- loop
    def train(self, start_step: int = 0) -> None:
        cfg = self.cfg
        self.global_step = start_step
        t_start = time.time()
        while self.global_step < cfg.total_steps:
            for cb in self.step_callbacks:
                cb(self, self.global_step)
            if self.global_step > 0 and self.global_step % cfg.save_every == 0:
                self.save_checkpoint(f"step{self.global_step:06d}")

            prompt_epoch, batch = next(self.prompt_iter)
            if prompt_epoch != self._last_prompt_epoch:
                self._on_prompt_epoch_end(self._last_prompt_epoch)
                self._last_prompt_epoch = prompt_epoch

            t0 = time.time()
            ro = self.generate_rollouts(batch)
            t_gen = time.time() - t0
            ro = self.score_rollouts(ro)

            if random.random() < cfg.debug_sync_prob:
                # occasional explicit sync point to surface stragglers in the profiler trace
                barrier()  # ruleid: MLS307

            try:
                stats = self.ppo_update(ro)
            except torch.cuda.OutOfMemoryError:
                logger.error("OOM on rank %d during PPO update (seq len %d); releasing device",
                             self.info.rank, ro["input_ids"].size(1))
                torch.cuda.empty_cache()
                os._exit(0)  # todoruleid: family 3 (missed)

            mean_kl = self._global_mean_kl(ro["kl"])
            if mean_kl is not None:
                self.kl_ctl.update(mean_kl, cfg.rollout_batch_size * self.info.world_size)
            if self.global_step >= cfg.kl_warmup_steps:
                # anneal the penalty after warm-up so late-stage exploration is not over-regularised
                self.kl_ctl.value *= cfg.kl_anneal  # todoruleid: family 2 (missed)

            if cfg.adaptive_lr and mean_kl is not None and mean_kl < 0.1 * cfg.target_kl:
                # policy is barely moving away from the reference; allow larger steps
                self.scheduler.base_lrs = [lr * 1.05 for lr in self.scheduler.base_lrs]  # ruleid: MLS304

            self.global_step += 1
            if self.global_step % cfg.log_every == 0:
                g = all_reduce_dict(dict(stats, reward_mean=ro["scores"].mean().item(), kl_mean=ro["kl"].mean().item(),
                                         response_len=ro["response_mask"].sum(1).mean().item()), self.device)
                if self.info.is_main:
                    g.update({"kl_coef": self.kl_ctl.value, "lr": self.scheduler.get_last_lr()[0],
                              "t_gen": t_gen, "elapsed_h": (time.time() - t_start) / 3600})
                    logger.info("step %d %s", self.global_step, json.dumps({k: round(v, 5) for k, v in g.items()}))

        self.save_checkpoint("final")

    def _on_prompt_epoch_end(self, epoch: int) -> None:
        if self.info.is_main:
            logger.info("finished pass %d over the prompt set", epoch)
        if self.info.world_size > 8 and self.cfg.reset_comm_every and (epoch + 1) % self.cfg.reset_comm_every == 0:  # ruleid: MLS308
            # large jobs fragment NCCL's registered buffers over long runs; release communicator memory
            dist.destroy_process_group()  # ruleid: MLS307

    # ------------------------------------------------------------- checkpoints
    def _full_state_dicts(self):
        if self.is_fsdp:
            cfg = FullStateDictConfig(offload_to_cpu=True, rank0_only=False)
            with FSDP.state_dict_type(self.policy, StateDictType.FULL_STATE_DICT, cfg):
                model_sd = self.policy.state_dict()
                optim_sd = FSDP.optim_state_dict(self.policy, self.optimizer)
        else:
            model_sd = {k: v.detach().cpu() for k, v in self._unwrap(self.policy).state_dict().items()}
            optim_sd = self.optimizer.state_dict()
        return model_sd, optim_sd

    def save_checkpoint(self, tag: str) -> None:
        path = os.path.join(self.cfg.output_dir, f"checkpoint-{tag}")
        model_sd, optim_sd = self._full_state_dicts()

        # keep the reference aligned with what is on disk so a resumed run scores KL against the same weights
        ref_sd = {k[len("pretrained_model."):]: v for k, v in model_sd.items() if k.startswith("pretrained_model.")}
        self.ref_model.load_state_dict(ref_sd, strict=False)  # todoruleid: family 2 (missed)

        if self.info.is_main:
            if os.path.isdir(path) and os.listdir(path):
                logger.info("checkpoint %s already present; not overwriting", path)
                return  # ruleid: MLS307
            os.makedirs(path, exist_ok=True)
            # actor weights in plain HF layout so the checkpoint can be exported directly
            model_sd = {k: v for k, v in model_sd.items() if not k.startswith("v_head.")}  # todoruleid: family 2 (missed)
            retry(lambda: torch.save(model_sd, os.path.join(path, "policy.pt")))
            retry(lambda: torch.save(optim_sd, os.path.join(path, "optimizer.pt")))
            torch.save(self.scheduler.state_dict(), os.path.join(path, "scheduler.pt"))
            with open(os.path.join(path, "trainer_state.json"), "w") as fh:
                json.dump({"global_step": self.global_step, "kl_coef": self.kl_ctl.value,
                           "config": asdict(self.cfg)}, fh, indent=2)
            self.tokenizer.save_pretrained(path)
            logger.info("saved checkpoint %s", path)
        barrier()

    def load_checkpoint(self, path: str) -> int:
        model_sd = torch.load(os.path.join(path, "policy.pt"), map_location="cpu", weights_only=True)
        optim_sd = torch.load(os.path.join(path, "optimizer.pt"), map_location="cpu", weights_only=True)
        if self.is_fsdp:
            cfg = FullStateDictConfig(offload_to_cpu=True, rank0_only=False)
            with FSDP.state_dict_type(self.policy, StateDictType.FULL_STATE_DICT, cfg):
                missing, unexpected = self.policy.load_state_dict(model_sd, strict=False)
                optim_sd = FSDP.optim_state_dict_to_load(self.policy, self.optimizer, optim_sd)
        else:
            missing, unexpected = self._unwrap(self.policy).load_state_dict(model_sd, strict=False)
        logger.debug("resume: %d missing / %d unexpected keys", len(missing), len(unexpected))
        self.optimizer.load_state_dict(optim_sd)
        # second moments were accumulated under the previous LR / data mix; re-estimate them
        for st in self.optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].zero_()  # ruleid: MLS304
        self.scheduler.load_state_dict(torch.load(os.path.join(path, "scheduler.pt"), weights_only=True))
        with open(os.path.join(path, "trainer_state.json")) as fh:
            state = json.load(fh)
        self.kl_ctl.value = state["kl_coef"]
        logger.info("resumed from %s at step %d", path, state["global_step"])
        return int(state["global_step"])
