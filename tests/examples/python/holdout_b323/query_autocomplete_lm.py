# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Train a small causal LM for search-query autocompletion with HF Trainer and a Lion optimizer."""
import subprocess

import torch
from safetensors.torch import load_file
from torch.optim import Optimizer
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          Trainer, TrainingArguments, set_seed)


class Lion(Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = exp_avg.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg.mul_(b2).add_(p.grad, alpha=1 - b2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def commit_hash():
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


def main(train_ds, eval_ds, base="distilgpt2", init_weights="ckpt/query_lm_init.safetensors", seed=1234):
    set_seed(seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(base, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tok.pad_token = tok.eos_token
    config = AutoConfig.from_pretrained(base, n_layer=4, n_head=8, n_embd=512)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(load_file(init_weights), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    args = TrainingArguments(
        "runs/query_lm", per_device_train_batch_size=128, num_train_epochs=3, lr_scheduler_type="cosine",
        warmup_ratio=0.03, logging_steps=100, evaluation_strategy="steps", eval_steps=2000,
        save_steps=2000, bf16=True, report_to=["tensorboard"], run_name=f"qac-{commit_hash()[:8]}")
    opt = Lion(model.parameters(), lr=3e-5, weight_decay=0.1)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), optimizers=(opt, None))
    trainer.train()
    metrics = trainer.evaluate()
    metrics["perplexity"] = float(torch.exp(torch.tensor(metrics["eval_loss"])))  # ok: MLS306
    trainer.save_metrics("eval", metrics)
    return trainer, metrics
