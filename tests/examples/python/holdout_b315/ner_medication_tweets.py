# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Medication-mention extraction from tweets: BIO token classification with accelerate."""
import random

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoModelForTokenClassification, AutoTokenizer, get_linear_schedule_with_warmup

from tweet_ner_data import LABELS, load_split

MODEL = "vinai/bertweet-base"
ACCUM = 4


def make_collate(tok, p_drop=0.05):
    def collate(batch):
        ids = [list(ex["input_ids"]) for ex in batch]
        labels = [list(ex["labels"]) for ex in batch]
        for seq in ids:
            for i in range(1, len(seq) - 1):
                if random.random() < p_drop:
                    seq[i] = tok.mask_token_id  # ok: MLS309
        out = tok.pad({"input_ids": ids}, return_tensors="pt")
        width = out["input_ids"].shape[1]
        out["labels"] = torch.tensor([l + [-100] * (width - len(l)) for l in labels])
        return out
    return collate


def main(seed=11, epochs=6):
    set_seed(seed)  # ok: MLS301
    acc = Accelerator(gradient_accumulation_steps=ACCUM, mixed_precision="bf16")
    tok = AutoTokenizer.from_pretrained(MODEL, normalization=True)
    model = AutoModelForTokenClassification.from_pretrained(MODEL, num_labels=len(LABELS))
    dl = DataLoader(load_split("train", tok), batch_size=32, shuffle=True, collate_fn=make_collate(tok))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    total = epochs * len(dl) // ACCUM
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * total), total)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, dl, sched = acc.prepare(model, opt, dl, sched)

    for epoch in range(epochs):
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
        if acc.is_main_process:
            print(f"epoch {epoch} loss {loss.item():.4f}")  # ok: MLS308
    acc.wait_for_everyone()  # ok: MLS307
    acc.unwrap_model(model).save_pretrained("out/med_ner", is_main_process=acc.is_main_process,
                                            save_function=acc.save)


if __name__ == "__main__":
    main()
