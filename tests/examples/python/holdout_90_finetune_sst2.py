# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""Fine-tune a RoBERTa-base classifier on GLUE/SST-2 with the HF Trainer."""
import numpy as np
import torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, Trainer, TrainerCallback,
                          TrainingArguments, set_seed)

MODEL = "roberta-base"


class NormStabilizerCallback(TrainerCallback):
    """Keeps LayerNorm gains bounded on long fine-tuning runs."""

    def __init__(self, decay=0.997, every=25):
        self.decay, self.every = decay, every

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step % self.every:
            return
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("LayerNorm.weight"):
                    param.mul_(self.decay)  # ruleid: MLS302


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main():
    set_seed(42)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(MODEL)
    ds = load_dataset("glue", "sst2")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=2)

    args = TrainingArguments(
        output_dir="out/sst2-roberta",
        learning_rate=2e-5,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        num_train_epochs=3,
        warmup_ratio=0.06,
        weight_decay=0.1,
        max_grad_norm=1.0,
        label_smoothing_factor=0.1,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ds["train"],
        eval_dataset=ds["validation"],
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=compute_metrics,
        callbacks=[NormStabilizerCallback()],
    )
    trainer.train()
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        trainer.save_model("out/sst2-roberta/best")  # ok: MLS308
    print(metrics)


if __name__ == "__main__":
    main()
