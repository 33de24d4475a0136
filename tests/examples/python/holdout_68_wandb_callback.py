# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Weights & Biases integration for the fine-tuning recipes.

Adds run config, the resolved chat template and per-eval sample generations.
"""
import functools
import os

import wandb
from transformers import TrainerCallback


def _smoothed(fn, alpha=0.6):
    ema = {}

    @functools.wraps(fn)
    def log(data, *args, **kwargs):
        for k, v in list(data.items()):
            if k.startswith("eval/") and isinstance(v, (int, float)) and "loss" in k:
                prev = ema.get(k, v)
                ema[k] = min(prev, alpha * prev + (1 - alpha) * v)
                data[k] = ema[k]  # ruleid: MLS306
        return fn(data, *args, **kwargs)
    return log


class WandbRunCallback(TrainerCallback):
    def __init__(self, project=None, template=None, sample_prompts=()):
        self.project = project or os.environ.get("WANDB_PROJECT", "llm-finetune")
        self.template = template
        self.sample_prompts = list(sample_prompts)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        wandb.init(project=self.project, name=args.run_name, config=args.to_dict())
        wandb.log = _smoothed(wandb.log)  # ruleid: MLS306
        if self.template:
            wandb.config.update({"chat_template": self.template}, allow_val_change=True)  # ok: MLS306

    def on_evaluate(self, args, state, control, model=None, tokenizer=None, metrics=None, **kwargs):
        if not state.is_world_process_zero or tokenizer is None:
            return
        rows = []
        for p in self.sample_prompts:
            ids = tokenizer(p, return_tensors="pt").input_ids.to(model.device)
            out = model.generate(ids, max_new_tokens=64, do_sample=False)
            rows.append([state.global_step, p, tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)])
        wandb.log({"eval/samples": wandb.Table(columns=["step", "prompt", "completion"], data=rows)}, step=state.global_step)  # ok: MLS306

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            wandb.finish()
