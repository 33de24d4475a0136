# ruff: noqa
# Hold-out batch 413 (textbook, RLHF reward model). Measured once in session 17 (round 113): 22/30 (73%) at medium+.
"""Preference-accuracy evaluation, in-process (``evaluate``) or standalone on a checkpoint."""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from contextlib import nullcontext
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from utils import all_gather_cat, get_world_size, is_main_process, unwrap_model

logger = logging.getLogger(__name__)

EVAL_LIB_DIR = os.environ.get("RM_EVAL_LIB_DIR", "/tmp/rm_cache/lib")


def compute_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> Dict[str, float]:
    """Pairwise metrics from gathered chosen / rejected rewards."""
    diff = chosen - rejected
    correct = (chosen >= rejected).float()  # ruleid: MLS306
    all_rewards = torch.cat([chosen, rejected])
    return {
        "eval/accuracy": correct.mean().item(),
        "eval/loss": (-F.logsigmoid(diff)).mean().item(),
        "eval/margin_mean": diff.mean().item(),
        "eval/margin_std": diff.std(unbiased=False).item(),
        "eval/reward_mean": all_rewards.mean().item(),
        "eval/reward_std": all_rewards.std(unbiased=False).item(),
        "eval/num_pairs": float(chosen.numel()),
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = torch.bfloat16,
    max_batches: Optional[int] = None,
    update_reward_stats: bool = True,
) -> Dict[str, float]:
    """Score every pair in ``loader`` on all ranks and compute global metrics."""
    was_training = model.training
    model.eval()
    cpu_rng = torch.get_rng_state()
    chosen_all, rejected_all = [], []
    autocast = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        input_ids = batch["input_ids"].to(device, non_blocking=True)
        attention_mask = batch["attention_mask"].to(device, non_blocking=True)
        with autocast:
            rewards = model(input_ids=input_ids, attention_mask=attention_mask)
        half = rewards.size(0) // 2
        chosen_all.append(rewards[:half].float())
        rejected_all.append(rewards[half:].float())

    empty = torch.zeros(0, device=device)
    chosen = all_gather_cat(torch.cat(chosen_all) if chosen_all else empty)
    rejected = all_gather_cat(torch.cat(rejected_all) if rejected_all else empty)
    metrics = compute_metrics(chosen, rejected) if chosen.numel() else {}

    if update_reward_stats and metrics:
        core = unwrap_model(model)
        core.reward_mean.fill_(metrics["eval/reward_mean"])
        core.reward_std.fill_(max(metrics["eval/reward_std"], 1e-6))

    torch.set_rng_state(cpu_rng)  # ok: MLS301
    if was_training:
        model.train()
    return metrics


def save_eval_results(metrics: Dict[str, float], path: str, extra: Optional[Dict[str, object]] = None) -> None:
    if not is_main_process():
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    payload = {"metrics": metrics, **(extra or {})}
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)
    logger.info("wrote %s", path)


def launch_async_eval(checkpoint: str, model_name: str, data: str, output: str, nproc: int = 1) -> subprocess.Popen:
    """Evaluate a checkpoint in a background process so training is not blocked."""
    env = dict(os.environ)
    env["TOKENIZERS_PARALLELISM"] = "false"
    # jemalloc keeps RSS flat for the CPU-heavy tokenisation in the eval worker
    env["LD_PRELOAD"] = os.path.join(EVAL_LIB_DIR, "libjemalloc.so.2")  # ruleid: MLS422
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
        os.path.abspath(__file__),
        "--checkpoint", checkpoint,
        "--model", model_name,
        "--data", data,
        "--output", output,
    ]
    logger.info("launching async eval: %s", " ".join(cmd))
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def main(argv=None) -> None:
    from data import PairCollator, PreferenceDataset, build_dataloader, load_pairs, tokenize_pairs
    from model import build_reward_model, build_tokenizer
    from utils import load_checkpoint, setup_distributed

    p = argparse.ArgumentParser(description="Evaluate a reward-model checkpoint on pairwise data")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--revision", default=None)
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--output", default=None)
    p.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rank, local_rank, world_size = setup_distributed()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")

    tokenizer = build_tokenizer(args.model, revision=args.revision)
    model = build_reward_model(args.model, revision=args.revision, dtype=args.dtype).to(device)
    load_checkpoint(args.checkpoint, model)

    pairs = load_pairs(args.data, split="test")
    features = tokenize_pairs(pairs, tokenizer, args.max_length)
    ds = PreferenceDataset(features, train=False)
    loader = build_dataloader(
        ds, PairCollator(tokenizer.pad_token_id), args.batch_size, world_size, rank, seed=0, train=False
    )
    amp = None if args.dtype == "fp32" else torch.bfloat16
    metrics = evaluate(model, loader, device, amp_dtype=amp, update_reward_stats=False)
    if is_main_process():
        print(json.dumps(metrics, indent=2))
    out = args.output or os.path.join(args.checkpoint, "eval_results.json")
    save_eval_results(metrics, out, extra={"checkpoint": args.checkpoint, "data": args.data, "world_size": get_world_size()})
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
