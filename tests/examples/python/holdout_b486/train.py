# ruff: noqa
# Hold-out batch 486 (adversarial, RLHF reward model and PPO with accelerate). Measured once in session 21 (round 131): 16/32 (50%) at medium+.
"""RLHF entry point: reward-model training followed by PPO fine-tuning.

    accelerate launch --num_processes 8 train.py --config configs/qwen_0p5b.yaml --stage all
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from data import build_preference_loader, build_prompt_loader
from evaluate import WinRateEvaluator
from modeling import (PolicyWithValueHead, RewardModel, bradley_terry_loss, create_reference_model,
                      load_policy, load_tokenizer)
from ppo_trainer import KLGuardCallback, PPOTrainer, ThroughputCallback, TrackerCallback, load_rollout_cache
from utils import (DistInfo, init_runtime, load_config, load_training_state, prepare_output_dir, read_accelerate_defaults,
                   push_checkpoint, setup_multinode_ssh, sync_point)


logger = logging.getLogger("rlhf")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=str, default=None)
    p.add_argument("--stage", choices=["rm", "ppo", "all"], default="all")
    p.add_argument("--optimizer", type=str, default="AdamW")
    p.add_argument("--warmup_steps", type=int, default=50)
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    return p.parse_args(argv)


def build_optimizer(name: str, params, lr: float, weight_decay: float = 0.0):
    opt_cls = getattr(torch.optim, name)  # ok: MLS401, MLS402, MLS403
    kwargs = {"lr": lr, "weight_decay": weight_decay}
    if name.lower().startswith("adam"):
        kwargs["betas"] = (0.9, 0.95)
        kwargs["eps"] = 1e-8
    return opt_cls(params, **kwargs)


def warmup_cosine(optimizer, warmup: int, total: int):
    def _fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, _fn)


def train_reward_model(cfg, args, accelerator: Accelerator, tok) -> str:
    rm_dir = os.path.join(cfg.output_dir, "reward_model")
    model = RewardModel.from_pretrained(cfg.reward_name or cfg.policy_name, cfg)
    if args.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable()
    train_loader = build_preference_loader(cfg.preference_path, tok, cfg, shuffle=True)
    eval_path = cfg.preference_path.replace("train", "test")
    eval_loader = build_preference_loader(eval_path, tok, cfg, shuffle=False) if os.path.exists(eval_path) else None

    optimizer = build_optimizer(args.optimizer, model.parameters(), cfg.rm_lr, weight_decay=0.01)
    total = cfg.rm_epochs * len(train_loader)
    scheduler = warmup_cosine(optimizer, args.warmup_steps, total)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)

    step = 0
    for epoch in range(cfg.rm_epochs):
        model.train()
        bar = tqdm(train_loader, disable=not accelerator.is_main_process, desc=f"rm epoch {epoch}")
        for batch in bar:
            with accelerator.accumulate(model):
                rewards = model(batch["input_ids"], batch["attention_mask"])
                half = rewards.size(0) // 2
                loss, stats = bradley_terry_loss(rewards[:half], rewards[half:], batch["margin"], cfg.rm_margin_weight)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % cfg.log_every == 0:
                accelerator.log({"rm/loss": loss.item(), **stats}, step=step)
                bar.set_postfix(loss=f"{loss.item():.4f}", acc=f"{stats['rm/accuracy']:.3f}")

    # held-out accuracy and reward statistics used to normalise the head
    model.eval()
    all_rewards, correct, count = [], 0.0, 0.0
    for batch in (eval_loader or train_loader):
        with torch.no_grad():
            rewards = model(batch["input_ids"], batch["attention_mask"])
        half = rewards.size(0) // 2
        c, r = accelerator.gather_for_metrics((rewards[:half].float(), rewards[half:].float()))
        all_rewards += [c, r]
        correct += float((c > r).sum())
        count += c.numel()
        if count >= 2048:
            break
    flat = torch.cat(all_rewards)
    acc = correct / max(count, 1.0)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.calibrate(float(flat.mean()), float(flat.std()))
    accelerator.log({"rm/eval_accuracy": acc}, step=step)
    sync_point(accelerator, "rm-save")
    if accelerator.is_main_process:
        unwrapped.save(rm_dir)
        tok.save_pretrained(rm_dir)
        with open(os.path.join(rm_dir, "rm_eval.json"), "w") as fh:
            json.dump({"accuracy": acc, "n": count}, fh, indent=2)
        logger.info("reward model held-out accuracy %.4f on %d pairs", acc, int(count))
    accelerator.free_memory()
    return rm_dir


def train_ppo(cfg, args, accelerator: Accelerator, tok, rm_dir: str) -> None:
    dist_info = DistInfo(accelerator)
    policy: PolicyWithValueHead = load_policy(cfg)
    if args.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    ref = create_reference_model(policy)
    reward_model = RewardModel.from_pretrained(rm_dir, local_only=True)
    reward_model.requires_grad_(False)
    reward_model.eval()

    optimizer = build_optimizer(args.optimizer, [p for p in policy.parameters() if p.requires_grad], cfg.lr)
    scheduler = warmup_cosine(optimizer, args.warmup_steps, cfg.total_steps)
    rollout_bs = cfg.batch_size // dist_info.world
    prompt_loader = build_prompt_loader(cfg.prompt_path, tok, cfg, dist_info.world, dist_info.rank, rollout_bs)

    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    ref = ref.to(accelerator.device)
    reward_model = reward_model.to(accelerator.device, dtype=torch.bfloat16)

    callbacks = [TrackerCallback(), KLGuardCallback(cfg), ThroughputCallback(cfg.log_every)]
    trainer = PPOTrainer(cfg, accelerator, policy, ref, reward_model, tok, optimizer, scheduler, callbacks)
    if cfg.resume_from:
        trainer.load_state(load_training_state(cfg.resume_from))
        replay = os.path.join(cfg.cache_dir, f"rollouts_rank{dist_info.rank}.pkl")
        for rb in (load_rollout_cache(replay) if os.path.exists(replay) else []):
            trainer.ppo_step(rb)

    evaluator = WinRateEvaluator(cfg, accelerator, tok)
    trainer.train(prompt_loader, evaluator)

    final_dir = trainer.save_checkpoint(trainer.step)
    sync_point(accelerator, "final")
    if accelerator.is_main_process:
        best = evaluator.tracker
        summary = {"final_step": trainer.step, "best_step": best.best_step, "best_" + best.metric: best.best}
        with open(os.path.join(cfg.output_dir, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=2)
        logger.info("training finished: %s", summary)
        if cfg.push_to_hub and cfg.hub_repo_id:
            folder = os.path.join(cfg.output_dir, "best") if best.best_step is not None else final_dir
            push_checkpoint(folder, cfg.hub_repo_id, cfg.hub_private,
                            commit_message=f"PPO policy, step {best.best_step or trainer.step}")


def main(argv=None) -> None:
    args = parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    cfg = load_config(args.config, overrides)
    init_runtime(cfg)

    accelerator = Accelerator(log_with=cfg.report_to, project_dir=cfg.output_dir,
                              gradient_accumulation_steps=max(cfg.batch_size // (cfg.mini_batch_size * int(os.environ.get("WORLD_SIZE", "1"))), 1))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout,
                        level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    logger.info("accelerate defaults: %s", read_accelerate_defaults().get("mixed_precision", "unset"))
    set_seed(cfg.seed, device_specific=True)  # ok: MLS301
    accelerator.init_trackers("rlhf-ppo", config=cfg.to_dict())
    if int(os.environ.get("NNODES", os.environ.get("SLURM_NNODES", "1"))) > 1 and DistInfo(accelerator).is_node_lead:
        setup_multinode_ssh()
    prepare_output_dir(cfg, accelerator)

    tok = load_tokenizer(cfg.policy_name, cfg.revision)
    rm_dir = os.path.join(cfg.output_dir, "reward_model")
    if args.stage in ("rm", "all"):
        tok.padding_side = "right"
        rm_dir = train_reward_model(cfg, args, accelerator, tok)
        tok.padding_side = "left"
    if args.stage in ("ppo", "all"):
        train_ppo(cfg, args, accelerator, tok, rm_dir)
    accelerator.end_training()


if __name__ == "__main__":
    main()
