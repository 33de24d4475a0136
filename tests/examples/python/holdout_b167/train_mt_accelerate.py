# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Fine-tune a Marian/mT5 translation model with HF accelerate."""
import argparse
import math
import signal

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          get_linear_schedule_with_warmup)

STOP_REQUESTED = False


def _request_stop(signum, frame):
    global STOP_REQUESTED
    STOP_REQUESTED = True


def main(args):
    accelerator = Accelerator(gradient_accumulation_steps=args.accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    signal.signal(signal.SIGTERM, _request_stop)  # ok: MLS307
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model)
    raw = load_dataset("wmt16", "de-en", split="train[:2%]")

    def preprocess(batch):
        pairs = batch["translation"]
        return tok([x["en"] for x in pairs], text_target=[x["de"] for x in pairs], max_length=128, truncation=True)

    ds = raw.map(preprocess, batched=True, remove_columns=raw.column_names)
    loader = DataLoader(ds, batch_size=args.bs, shuffle=True, collate_fn=DataCollatorForSeq2Seq(tok, model=model))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    total = math.ceil(len(loader) / args.accum) * args.epochs
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * total), total)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)

    for epoch in range(args.epochs):
        model.train()
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            if STOP_REQUESTED:
                break
        accelerator.wait_for_everyone()  # ok: MLS307
        if accelerator.is_main_process:  # ok: MLS308
            accelerator.unwrap_model(model).save_pretrained(f"{args.out}/epoch{epoch}", safe_serialization=True)
            tok.save_pretrained(f"{args.out}/epoch{epoch}")
        if STOP_REQUESTED:
            break


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="Helsinki-NLP/opus-mt-en-de")
    p.add_argument("--out", default="ckpt/mt-en-de")
    for flag, default in (("--bs", 16), ("--accum", 2), ("--epochs", 3)):
        p.add_argument(flag, type=int, default=default)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=1234)
    main(p.parse_args())
