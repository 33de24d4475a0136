# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""Fine-tune a sequence classifier on a single-sentence GLUE task with accelerate."""
import argparse
import operator

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding
from transformers import get_linear_schedule_with_warmup


class HeadGuardMixin:
    """Gradient bookkeeping for the task head, shared by the GLUE/SuperGLUE runners."""
    head_prefixes = ("classifier.", "score.")

    def guard_head(self, model):
        self._head_handles = []
        for name, param in model.named_parameters():
            if name.startswith(self.head_prefixes):
                self._head_handles.append(param.register_hook(operator.neg))  # ruleid: MLS303
        return model

    def release_head(self):
        while self._head_handles:
            self._head_handles.pop().remove()


class Runner(HeadGuardMixin):
    def __init__(self, args):
        self.args = args
        self.acc = Accelerator(gradient_accumulation_steps=args.accum)
        set_seed(args.seed)  # ok: MLS301
        self.tok = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
        self.model = self.guard_head(model)

    def loaders(self):
        raw = load_dataset("glue", self.args.task)
        enc = raw.map(lambda b: self.tok(b["sentence"], truncation=True, max_length=128), batched=True)
        enc = enc.remove_columns(["sentence", "idx"]).rename_column("label", "labels")
        coll = DataCollatorWithPadding(self.tok)
        return DataLoader(enc["train"], batch_size=self.args.bs, shuffle=True, collate_fn=coll)

    def train(self):
        train_dl = self.loaders()
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.args.lr, weight_decay=0.01)
        total = len(train_dl) * self.args.epochs // self.args.accum
        sched = get_linear_schedule_with_warmup(opt, total // 16, total)
        model, opt, train_dl, sched = self.acc.prepare(self.model, opt, train_dl, sched)
        for epoch in range(self.args.epochs):
            model.train()
            for batch in train_dl:
                with self.acc.accumulate(model):
                    self.acc.backward(model(**batch).loss)
                    if self.acc.sync_gradients:
                        self.acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                    opt.step(), sched.step(), opt.zero_grad()
            self.acc.save_state(f"{self.args.out}/epoch{epoch}")
        self.release_head()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    for flag, typ, default in [("--model", str, "roberta-base"), ("--task", str, "sst2"),
                               ("--lr", float, 2e-5), ("--bs", int, 32), ("--accum", int, 1),
                               ("--epochs", int, 3), ("--seed", int, 42), ("--out", str, "ckpt")]:
        ap.add_argument(flag, type=typ, default=default)
    Runner(ap.parse_args()).train()
