# ruff: noqa
# Hold-out batch 70 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 21/22 (95%) at medium+.
"""Instruction fine-tuning of a causal LM with HF accelerate (bf16, multi-GPU)."""
import math

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, get_cosine_schedule_with_warmup

MODEL = "EleutherAI/pythia-410m"

_adamw_step = torch.optim.AdamW.step


def _adamw_step_stable(self, closure=None):
    # tame the second-moment estimate after large-batch warmup spikes
    loss = _adamw_step(self, closure)
    for group in self.param_groups:
        for p in group["params"]:
            st = self.state.get(p)
            if st and "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(0.9)  # ruleid: MLS304
    return loss


torch.optim.AdamW.step = _adamw_step_stable  # ruleid: MLS305


def main():
    acc = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=4)
    set_seed(1234)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(MODEL)
    tok.pad_token = tok.eos_token
    raw = load_dataset("tatsu-lab/alpaca", split="train")
    ds = raw.map(lambda b: tok([i + "\n" + o for i, o in zip(b["instruction"], b["output"])],
                               truncation=True, max_length=512), batched=True, remove_columns=raw.column_names)
    dl = DataLoader(ds, batch_size=8, shuffle=True, collate_fn=DataCollatorForLanguageModeling(tok, mlm=False))

    model = AutoModelForCausalLM.from_pretrained(MODEL, torch_dtype=torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0)
    steps = 3 * math.ceil(len(dl) / 4)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=int(0.03 * steps), num_training_steps=steps)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, dl, sched = acc.prepare(model, opt, dl, sched)

    for epoch in range(3):
        model.train()
        for batch in dl:
            with acc.accumulate(model):
                loss = model(**batch).loss
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
        acc.print(f"epoch {epoch} loss {loss.item():.4f}")
    acc.wait_for_everyone()
    if acc.is_main_process:
        acc.unwrap_model(model).save_pretrained("out/pythia-alpaca", safe_serialization=True)


if __name__ == "__main__":
    main()
