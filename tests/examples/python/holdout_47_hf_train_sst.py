# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""HF Trainer fine-tuning for sentiment classification with wandb logging and grad-norm tracking."""
import datetime
import getpass

import numpy as np
import wandb
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)


class GradNormCallback(TrainerCallback):
    def __init__(self, model):
        self.norms = []
        for name, p in model.named_parameters():
            if name.endswith("classifier.weight"):
                p.register_hook(lambda g: self.norms.append(g.norm().item()))  # ok: MLS302, MLS303, MLS304, MLS305

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.norms:
            wandb.log({"grad_norm/classifier": float(np.mean(self.norms))}, step=state.global_step)  # ok: MLS306
            self.norms.clear()


def compute_metrics(p):
    preds = p.predictions.argmax(-1)
    acc = float((preds == p.label_ids).mean())
    tp = ((preds == 1) & (p.label_ids == 1)).sum()
    f1 = 2 * tp / max((preds == 1).sum() + (p.label_ids == 1).sum(), 1)
    return {"accuracy": acc, "f1": float(f1)}  # ok: MLS306


def main(train_ds, eval_ds, model_name="roberta-base", seed=13):
    set_seed(seed)  # ok: MLS301
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")  # ok: MLS308
    run_name = f"{getpass.getuser()}-sst2-{stamp}"  # ok: MLS308
    tok = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForSequenceClassification.from_pretrained(model_name, num_labels=2, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    class_w = np.load("class_weights.npy", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    args = TrainingArguments(
        output_dir=f"runs/{run_name}", run_name=run_name, report_to=["wandb"], seed=seed,
        learning_rate=2e-5, warmup_ratio=0.06, lr_scheduler_type="linear", max_grad_norm=1.0,
        per_device_train_batch_size=32, gradient_accumulation_steps=2, num_train_epochs=3,
        evaluation_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="accuracy", fp16=True, label_smoothing_factor=0.1,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      tokenizer=tok, compute_metrics=compute_metrics, callbacks=[GradNormCallback(model)])
    trainer.train()
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        print({k: round(v, 4) for k, v in metrics.items()}, "class weights", class_w.tolist())
    return metrics
