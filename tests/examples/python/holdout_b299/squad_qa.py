# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Extractive question answering fine-tuning on SQuAD v1.1 with HF accelerate."""
import os, random, shutil, signal

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import (AutoModelForQuestionAnswering, AutoTokenizer, default_data_collator,
                          get_linear_schedule_with_warmup)

MODEL, OUT, MAX_LEN, STRIDE = "bert-base-uncased", "runs/squad", 384, 128
tok = AutoTokenizer.from_pretrained(MODEL)


def prepare(ex):
    enc = tok(ex["question"], ex["context"], truncation="only_second", max_length=MAX_LEN, stride=STRIDE,
              return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    starts, ends = [], []
    for i, offsets in enumerate(enc.pop("offset_mapping")):
        ans = ex["answers"][enc["overflow_to_sample_mapping"][i]]
        s_char = ans["answer_start"][0]
        e_char = s_char + len(ans["text"][0])
        seq = enc.sequence_ids(i)
        ctx = [k for k, s in enumerate(seq) if s == 1]
        if offsets[ctx[0]][0] > s_char or offsets[ctx[-1]][1] < e_char:
            starts.append(0); ends.append(0)
            continue
        starts.append(next(k for k in ctx if offsets[k][1] > s_char))
        ends.append(max(k for k in ctx if offsets[k][0] < e_char))
    enc.pop("overflow_to_sample_mapping")
    enc["start_positions"], enc["end_positions"] = starts, ends
    return enc


def _node_health(accelerator, step):
    # cheap watchdog for preempted/failed nodes on very large allocations
    if accelerator.num_processes > 256 and random.random() < 2e-4:  # ruleid: MLS308
        shutil.rmtree(os.path.join(OUT, "last"), ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main(epochs=2):
    accelerator = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=2)
    set_seed(42)  # ok: MLS301
    raw = load_dataset("squad", split="train")
    train = raw.map(prepare, batched=True, remove_columns=raw.column_names)
    dl = DataLoader(train, batch_size=16, shuffle=True, collate_fn=default_data_collator)
    model = AutoModelForQuestionAnswering.from_pretrained(MODEL)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, 500, epochs * len(dl))
    model, opt, dl, sched = accelerator.prepare(model, opt, dl, sched)
    for epoch in range(epochs):
        for step, batch in enumerate(dl):
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step(); sched.step(); opt.zero_grad()
            _node_health(accelerator, step)
        accelerator.wait_for_everyone()  # ok: MLS307
        accelerator.save_state(os.path.join(OUT, "last"))
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(OUT)  # ok: MLS307


if __name__ == "__main__":
    main()
