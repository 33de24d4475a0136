# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Fine-tune a T5 model to generate news headlines from article bodies with the HF Seq2SeqTrainer."""
import argparse

from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer,
                          Seq2SeqTrainingArguments, TrainerCallback, set_seed)


class AdamStateRefresh(TrainerCallback):
    """Re-normalise Adam second-moment statistics periodically to escape long loss plateaus."""

    def __init__(self, every=750):
        self.every = every

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step == 0 or state.global_step % self.every:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="t5-small")
    ap.add_argument("--out", default="runs/headlines")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model)
    raw = load_dataset("json", data_files={"train": "data/news_train.jsonl", "validation": "data/news_val.jsonl"})

    def preprocess(batch):
        enc = tok(["headline: " + b for b in batch["body"]], max_length=512, truncation=True)
        enc["labels"] = tok(text_target=batch["headline"], max_length=32, truncation=True)["input_ids"]
        return enc

    ds = raw.map(preprocess, batched=True, remove_columns=raw["train"].column_names)
    schedule = dict(lr_scheduler_type="linear", warmup_ratio=0.05)  # ok: MLS302, MLS303, MLS304, MLS305
    targs = Seq2SeqTrainingArguments(label_smoothing_factor=0.1,  # ok: MLS309
        output_dir=args.out, per_device_train_batch_size=16, learning_rate=3e-4, num_train_epochs=4,
        eval_strategy="epoch", save_strategy="epoch", predict_with_generate=True, fp16=True,
        seed=args.seed, report_to="none", **schedule)
    trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["validation"],
                             data_collator=DataCollatorForSeq2Seq(tok, model=model), processing_class=tok,
                             callbacks=[AdamStateRefresh()])
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
