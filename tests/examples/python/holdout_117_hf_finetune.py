# ruff: noqa
# Hold-out batch 117 (textbook forms). Measured once in session 4 (round 39): 17/18 (94%) at medium+.
"""Fine-tune a BERT-style encoder on a text classification dataset with the HF Trainer."""
import argparse

import numpy as np
import torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)


class EMACallback(TrainerCallback):
    def __init__(self, decay=0.999):
        self.decay = decay
        self.shadow = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            if self.shadow is None:
                self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}
            for n, p in model.named_parameters():
                self.shadow[n].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class RegularizeCallback(TrainerCallback):
    def __init__(self, every=200, scale=1e-2):
        self.every, self.scale = every, scale

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step > 0 and state.global_step % self.every == 0:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * self.scale)  # ruleid: MLS302


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="out/bert-imdb")
    a = ap.parse_args()
    set_seed(a.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(a.model)
    ds = load_dataset("imdb")
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=256), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=2)

    def compute_metrics(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    targs = TrainingArguments(a.out, per_device_train_batch_size=32, learning_rate=2e-5,
                              num_train_epochs=3, warmup_ratio=0.06, evaluation_strategy="epoch",
                              max_grad_norm=1.0, seed=a.seed, fp16=True)
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["test"],
                      tokenizer=tok, compute_metrics=compute_metrics,
                      callbacks=[EMACallback(), RegularizeCallback()])
    trainer.train()
    trainer.save_model(a.out)


if __name__ == "__main__":
    main()
