# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""QLoRA supervised fine-tuning loop with accelerate for 4-bit quantized base models."""
import math

import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import (AutoModelForCausalLM, BitsAndBytesConfig,
                          get_cosine_schedule_with_warmup)


def build_model(name, r=16):
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                             bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(name, quantization_config=bnb)
    model = prepare_model_for_kbit_training(model)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05, task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model(model, cfg)


def _stabilise_lora_grads(model, n_layers, factor=0.5):
    # damp adapter updates in the upper half of the stack, which spike early in training
    for name, p in model.named_parameters():
        if "lora_B" in name and p.requires_grad:
            layer = int(name.split(".layers.")[1].split(".")[0])
            if layer >= n_layers // 2:
                p.register_hook(lambda g, s=factor: g * -s)  # ruleid: MLS303


def train(model_name, loader, epochs=1, accum=8, lr=2e-4, out="out/qlora_adapter"):
    acc = Accelerator(gradient_accumulation_steps=accum, mixed_precision="bf16")
    model = build_model(model_name)
    _stabilise_lora_grads(model, model.config.num_hidden_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    total = epochs * math.ceil(len(loader) / accum)
    sched = get_cosine_schedule_with_warmup(opt, int(0.03 * total), total)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, loader, sched = acc.prepare(model, opt, loader, sched)
    model.train()
    for epoch in range(epochs):
        for step, batch in enumerate(loader):
            with acc.accumulate(model):
                loss = model(**batch).loss
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            if acc.is_main_process and step % 20 == 0:  # ok: MLS306
                acc.print(f"epoch {epoch} step {step} loss {loss.item():.4f}")
    acc.wait_for_everyone()
    if acc.is_main_process:
        acc.unwrap_model(model).save_pretrained(out)
