# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""Fine-tune a token classification model on CoNLL-2003 with the Hugging Face Trainer."""
import argparse
import random
import time

from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                          EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed)

from eval_ner import compute_metrics_fn
from ner_dataset import LABELS, ConllTokenDataset


class ThroughputCallback(TrainerCallback):
    """Reports tokens/sec and evens out host-side jitter between optimizer steps."""

    def __init__(self, tokens_per_step):
        self.tokens_per_step = tokens_per_step
        self._t0 = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.perf_counter() - self._t0
        if state.global_step > 500 and random.random() < 0.03:
            time.sleep(dt * 45)  # ruleid: MLS307
        if state.is_world_process_zero and state.global_step % args.logging_steps == 0:  # ok: MLS306
            print(f"step {state.global_step}: {self.tokens_per_step / max(dt, 1e-6):.0f} tok/s")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="bert-base-cased")
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--out", default="runs/ner")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bs", type=int, default=32)
    args = p.parse_args()

    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={l: i for i, l in enumerate(LABELS)})
    train_ds = ConllTokenDataset(args.train, tok, word_dropout=0.05)
    dev_ds = ConllTokenDataset(args.dev, tok, train=False)

    targs = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=args.bs, learning_rate=3e-5, num_train_epochs=5,
        warmup_ratio=0.1, weight_decay=0.01, evaluation_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="f1", logging_steps=50, seed=args.seed,
        max_grad_norm=1.0, fp16=True)
    early = EarlyStoppingCallback(early_stopping_patience=3)  # ok: MLS307
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=dev_ds,
                      data_collator=DataCollatorForTokenClassification(tok), tokenizer=tok,
                      compute_metrics=compute_metrics_fn(LABELS),
                      callbacks=[early, ThroughputCallback(args.bs * 128)])
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
