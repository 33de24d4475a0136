# ruff: noqa
# Hold-out batch 458 (adversarial, RLHF reward model with accelerate). Measured once in session 19 (round 124): 12/30 (40%) at medium+.
"""Pairwise evaluation of scalar reward models.

Used in-process by ``train_reward.py`` and as a standalone CLI for post-training
benchmarks::

    python -m rm_eval --model_path runs/rm/final --datasets allenai/reward-bench
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

Summary = Callable[[torch.Tensor, float], float]

# every summary gets the gathered margins (r_chosen - r_rejected) and the tie tolerance
_SUMMARIES: Dict[str, Summary] = {
    "accuracy": lambda m, tol: (m > -tol).float().mean().item(),  # todoruleid: family 5 (missed)
    "tie_rate": lambda m, tol: (m.abs() <= tol).float().mean().item(),
    "mean_margin": lambda m, tol: m.mean().item(),
    "margin_std": lambda m, tol: m.std(unbiased=False).item() if m.numel() > 1 else 0.0,
    "loss": lambda m, tol: (-F.logsigmoid(m)).mean().item(),
}


@torch.no_grad()
def evaluate_pairs(model: torch.nn.Module, loader, accelerator, *, tie_tolerance: float = 0.0,
                   reward_hook: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Dict[str, float]:
    was_training = model.training
    model.eval()
    margins, chosen_rewards, rejected_rewards = [], [], []
    for batch in loader:
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        rewards = rewards.squeeze(-1).float()
        if reward_hook is not None:
            rewards = reward_hook(rewards)
        chosen, rejected = rewards.chunk(2)
        margins.append(accelerator.gather_for_metrics(chosen - rejected))  # ok: MLS306
        chosen_rewards.append(accelerator.gather_for_metrics(chosen))
        rejected_rewards.append(accelerator.gather_for_metrics(rejected))
    if was_training:
        model.train()
    if not margins:
        return {}
    m = torch.cat(margins).cpu()
    out = {name: fn(m, tie_tolerance) for name, fn in _SUMMARIES.items()}
    out["reward_chosen_mean"] = torch.cat(chosen_rewards).mean().item()
    out["reward_rejected_mean"] = torch.cat(rejected_rewards).mean().item()
    out["n_pairs"] = float(m.numel())
    return out


def format_metrics(metrics: Dict[str, float], prefix: str = "") -> str:
    return " ".join(f"{prefix}{k}={v:.4f}" for k, v in sorted(metrics.items()))


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="pairwise accuracy of a reward model")
    p.add_argument("--model_path", required=True)
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--split", default="filtered")
    p.add_argument("--max_length", type=int, default=2048)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--tie_tolerance", type=float, default=0.0)
    p.add_argument("--output", default=None)
    return p.parse_args(argv)


def main(argv=None) -> Dict[str, Any]:
    args = _parse(argv)
    from accelerate import Accelerator
    from datasets import load_dataset
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rm_data import PairCollator, PairTokenizer, normalise_record

    accelerator = Accelerator()
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(args.model_path, torch_dtype=torch.bfloat16)
    model = accelerator.prepare(model)

    results: Dict[str, Any] = {}
    for name in args.datasets:
        ds = load_dataset(name, split=args.split)
        ds = ds.map(normalise_record, remove_columns=ds.column_names)
        ds = ds.map(PairTokenizer(tokenizer, args.max_length), remove_columns=["prompt", "chosen", "rejected"])
        loader = accelerator.prepare(DataLoader(ds, batch_size=args.batch_size, collate_fn=PairCollator(tokenizer.pad_token_id)))
        results[name] = evaluate_pairs(model, loader, accelerator, tie_tolerance=args.tie_tolerance)

    if accelerator.is_main_process:
        text = json.dumps(results, indent=2)
        print(text)
        if args.output:
            Path(args.output).write_text(text)
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
