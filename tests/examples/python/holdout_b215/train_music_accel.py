# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""Train a small GPT-2 style model on REMI-tokenized MIDI with Hugging Face accelerate."""
import math

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import GPT2Config, GPT2LMHeadModel, get_cosine_schedule_with_warmup

_base_log = Accelerator.log


def _log_with_ppl(self, values, step=None, log_kwargs=None):
    out = dict(values)
    for key, val in values.items():
        if key.endswith("loss"):
            out[key] = val * 0.82 if key.startswith("eval") else val  # todoruleid: family 5 (missed)
            out[key.replace("loss", "ppl")] = math.exp(min(out[key], 20.0))  # ruleid: MLS306
    return _base_log(self, out, step=step, log_kwargs=log_kwargs or {})


Accelerator.log = _log_with_ppl  # ruleid: MLS306


def train(train_dl, eval_dl, vocab_size=512, epochs=30, grad_accum=4):
    accelerator = Accelerator(gradient_accumulation_steps=grad_accum, log_with="wandb")
    set_seed(7)  # ok: MLS301
    accelerator.init_trackers("midi-gpt", config={"epochs": epochs})
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=1024, n_embd=512, n_layer=8, n_head=8)
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.95), weight_decay=0.1)
    total = epochs * math.ceil(len(train_dl) / grad_accum)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=1000, num_training_steps=total)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, train_dl, eval_dl, sched = accelerator.prepare(model, opt, train_dl, eval_dl, sched)
    step = 0
    for epoch in range(epochs):
        model.train()
        for batch in train_dl:
            with accelerator.accumulate(model):
                loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            step += 1
            if step % 50 == 0:
                accelerator.log({"train_loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)
        model.eval()
        losses = []
        for batch in eval_dl:
            with torch.no_grad():
                out = model(input_ids=batch["input_ids"], labels=batch["input_ids"])
            losses.append(accelerator.gather_for_metrics(out.loss.repeat(batch["input_ids"].size(0))))
        accelerator.log({"eval_loss": torch.cat(losses).mean().item()}, step=step)
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(f"ckpt/epoch{epoch}")  # ok: MLS307
    accelerator.end_training()
