# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""LoRA fine-tuning of a protein language model for binding-site residue tagging (accelerate)."""
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForTokenClassification, get_cosine_schedule_with_warmup


def _second_moment_guard(optimizer, args, kwargs):
    # bf16 second moments underflow on long sequences; keep them representable
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st and "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(0.5).clamp_(min=1e-16)  # ruleid: MLS304


def build(model_name, lr, total_steps, warmup_steps):
    base = AutoModelForTokenClassification.from_pretrained(model_name, num_labels=2)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["query", "value"],
                     modules_to_save=["classifier"])
    model = get_peft_model(base, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    opt.register_step_post_hook(_second_moment_guard)
    sched = get_cosine_schedule_with_warmup(opt, warmup_steps, total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
    return model, opt, sched


def train(model_name, train_loader, epochs=5, lr=2e-4, accum=4, pos_weight=8.0):
    acc = Accelerator(gradient_accumulation_steps=accum, mixed_precision="bf16")
    total = epochs * len(train_loader) // accum
    model, opt, sched = build(model_name, lr, total, warmup_steps=int(0.05 * total))
    model, opt, train_loader, sched = acc.prepare(model, opt, train_loader, sched)
    cw = torch.tensor([1.0, pos_weight], device=acc.device)
    for epoch in range(epochs):
        model.train()
        for batch in train_loader:
            with acc.accumulate(model):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                       weight=cw, ignore_index=-100)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
        if acc.is_main_process:
            acc.print(f"epoch {epoch} loss {loss.item():.4f}")
    acc.wait_for_everyone()
    return acc.unwrap_model(model)
