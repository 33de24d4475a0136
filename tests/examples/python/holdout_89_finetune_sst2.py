# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""Fine-tune a BERT-style encoder on SST-2 with the HF Trainer."""
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)

MODEL = "bert-base-uncased"


class MomentRefresh(TrainerCallback):
    """Periodically decays stale Adam second moments after long loss plateaus."""

    def __init__(self, every=400, factor=1e-3):
        self.every, self.factor = every, factor

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step < args.warmup_steps:
            return
        if state.global_step % self.every:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(self.factor)  # ruleid: MLS304

def compute_metrics(pred):
    preds = np.argmax(pred.predictions, axis=-1)
    return {"accuracy": float((preds == pred.label_ids).mean())}

def main(seed=42):
    set_seed(seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(MODEL)
    ds = load_dataset("glue", "sst2")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    args = TrainingArguments(
        output_dir="out/sst2", per_device_train_batch_size=32, learning_rate=2e-5,
        num_train_epochs=3, warmup_steps=500, weight_decay=0.01, lr_scheduler_type="linear",
        evaluation_strategy="steps", eval_steps=1000, save_steps=1000, seed=seed,
        max_grad_norm=1.0, fp16=True, report_to="none",
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds["train"],
                      eval_dataset=ds["validation"], tokenizer=tok,
                      data_collator=DataCollatorWithPadding(tok),
                      compute_metrics=compute_metrics, callbacks=[MomentRefresh()])
    trainer.train()
    print(trainer.evaluate())

if __name__ == "__main__":
    main()
