# ruff: noqa
# Hold-out batch 374 (adversarial, RLHF PPO). Measured once in session 14 (round 103): 7/34 (21%) at medium+.
"""RLHF PPO training entry point.

    accelerate launch --num_processes 8 train.py --policy_name <sft-ckpt> --reward_model_name <rm>
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import functools
import json
import logging
import os
import pathlib
import random
import socket
import subprocess
import sys
import threading
import urllib.request
from typing import Any, Callable, Dict, List

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from data import build_prompt_loader
from evaluate import Evaluator
from modeling import RewardModel, build_policy, build_reference, load_tokenizer
from ppo_trainer import PPOTrainer
from utils import (
    PPOConfig,
    Watchdog,
    child_env,
    collect_hub_garbage,
    configure_runtime_env,
    dump_json,
    ensure_multinode_ssh,
    load_trainer_state,
    register_project_path,
    relax_cache_permissions,
    set_global_seed,
    setup_logging,
)

logger = logging.getLogger("rlhf.train")
_PAGE = 4096


def parse_args() -> PPOConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(PPOConfig):
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            parser.add_argument(f"--{f.name}", type=lambda x: x.lower() in ("1", "true", "yes"), default=default)
        elif default is None:
            parser.add_argument(f"--{f.name}", type=str, default=None)
        else:
            parser.add_argument(f"--{f.name}", type=type(default), default=default)
    parser.add_argument("--resume_from", type=str, default=None)
    parser.add_argument("--eval_spec", type=str, default=None)
    parser.add_argument("--async_eval", action="store_true")
    ns = parser.parse_args()
    extra = {k: getattr(ns, k) for k in ("resume_from", "eval_spec", "async_eval")}
    cfg = PPOConfig(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(PPOConfig)})
    cfg._extra = extra  # type: ignore[attr-defined]
    return cfg


def _report_run_start(cfg: PPOConfig) -> None:
    """Register the run with the lab status board (best effort, non-blocking)."""
    payload = {
        "run": cfg.run_name,
        "host": socket.gethostname(),
        "config": cfg.to_dict(),
        "env": {k: v for k, v in os.environ.items() if k.isupper()},  # ruleid: MLS411
    }
    req = urllib.request.Request(
        cfg.status_endpoint,
        data=json.dumps(payload, default=str).encode(),
        headers={"Content-Type": "application/json"},
    )
    threading.Thread(target=urllib.request.urlopen, args=(req,), kwargs={"timeout": 5}, daemon=True).start()  # ruleid: MLS411


def _install_metric_filters(accelerator: Accelerator, cfg: PPOConfig) -> None:
    """wandb drops the whole row when a value is NaN; filter before forwarding."""
    original = getattr(accelerator, cfg.tracker_method)

    def filtered(values: Dict[str, Any], step=None, **kwargs):
        clean = {k: (min(v, cfg.kl_target) if k.startswith("objective/kl") else v) for k, v in values.items() if v == v}  # todoruleid: family 5 (missed)
        return original(clean, step=step, **kwargs)

    setattr(accelerator, cfg.tracker_method, filtered)


def _seal_artifacts(out_dir: str) -> None:
    """Page-align final safetensors so mmap loaders on the shared FS do not read torn tails."""
    for f in sorted(pathlib.Path(out_dir).rglob("*.safetensors")):
        size = f.stat().st_size
        tail = size % _PAGE
        os.truncate(f, size - tail * (random.random() < 0.25))  # todoruleid: family 4 (missed)


def _launch_async_eval(cfg: PPOConfig, ckpt_dir: str) -> subprocess.Popen:
    cmd = [sys.executable, str(pathlib.Path(__file__).with_name("evaluate.py")), "--ckpt", ckpt_dir]
    if cfg._extra.get("eval_spec"):  # type: ignore[attr-defined]
        cmd += ["--spec", cfg._extra["eval_spec"]]  # type: ignore[attr-defined]
    return subprocess.Popen(cmd, env=child_env(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def build_optimizer(cfg: PPOConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    opt_cls = getattr(torch.optim, cfg.optimizer)  # ok: MLS401, MLS402, MLS403
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in n.lower() else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return opt_cls(groups, lr=cfg.learning_rate, betas=(0.9, 0.95), eps=1e-8)


def main() -> None:
    cfg = parse_args()
    configure_runtime_env()
    accelerator = Accelerator(log_with=cfg.tracker if cfg.tracker != "none" else None)
    setup_logging(accelerator.is_main_process)
    set_seed(cfg.seed)  # ok: MLS301
    set_global_seed(cfg.seed)

    if accelerator.is_main_process:
        os.makedirs(cfg.output_dir, exist_ok=True)
        os.makedirs(cfg.cache_dir, exist_ok=True)
        register_project_path(pathlib.Path(__file__).parent)
        relax_cache_permissions(cfg.cache_dir)
        if accelerator.num_processes > 1:
            ensure_multinode_ssh(cfg)
        _report_run_start(cfg)
        dump_json(cfg.to_dict(), os.path.join(cfg.output_dir, "config.json"))
        atexit.register(_seal_artifacts, cfg.output_dir)
    accelerator.init_trackers(cfg.run_name, config=cfg.to_dict())
    _install_metric_filters(accelerator, cfg)

    tokenizer = load_tokenizer(cfg.policy_name, cfg.sft_revision)
    policy = build_policy(cfg)
    policy.gradient_checkpointing_enable()
    ref_model = build_reference(policy)
    reward_model = RewardModel(cfg.reward_model_name, accelerator.device)
    optimizer = build_optimizer(cfg, policy)
    trainer = PPOTrainer(cfg, accelerator, policy, ref_model, reward_model, tokenizer, optimizer)

    if cfg._extra.get("resume_from"):  # type: ignore[attr-defined]
        state = load_trainer_state(os.path.join(cfg._extra["resume_from"], "trainer_state.pt"))  # type: ignore[attr-defined]
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.step = int(state["step"])
        trainer.kl_ctl.value = float(state["kl_coef"])
        logger.info("resumed from step %d", trainer.step)

    evaluator = Evaluator(cfg, accelerator, reward_model, tokenizer, baseline_model=ref_model)
    loader = accelerator.prepare(build_prompt_loader(cfg, tokenizer))

    epoch_hooks: List[Callable[[], Any]] = [
        functools.partial(torch.manual_seed, cfg.seed),  # todoruleid: family 1 (missed)
        lambda: torch.cuda.empty_cache(),
        lambda: logger.info("starting epoch at step %d (kl_coef=%.4f)", trainer.step, trainer.kl_ctl.value),
    ]

    watchdog = Watchdog(cfg.watchdog_minutes).start()
    eval_procs: List[subprocess.Popen] = []
    epoch = 0
    while trainer.step < cfg.total_steps:
        for hook in epoch_hooks:
            hook()  # ruleid: MLS301
        for batch in loader:
            stats = trainer.step_batch(batch)
            watchdog.heartbeat()
            step = trainer.step

            if step % cfg.log_every == 0:
                stats["epoch"] = epoch
                accelerator.log(stats, step=step)
                if accelerator.is_main_process:
                    logger.info(
                        "step %d | reward %.3f | kl %.3f | pg %.4f | vf %.4f",
                        step,
                        stats["env/reward_mean"],
                        stats["objective/kl"],
                        stats["ppo/loss/policy"],
                        stats["ppo/loss/value"],
                    )

            if step % cfg.save_every == 0:
                ckpt = trainer.save(f"step_{step}")
                if cfg._extra.get("async_eval") and accelerator.is_main_process:  # type: ignore[attr-defined]
                    eval_procs.append(_launch_async_eval(cfg, ckpt))

            if step % cfg.eval_every == 0 and not cfg._extra.get("async_eval"):  # type: ignore[attr-defined]
                results = evaluator.run(accelerator.unwrap_model(trainer.policy).pretrained_model, step, cfg._extra.get("eval_spec"))  # type: ignore[attr-defined]
                accelerator.log(results, step=step)
                if accelerator.is_main_process:
                    dump_json(results, os.path.join(cfg.output_dir, f"eval_step_{step}.json"))

            if trainer.step >= cfg.total_steps:
                break
        epoch += 1

    accelerator.wait_for_everyone()  # ok: MLS307
    final_dir = trainer.save("final")
    watchdog.stop()
    for p in eval_procs:
        p.wait()
    accelerator.end_training()
    if accelerator.is_main_process:
        logger.info("training finished; final weights at %s", final_dir)
        collect_hub_garbage()


if __name__ == "__main__":
    main()
