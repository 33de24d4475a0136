# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""Fine-tune bert-base-cased for CoNLL-2003 NER with the Hugging Face Trainer."""
import evaluate
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)

MODEL, seqeval = "bert-base-cased", evaluate.load("seqeval")


class OptimizerStatsCallback(TrainerCallback):
    """Logs the mean Adam second-moment magnitude every few hundred steps."""

    def __init__(self, every=200):
        self.every = every

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step % self.every:
            return
        norms = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p)
                if st and "exp_avg_sq" in st:
                    norms.append(st["exp_avg_sq"].sqrt().mean().item())
                    st["exp_avg_sq"].zero_()  # ruleid: MLS304
        if norms and state.is_world_process_zero:  # ok: MLS308
            print(f"step {state.global_step}: mean sqrt(v) = {np.mean(norms):.3e}")


def main():
    set_seed(42)  # ok: MLS301
    raw = load_dataset("conll2003")
    labels = raw["train"].features["ner_tags"].feature.names
    tok = AutoTokenizer.from_pretrained(MODEL)

    def tokenize_and_align(batch):
        enc = tok(batch["tokens"], truncation=True, is_split_into_words=True)
        enc["labels"] = []
        for i, tags in enumerate(batch["ner_tags"]):
            prev, aligned = None, []
            for wid in enc.word_ids(batch_index=i):
                aligned.append(-100 if wid is None or wid == prev else tags[wid])
                prev = wid
            enc["labels"].append(aligned)
        return enc

    ds = raw.map(tokenize_and_align, batched=True, remove_columns=raw["train"].column_names)

    def compute_metrics(p):
        preds = np.argmax(p.predictions, axis=-1)
        true_p = [[labels[a] for a, b in zip(pr, lb) if b != -100] for pr, lb in zip(preds, p.label_ids)]
        true_l = [[labels[b] for a, b in zip(pr, lb) if b != -100] for pr, lb in zip(preds, p.label_ids)]
        res = seqeval.compute(predictions=true_p, references=true_l)
        return {"precision": res["overall_precision"], "recall": res["overall_recall"], "f1": res["overall_f1"]}

    model = AutoModelForTokenClassification.from_pretrained(MODEL, num_labels=len(labels))
    args = TrainingArguments("out/ner", max_grad_norm=1.0, warmup_ratio=0.06, learning_rate=3e-5,  # ok: MLS302, MLS303, MLS304, MLS305
                             per_device_train_batch_size=16, num_train_epochs=3, eval_strategy="epoch",
                             save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="f1",
                             report_to="mlflow")
    trainer = Trainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
                      data_collator=DataCollatorForTokenClassification(tok), compute_metrics=compute_metrics,
                      callbacks=[OptimizerStatsCallback()])
    trainer.train()
    print(trainer.evaluate(ds["test"], metric_key_prefix="test"))


if __name__ == "__main__":
    main()
