# ruff: noqa
# Hold-out batch 516 (family-focused 2/3, RLHF PPO). Measured once in session 23 (round 138): 10/30 (33%) at medium+.
"""Two-stage RLHF: `torchrun ... train_rlhf.py rm --model M --train T --eval E`, then
`torchrun ... train_rlhf.py ppo --model SFT --reward-model RM_DIR --prompts P`."""
import argparse
import datetime
import logging
import os
import random
import sys
from dataclasses import fields

import numpy as np
import torch
from transformers import AutoTokenizer

from data import PreferenceDataset, PromptCollator, PromptDataset, build_loader, infinite
from dist_utils import (HeartbeatWatchdog, cleanup_distributed, init_distributed, install_preemption_handler,
                        reap_stale_workers, set_wallclock_limit)
from modeling import PolicyWithValueHead, RewardModel, create_reference_model, enable_lean_log_softmax
from ppo_trainer import PPOConfig, PPOTrainer
from reward_trainer import RewardTrainer

logger = logging.getLogger("rlhf")

_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def setup_logging(rank: int, output_dir: str) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    handlers = [logging.StreamHandler(sys.stdout)]
    if rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    logging.basicConfig(level=level, format=f"%(asctime)s [r{rank}] %(name)s: %(message)s", handlers=handlers)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def load_tokenizer(name: str):
    tok = AutoTokenizer.from_pretrained(name, use_fast=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def in_window(spec: str, now: datetime.datetime) -> bool:
    """``spec`` like ``"sun 01:00-05:00"`` (local time); empty disables."""
    if not spec:
        return False
    day, span = spec.lower().split()
    start, end = span.split("-")
    return _DAYS[now.weekday()] == day[:3] and start <= now.strftime("%H:%M") < end


class MaintenanceWindowGuard:
    """Stop before the cluster's weekly maintenance drains the nodes."""

    def __init__(self, spec: str, info):
        self.spec = spec
        self.info = info

    def __call__(self, trainer, step: int) -> None:
        if self.info.is_main and in_window(self.spec, datetime.datetime.now()):  # ruleid: MLS308
            logger.warning("inside maintenance window '%s' at step %d; stopping", self.spec, step)
            sys.exit(0)  # ruleid: MLS307


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--output-dir", default="outputs/run")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    for flag, default in [("seed", 1234), ("max-length", 1024), ("num-workers", 2), ("max-hours", 47.5),
                          ("watchdog-timeout", 1800.0), ("nccl-timeout-min", 30),
                          ("maintenance-window", "sun 01:00-05:00")]:
        p.add_argument("--" + flag, type=type(default), default=default)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lean-log-softmax", action="store_true", default=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)

    rm = sub.add_parser("rm", help="train the reward model")
    add_common_args(rm)
    rm.add_argument("--train", required=True)
    rm.add_argument("--eval", required=True)
    for flag, default in [("epochs", 1), ("micro-batch-size", 4), ("grad-accum-steps", 8), ("lr", 9e-6),
                          ("head-lr-mult", 10.0), ("weight-decay", 0.01), ("warmup-ratio", 0.03),
                          ("max-grad-norm", 1.0), ("weight-bound", 0.5), ("embed-grad-shrink", 1.0),
                          ("ema-decay", 0.0), ("patience", 3), ("log-every", 10),
                          ("eval-every", 200)]:
        rm.add_argument("--" + flag, type=type(default), default=default)
    rm.add_argument("--no-bf16", dest="bf16", action="store_false")

    ppo = sub.add_parser("ppo", help="PPO against a trained reward model")
    add_common_args(ppo)
    ppo.add_argument("--reward-model", required=True)
    ppo.add_argument("--prompts", required=True)
    ppo.add_argument("--resume", default=None)
    ppo.add_argument("--share-ref-lm-head", action="store_true", default=True)
    for f in fields(PPOConfig):
        if f.name in ("output_dir", "seed"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            ppo.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=f.default)
        else:
            ppo.add_argument(flag, type=type(f.default), default=f.default)
    return parser.parse_args(argv)


def run_reward_modeling(args, info) -> None:
    tok = load_tokenizer(args.model)
    tok.padding_side = "right"
    train_ds = PreferenceDataset(args.train, tok, args.max_length)
    eval_ds = PreferenceDataset(args.eval, tok, args.max_length)
    model = RewardModel(args.model, args.dtype, args.gradient_checkpointing)
    model.backbone.config.pad_token_id = tok.pad_token_id
    trainer = RewardTrainer(args, info, model, tok, train_ds, eval_ds)
    install_preemption_handler(lambda: trainer.save(os.path.join(args.output_dir, "reward_model_preempt")))
    trainer.train()


def run_ppo(args, info, watchdog: HeartbeatWatchdog) -> None:
    cfg_kwargs = {f.name: getattr(args, f.name) for f in fields(PPOConfig) if hasattr(args, f.name)}
    cfg = PPOConfig(output_dir=args.output_dir, seed=args.seed, **cfg_kwargs)

    tok = load_tokenizer(args.model)
    prompts = PromptDataset(args.prompts, tok, args.max_length - cfg.max_new_tokens)
    loader, sampler = build_loader(prompts, PromptCollator(tok.pad_token_id), cfg.rollout_batch_size,
                                   info.rank, info.world_size, seed=args.seed, num_workers=args.num_workers)

    policy = PolicyWithValueHead(args.model, args.dtype, gradient_checkpointing=args.gradient_checkpointing)
    ref_model = create_reference_model(policy, share_output_embeddings=args.share_ref_lm_head)
    reward_model = RewardModel(args.model, args.dtype)
    rm_state = torch.load(os.path.join(args.reward_model, "reward_model.pt"), map_location="cpu", weights_only=True)
    reward_model.load_state_dict(rm_state)
    for p in reward_model.parameters():
        p.requires_grad_(False)

    callbacks = [lambda tr, step: watchdog.beat(), MaintenanceWindowGuard(args.maintenance_window, info)]
    trainer = PPOTrainer(cfg, info, policy, ref_model, reward_model, tok, infinite(loader, sampler), callbacks)
    start_step = trainer.load_checkpoint(args.resume) if args.resume else 0
    install_preemption_handler(lambda: trainer.save_checkpoint(f"preempt{trainer.global_step:06d}"))
    set_wallclock_limit(args.max_hours, lambda: trainer.save_checkpoint(f"timeout{trainer.global_step:06d}"))
    trainer.train(start_step)


def main(argv=None) -> None:
    args = parse_args(argv)
    info = init_distributed(timeout_minutes=args.nccl_timeout_min)
    setup_logging(info.rank, args.output_dir)
    set_seed(args.seed + info.rank)
    if info.is_local_main:
        reap_stale_workers()
    if args.lean_log_softmax:
        enable_lean_log_softmax()
    logger.info("stage=%s world_size=%d args=%s", args.stage, info.world_size, vars(args))

    watchdog = None
    try:
        if args.stage == "rm":
            run_reward_modeling(args, info)
        else:
            # rollouts make PPO steps long and uneven; the watchdog only guards this stage
            watchdog = HeartbeatWatchdog(timeout_s=args.watchdog_timeout).start()
            run_ppo(args, info, watchdog)
    finally:
        if watchdog is not None:
            watchdog.stop()
        cleanup_distributed()


if __name__ == "__main__":
    main()
