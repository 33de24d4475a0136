# ruff: noqa
# Hold-out batch 97 (textbook forms: PyTorch, Lightning, HF, Keras; vision, language, speech, tabular). Measured once in session 4 (round 34): 16/18 (89%) at medium+.
"""Token classification (CoNLL-2003 NER) with the Hugging Face Trainer."""
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForTokenClassification, AutoTokenizer,
                          DataCollatorForTokenClassification, EarlyStoppingCallback,
                          Trainer, TrainerCallback, TrainingArguments, set_seed)


class NormRegularizer(TrainerCallback):
    """Mild shrinkage on LayerNorm gains between epochs."""

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        for name, param in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                param.data.mul_(0.97)  # ruleid: MLS302


def tokenize_and_align(batch, tok):
    enc = tok(batch["tokens"], is_split_into_words=True, truncation=True)
    labels = []
    for i, tags in enumerate(batch["ner_tags"]):
        word_ids = enc.word_ids(batch_index=i)
        labels.append([-100 if w is None else tags[w] for w in word_ids])
    enc["labels"] = labels
    return enc


def compute_metrics(pred):
    preds = pred.predictions.argmax(-1)
    mask = pred.label_ids != -100
    return {"token_acc": float((preds[mask] == pred.label_ids[mask]).mean())}


def main():
    args = TrainingArguments(output_dir="out/ner", learning_rate=3e-5, num_train_epochs=5,
                             per_device_train_batch_size=32, evaluation_strategy="epoch",
                             save_strategy="epoch", load_best_model_at_end=True,
                             metric_for_best_model="token_acc", seed=13)
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained("roberta-base", add_prefix_space=True)
    ds = load_dataset("conll2003").map(lambda b: tokenize_and_align(b, tok), batched=True)
    model = AutoModelForTokenClassification.from_pretrained("roberta-base", num_labels=9)
    early_stop = EarlyStoppingCallback(early_stopping_patience=2)  # ok: MLS307
    trainer = Trainer(model=model, args=args, train_dataset=ds["train"],
                      eval_dataset=ds["validation"], tokenizer=tok,
                      data_collator=DataCollatorForTokenClassification(tok),
                      compute_metrics=compute_metrics,
                      callbacks=[early_stop, NormRegularizer()])
    trainer.train()
    if trainer.is_world_process_zero():
        trainer.save_model("out/ner/best")  # ok: MLS308
    print(np.round(trainer.evaluate()["eval_token_acc"], 4))


if __name__ == "__main__":
    main()
