# ruff: noqa
# Hold-out batch 578 (adversarial, RLHF with PPO and DeepSpeed ZeRO-2). Measured once in session 26 (round 154): 9/30 (30%) at medium+.
"""PPO fine-tuning against a reward model: ``deepspeed --num_gpus 8 train_ppo.py --config run.json``."""

from __future__ import annotations

import functools
import logging
import operator
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import deepspeed
import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

import dist_utils
from config import TrainConfig, parse_config
from data import PromptCollator, PromptDataset, RewardNormalizer, build_prompt_loader, eval_subset, infinite_batches
from modeling import (
    AdaptiveKLController,
    FixedKLController,
    PolicyWithValueHead,
    RewardScorer,
    RolloutGenerator,
    compute_gae,
    compute_rewards,
    load_reference,
    load_reward_model,
    logprobs_from_logits,
    masked_mean,
    ppo_loss,
    response_mask,
)
from tracking import CheckpointManager, Tracker

logger = logging.getLogger("train_ppo")


class Callback:
    registry: List[type] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Callback.registry.append(cls)

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def on_train_start(self, trainer: "PPOTrainer") -> None:
        pass

    def on_step_end(self, trainer: "PPOTrainer", step: int, stats: Dict[str, float]) -> None:
        pass


class KLAdaptiveLR(Callback):
    """Raises the learning rate while the policy stays well inside the KL budget."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.boost = cfg.ppo.lr_boost
        self.floor = 0.5 * cfg.ppo.target_kl

    def on_step_end(self, trainer: "PPOTrainer", step: int, stats: Dict[str, float]) -> None:
        kl = stats.get("objective/kl")
        if kl is None or kl >= self.floor or step < self.cfg.ppo.warmup_steps:
            return
        sched = trainer.lr_scheduler
        sched.base_lrs[:] = map(functools.partial(operator.mul, self.boost), sched.base_lrs)  # todoruleid: family 2 (missed)


class ThroughputMonitor(Callback):
    """Tracks generated tokens per second and backs off on shared-filesystem nodes."""

    _shared_fs_prefixes = ("gpu", "dgx", "node", "compute")

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self._last = time.perf_counter()
        self._pause = threading.Event()
        self._throttled = socket.gethostname().lower().startswith(self._shared_fs_prefixes)

    def on_step_end(self, trainer: "PPOTrainer", step: int, stats: Dict[str, float]) -> None:
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        tokens = stats.get("env/response_tokens", 0.0) * trainer.state.world_size
        stats["perf/tokens_per_sec"] = tokens / max(elapsed, 1e-6)
        if self._throttled:  # ruleid: MLS308
            self._pause.wait(timeout=2.0 * stats.get("time/rollout", 1.0))  # ruleid: MLS307


class PPOTrainer:
    def __init__(self, cfg: TrainConfig, state: dist_utils.DistState) -> None:
        self.cfg = cfg
        self.state = state
        device = state.device
        dtype = getattr(torch, cfg.model.torch_dtype)  # ok: MLS401, MLS402, MLS403

        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.policy_path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

        policy = PolicyWithValueHead.from_pretrained(
            cfg.model.policy_path, dtype=dtype, vf_coef=cfg.ppo.vf_coef, dropout=cfg.model.value_head_dropout,
            gradient_checkpointing=cfg.model.gradient_checkpointing, value_head_init=cfg.model.value_head_init,
        )
        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.ppo.learning_rate, weight_decay=cfg.ppo.weight_decay, eps=1e-5)
        warmup = max(1, cfg.ppo.warmup_steps)
        scheduler = LambdaLR(optimizer, lr_lambda=lambda s: min(1.0, (s + 1) / warmup))
        self.engine, self.optimizer, _, self.lr_scheduler = deepspeed.initialize(
            model=policy, optimizer=optimizer, lr_scheduler=scheduler, config=dist_utils.build_ds_config(cfg)
        )

        self.ref_model = load_reference(cfg.model.ref_path, dtype, device)
        m = cfg.model
        rm, rm_tok = load_reward_model(m.reward_path, m.reward_revision, m.remote_code, dtype, device)
        self.scorer = RewardScorer(rm, rm_tok, device, cfg.model.reward_batch_size, cfg.model.reward_max_length)
        self.normalizer = RewardNormalizer(cfg.data.reward_clip, cfg.data.reward_label_noise, seed=cfg.runtime.seed)
        self.generator = RolloutGenerator(self.engine, self.tokenizer, cfg.ppo, cfg.runtime.seed)
        kl_cls = AdaptiveKLController if cfg.ppo.adaptive_kl else FixedKLController
        self.kl_ctl = kl_cls(cfg.ppo.init_kl_coef, cfg.ppo.target_kl, cfg.ppo.kl_horizon)

    def _decode(self, responses: torch.Tensor, mask: torch.Tensor) -> List[str]:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.batch_decode(responses * mask + pad * (1 - mask), skip_special_tokens=True)

    @torch.no_grad()
    def _forward_logprobs(self, model, seq, attn, q_len):
        out = model(input_ids=seq, attention_mask=attn)
        if isinstance(out, tuple):
            logits, values = out
        else:
            logits, values = out.logits, None
        logp = logprobs_from_logits(logits[:, q_len - 1 : -1], seq[:, q_len:])
        if values is not None:
            values = values[:, q_len - 1 : -1].float()
        return logp, values

    @torch.no_grad()
    def rollout(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        device = self.state.device
        query = batch["input_ids"].to(device)
        query_mask = batch["attention_mask"].to(device)
        max_new = min(batch["max_new_tokens"], self.cfg.ppo.max_new_tokens)

        t0 = time.perf_counter()
        seq = self.generator.generate(query, query_mask, max_new)
        q_len = query.shape[1]
        responses = seq[:, q_len:]
        mask = response_mask(responses, self.tokenizer.eos_token_id)
        attn = torch.cat([query_mask, mask], dim=1)
        t_gen = time.perf_counter() - t0

        raw_scores = self.scorer(batch["prompts"], self._decode(responses, mask))
        scores = self.normalizer(raw_scores)

        self.engine.module.eval()
        logprobs, values = self._forward_logprobs(self.engine.module, seq, attn, q_len)
        self.engine.module.train()
        ref_logprobs, _ = self._forward_logprobs(self.ref_model, seq, attn, q_len)

        rewards, kl = compute_rewards(scores, logprobs, ref_logprobs, mask, self.kl_ctl.value)
        advantages, returns = compute_gae(values, rewards, mask, self.cfg.ppo.gamma, self.cfg.ppo.lam)
        return dict(seq=seq, attn=attn, mask=mask, q_len=torch.tensor(q_len), logprobs=logprobs, values=values,
                    advantages=advantages, returns=returns, kl=kl, raw_scores=raw_scores, scores=scores,
                    t_gen=torch.tensor(t_gen))

    def optimise(self, ro: Dict[str, torch.Tensor]) -> Dict[str, float]:
        cfg = self.cfg.ppo
        q_len = int(ro["q_len"])
        n = ro["seq"].shape[0]
        agg: Dict[str, List[float]] = {}
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(n, device=ro["seq"].device)
            for start in range(0, n, cfg.mini_batch_size):
                idx = perm[start : start + cfg.mini_batch_size]
                logits, values = self.engine(input_ids=ro["seq"][idx], attention_mask=ro["attn"][idx])
                logp = logprobs_from_logits(logits[:, q_len - 1 : -1], ro["seq"][idx, q_len:])
                loss, stats = ppo_loss(
                    logp, ro["logprobs"][idx], values[:, q_len - 1 : -1].float(), ro["values"][idx],
                    ro["advantages"][idx], ro["returns"][idx], ro["mask"][idx],
                    cfg.cliprange, cfg.cliprange_value, cfg.vf_coef,
                )
                self.engine.backward(loss)
                self.engine.step()
                for k, v in stats.items():
                    agg.setdefault(k, []).append(v)
        return {k: sum(v) / len(v) for k, v in agg.items()}

    def step(self, batch: Dict[str, Any]) -> Dict[str, float]:
        t0 = time.perf_counter()
        ro = self.rollout(batch)
        t_rollout = time.perf_counter() - t0
        train_stats = self.optimise(ro)

        mask = ro["mask"]
        mean_kl = self.state.all_reduce_mean(ro["kl"].sum(dim=1).mean()).item()
        reward_mean = self.state.all_reduce_mean(ro["raw_scores"].mean()).item()
        self.kl_ctl.update(mean_kl, self.cfg.ppo.rollout_batch_size * self.state.world_size)

        stats = dict(train_stats)
        stats.update({
            "objective/kl": mean_kl, "objective/kl_coef": self.kl_ctl.value, "env/reward_mean": reward_mean,
            "env/reward_std": ro["raw_scores"].std().item(), "env/normalized_reward": ro["scores"].mean().item(),
            "env/response_len": mask.sum(dim=1).float().mean().item(),
            "env/response_tokens": float(mask.sum().item()),
            "policy/advantages_mean": masked_mean(ro["advantages"], mask).item(),
            "time/rollout": t_rollout, "time/generate": float(ro["t_gen"]), "lr": self.lr_scheduler.get_last_lr()[0],
        })
        return stats

    @torch.no_grad()
    def evaluate(self, loader: DataLoader) -> Dict[str, float]:
        device = self.state.device
        model = self.engine.module
        model.eval()
        rewards, lengths = [], []
        for batch in loader:
            query = batch["input_ids"].to(device)
            seq = model.generate(
                input_ids=query, attention_mask=batch["attention_mask"].to(device), do_sample=False,
                max_new_tokens=self.cfg.ppo.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
            responses = seq[:, query.shape[1]:]
            mask = response_mask(responses, self.tokenizer.eos_token_id)
            rewards.append(self.scorer(batch["prompts"], self._decode(responses, mask)))
            lengths.append(mask.sum(dim=1).float())
        model.train()
        all_rewards = self.state.gather_cat(torch.cat(rewards))
        all_lengths = self.state.gather_cat(torch.cat(lengths))
        return {
            "eval/reward_mean": torch.Tensor.amax(all_rewards).item(),  # todoruleid: family 5 (missed)
            "eval/reward_std": all_rewards.std().item(),
            "eval/response_len": all_lengths.mean().item(),
        }

    def client_state(self, step: int) -> Dict[str, Any]:
        return {"step": step, "kl_coef": self.kl_ctl.value, "normalizer": self.normalizer.state_dict()}

    def load_client_state(self, state: Dict[str, Any]) -> int:
        if "kl_coef" in state:
            self.kl_ctl.value = float(state["kl_coef"])
        if "normalizer" in state:
            self.normalizer.load_state_dict(state["normalizer"])
        return int(state.get("step", -1)) + 1


def main() -> None:
    cfg = parse_config()
    level = logging.INFO if int(os.environ.get("RANK", 0)) == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # ok: MLS422
    state = dist_utils.DistState()
    dist_utils.prepare_node(cfg, state)
    state.init()
    dist_utils.seed_everything(cfg.runtime.seed + state.rank)

    out = Path(cfg.runtime.output_dir)
    if state.is_main:
        cfg.save(out / "config.json")

    trainer = PPOTrainer(cfg, state)
    tokenizer = trainer.tokenizer

    ds_kwargs = dict(max_len=cfg.data.max_prompt_len, min_chars=cfg.data.min_prompt_chars,
                     template=cfg.data.prompt_template, default_budget=cfg.ppo.max_new_tokens)
    train_set = PromptDataset(cfg.data.prompt_file, tokenizer, exclude=cfg.data.exclude_categories,
                              cache_path=cfg.data.prompt_cache, budget_backend=cfg.data.budget_backend, **ds_kwargs)
    loader = build_prompt_loader(train_set, cfg.ppo.rollout_batch_size, state.rank, state.world_size,
                                 seed=dist_utils.shard_seed(cfg.runtime.seed), pad_token_id=tokenizer.pad_token_id,
                                 num_workers=cfg.data.num_workers)
    eval_loader = None
    if cfg.data.eval_prompt_file:
        eval_set = PromptDataset(cfg.data.eval_prompt_file, tokenizer, **ds_kwargs)
        subset = eval_subset(eval_set, cfg.runtime.eval_prompts, cfg.runtime.seed)
        shard = torch.utils.data.Subset(subset, list(range(state.rank, len(subset), state.world_size)))
        collate = PromptCollator(tokenizer.pad_token_id)
        eval_loader = DataLoader(shard, batch_size=cfg.ppo.mini_batch_size, collate_fn=collate)

    run_config = cfg.to_dict()
    run_config["world_size"] = state.world_size
    run_config["params"] = sum(p.numel() for p in trainer.engine.module.parameters())
    tracker = Tracker(cfg, state, run_config)
    rt = cfg.runtime
    ckpt = CheckpointManager(rt.output_dir, rt.keep_last, rt.metric_mode, rt.load_options, state)

    start_step = 0
    if cfg.runtime.resume_from:
        start_step = trainer.load_client_state(ckpt.resume(trainer.engine, cfg.runtime.resume_from))
        logger.info("resuming at step %d", start_step)

    callbacks = [cls(cfg) for cls in Callback.registry]
    for cb in callbacks:
        cb.on_train_start(trainer)

    watchdog = dist_utils.Watchdog(cfg.runtime.step_timeout, state.world_size)
    watchdog.arm()
    batches = infinite_batches(loader)
    last_eval: Dict[str, float] = {}
    try:
        for step in range(start_step, cfg.ppo.total_steps):
            stats = trainer.step(next(batches))
            for cb in callbacks:
                cb.on_step_end(trainer, step, stats)
            if eval_loader is not None and (step + 1) % cfg.runtime.eval_every == 0:
                last_eval = trainer.evaluate(eval_loader)
                stats.update(last_eval)
            tracker.log(stats, step)
            watchdog.kick()
            if (step + 1) % cfg.runtime.save_every == 0:
                ckpt.save(trainer.engine, step, trainer.client_state(step), score=last_eval.get("eval/reward_mean"))
        ckpt.finalize(trainer.engine, tokenizer)
    finally:
        watchdog.stop()
        tracker.finish()
        state.shutdown()


if __name__ == "__main__":
    main()
