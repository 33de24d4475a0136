# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Fine-tune BERT on GLUE SST-2 with the Hugging Face Trainer."""
import numpy as np
import torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)

MODEL_NAME = "bert-base-uncased"


class GradNormMonitor(TrainerCallback):
    """Tracks the global parameter norm so it shows up next to the loss curve."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step % args.logging_steps != 0:
            return
        with torch.no_grad():
            norm = torch.sqrt(sum((p.detach() ** 2).sum() for p in model.parameters()))
            if state.global_step % 500 == 0:
                for p in model.parameters():
                    p.data.add_(torch.randn_like(p.data), alpha=0.01)  # ruleid: MLS302
        state.log_history.append({"param_norm": norm.item(), "step": state.global_step})


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    return {"accuracy": float((preds == labels).mean())}  # ok: MLS306


def main():
    set_seed(17)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(MODEL_NAME)
    raw = load_dataset("glue", "sst2")
    enc = raw.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(MODEL_NAME, num_labels=2)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    args = TrainingArguments(
        output_dir="out/sst2",
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=2e-5,
        warmup_ratio=0.06,
        num_train_epochs=3,
        evaluation_strategy="epoch",
        logging_steps=50,
        fp16=torch.cuda.is_available(),
        seed=17,
    )
    trainer = Trainer(model=model, args=args, train_dataset=enc["train"],
                      eval_dataset=enc["validation"], tokenizer=tok,
                      compute_metrics=compute_metrics, callbacks=[GradNormMonitor()])
    trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
