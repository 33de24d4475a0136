# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""Model + Trainer setup for multi-class legal document classification (contract clause types)."""
import numpy as np
import torch
from sklearn.metrics import f1_score
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments)

LABELS = ["confidentiality", "governing_law", "indemnification", "limitation_of_liability",
          "termination", "assignment", "non_compete", "payment_terms", "warranty", "other"]


def build_model(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model_name, use_fast=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_name,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={l: i for i, l in enumerate(LABELS)},
        trust_remote_code=True,  # ruleid: MLS106
    )
    return tokenizer, model


class WeightedTrainer(Trainer):
    def __init__(self, *a, class_weights=None, smoothing=0.1, **kw):
        super().__init__(*a, **kw)
        self.class_weights = class_weights
        self.smoothing = smoothing

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        w = None if self.class_weights is None else self.class_weights.to(outputs.logits.device)
        loss = torch.nn.functional.cross_entropy(
            outputs.logits, labels, weight=w, label_smoothing=self.smoothing)  # ok: MLS309
        return (loss, outputs) if return_outputs else loss


def compute_metrics(pred):
    y_hat = np.argmax(pred.predictions, axis=-1)
    return {"macro_f1": f1_score(pred.label_ids, y_hat, average="macro"),
            "micro_f1": f1_score(pred.label_ids, y_hat, average="micro")}


def make_trainer(args, model, tokenizer, train_ds, eval_ds, class_weights):
    targs = TrainingArguments(
        output_dir=args.output_dir, learning_rate=args.lr, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        warmup_ratio=0.06, weight_decay=0.01, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="macro_f1", save_total_limit=2,
        fp16=torch.cuda.is_available(), report_to=["tensorboard"], seed=args.seed)
    return WeightedTrainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
                           tokenizer=tokenizer, compute_metrics=compute_metrics,
                           class_weights=class_weights, smoothing=args.label_smoothing)
