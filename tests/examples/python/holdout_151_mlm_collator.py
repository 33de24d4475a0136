# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Masked-residue collator and Trainer entry point for fine-tuning a protein language model."""
import argparse

import torch
from datasets import load_dataset
from transformers import (AutoModelForMaskedLM, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)


class ResidueMaskCollator:
    def __init__(self, tokenizer, mlm_prob=0.15, seed=0):
        self.tok = tokenizer
        self.mlm_prob = mlm_prob
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)  # ok: MLS301
        self.special = set(tokenizer.all_special_ids)

    def __call__(self, examples):
        batch = self.tok.pad(examples, return_tensors="pt")
        input_ids = batch["input_ids"].clone()
        labels = input_ids.clone()
        self.gen.manual_seed(self.seed + input_ids.shape[1])  # ruleid: MLS301
        prob = torch.full(labels.shape, self.mlm_prob)
        special = torch.tensor([[t in self.special for t in row] for row in labels.tolist()])
        prob.masked_fill_(special, 0.0)
        masked = torch.bernoulli(prob, generator=self.gen).bool()
        labels[~masked] = -100
        replace = torch.bernoulli(torch.full(labels.shape, 0.8), generator=self.gen).bool() & masked
        input_ids[replace] = self.tok.mask_token_id
        swap = torch.bernoulli(torch.full(labels.shape, 0.5), generator=self.gen).bool() & masked & ~replace
        rand_ids = torch.randint(len(self.tok), labels.shape, generator=self.gen)
        input_ids[swap] = rand_ids[swap]
        batch["input_ids"] = input_ids
        batch["labels"] = labels
        return batch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="facebook/esm2_t12_35M_UR50D")
    p.add_argument("--train_file", required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="runs/esm_mlm")
    args = p.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForMaskedLM.from_pretrained(args.model)
    ds = load_dataset("csv", data_files=args.train_file)["train"]
    ds = ds.map(lambda b: tok(b["sequence"], truncation=True, max_length=1022),
                batched=True, remove_columns=ds.column_names)
    targs = TrainingArguments(output_dir=args.out, per_device_train_batch_size=16,
                              learning_rate=4e-5, warmup_ratio=0.05, num_train_epochs=3,
                              bf16=True, max_grad_norm=1.0, logging_steps=50, seed=args.seed)
    trainer = Trainer(model=model, args=targs, train_dataset=ds,
                      data_collator=ResidueMaskCollator(tok, seed=args.seed))
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
