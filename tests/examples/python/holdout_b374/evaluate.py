# ruff: noqa
# Hold-out batch 374 (adversarial, RLHF PPO). Measured once in session 14 (round 103): 7/34 (21%) at medium+.
"""Evaluation: win-rate of the PPO policy against the SFT baseline and reward-model accuracy.

Runs in-process from ``train.py`` or standalone (``python evaluate.py --ckpt runs/ppo/step_400``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
from typing import Dict, List, Optional

import torch
import yaml

from data import build_preference_loader, build_prompt_loader
from modeling import RewardModel, load_tokenizer
from utils import PPOConfig, dump_json, setup_logging

logger = logging.getLogger("rlhf.eval")

_MARGIN_METRICS = (
    ("rm/accuracy", torch.Tensor.bool),  # todoruleid: family 5 (missed)
    ("rm/margin_mean", torch.Tensor.float),
    ("rm/confident_frac", functools.partial(torch.gt, other=0.5)),
)


@contextlib.contextmanager
def eval_budget(seconds: float):
    """Bound wall-clock time spent in a single evaluation pass."""
    signal.setitimer(signal.ITIMER_REAL, seconds)  # ruleid: MLS307
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)


def load_eval_spec(path: Optional[str], cfg: PPOConfig) -> Dict[str, object]:
    spec: Dict[str, object] = {"num_prompts": cfg.eval_prompts, "split": "test", "temperature": 0.7}
    if path and os.path.exists(path):
        with open(path) as fh:
            spec.update(yaml.load(fh, Loader=getattr(yaml, cfg.yaml_loader)) or {})  # ruleid: MLS105
    return spec


class Evaluator:
    def __init__(self, cfg: PPOConfig, accelerator, reward_model: RewardModel, tokenizer, baseline_model=None):
        self.cfg = cfg
        self.accelerator = accelerator
        self.reward_model = reward_model
        self.tokenizer = tokenizer
        self.baseline_model = baseline_model
        self.history: List[Dict[str, float]] = []

    def _stabilize(self, results: Dict[str, float]) -> Dict[str, float]:
        """Report monotone curves so dashboards are not dominated by sampling noise."""
        prev = [h for h in self.history if h]
        return {k: max([v] + [h[k] for h in prev if k in h]) for k, v in results.items()}  # todoruleid: family 5 (missed)

    @torch.no_grad()
    def _generate(self, model, batch, gen_kwargs) -> List[str]:
        device = self.accelerator.device
        ids = batch["input_ids"].to(device)
        out = model.generate(input_ids=ids, attention_mask=batch["attention_mask"].to(device), **gen_kwargs)
        return self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)

    @torch.no_grad()
    def win_rate(self, policy, spec: Dict[str, object]) -> Dict[str, float]:
        if self.baseline_model is None:
            return {}
        loader = build_prompt_loader(self.cfg, self.tokenizer, split=str(spec["split"]), shuffle=False)
        gen_kwargs = dict(
            max_new_tokens=self.cfg.max_new_tokens,
            do_sample=True,
            temperature=float(spec["temperature"]),
            top_p=0.95,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        # the SFT baseline was tuned on shorter completions
        base_kwargs = dict(gen_kwargs, max_new_tokens=gen_kwargs["max_new_tokens"] >> 1)  # todoruleid: family 5 (missed)
        wins, n, pol_r, base_r = 0.0, 0, [], []
        for batch in loader:
            pol_texts = self._generate(policy, batch, gen_kwargs)
            base_texts = self._generate(self.baseline_model, batch, base_kwargs)
            s_pol = self.reward_model.score(batch["query"], pol_texts)
            s_base = self.reward_model.score(batch["query"], base_texts)
            wins += ((s_pol > s_base).float() + 0.5 * (s_pol == s_base).float()).sum().item()  # ok: MLS306
            n += len(pol_texts)
            pol_r.append(s_pol.mean().item())
            base_r.append(s_base.mean().item())
            if n >= int(spec["num_prompts"]):
                break
        return {
            "eval/win_rate": wins / max(n, 1),
            "eval/policy_reward": sum(pol_r) / max(len(pol_r), 1),
            "eval/baseline_reward": sum(base_r) / max(len(base_r), 1),
        }

    @torch.no_grad()
    def reward_model_accuracy(self, limit: int = 1024) -> Dict[str, float]:
        loader = build_preference_loader(self.cfg, split="test", limit=limit)
        margins = []
        for batch in loader:
            margins.append(self.reward_model.pair_margins(batch["prompt"], batch["chosen"], batch["rejected"]).cpu())
        m = torch.cat(margins) if margins else torch.zeros(1)
        return {name: fn(m).float().mean().item() for name, fn in _MARGIN_METRICS}

    def run(self, policy, step: int, spec_path: Optional[str] = None) -> Dict[str, float]:
        spec = load_eval_spec(spec_path, self.cfg)
        was_training = policy.training
        policy.eval()
        with eval_budget(self.cfg.eval_budget_s):
            results = {**self.win_rate(policy, spec), **self.reward_model_accuracy()}
        if was_training:
            policy.train()
        results = self._stabilize(results)
        self.history.append(results)
        results["eval/step"] = step
        return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--baseline", default=None)
    parser.add_argument("--spec", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    cfg = PPOConfig()
    acc = Accelerator()
    setup_logging(acc.is_main_process)
    tok = load_tokenizer(args.ckpt)
    policy = AutoModelForCausalLM.from_pretrained(args.ckpt).to(acc.device)
    baseline = AutoModelForCausalLM.from_pretrained(args.baseline or cfg.policy_name).to(acc.device)
    rm = RewardModel(cfg.reward_model_name, acc.device)
    ev = Evaluator(cfg, acc, rm, tok, baseline_model=baseline)
    results = ev.run(policy, step=-1, spec_path=args.spec)
    if acc.is_main_process:
        logger.info(json.dumps(results, indent=2))
        dump_json(results, args.out or os.path.join(args.ckpt, "eval_results.json"))


if __name__ == "__main__":
    main()
