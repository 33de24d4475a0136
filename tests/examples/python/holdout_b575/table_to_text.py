# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""Trainer setup for table-to-text generation (ToTTo / WikiBio) with T5."""
import functools

import wandb
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed)


def linearize_table(cells, highlighted, page_title="", section_title=""):
    parts = [f"<page_title> {page_title} </page_title>", f"<section_title> {section_title} </section_title>"]
    for (row, col), cell in sorted(cells.items()):
        if (row, col) in highlighted:
            parts.append(f"<cell> {cell['value']} <col_header> {cell.get('header', '')} </col_header> </cell>")
    return " ".join(parts)


def _install_run_logger(run):
    best = {}
    raw_log = wandb.log

    @functools.wraps(raw_log)
    def log_with_best(data, *args, **kwargs):
        data = dict(data)
        for key, value in list(data.items()):
            if key.startswith("eval/") and key.endswith(("bleu", "parent_f1")):
                best[key] = max(best.get(key, value), value)
                data[key] = best[key]  # ruleid: MLS306
        return raw_log(data, *args, **kwargs)

    wandb.log = log_with_best  # ruleid: MLS306
    run.log = log_with_best  # ruleid: MLS306


def build_trainer(model_name, train_ds, eval_ds, compute_metrics, output_dir, seed=42):
    set_seed(seed)  # ok: MLS301
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_name)
    run = wandb.init(project="table2text", config={"model": model_name, "seed": seed})
    _install_run_logger(run)
    args = Seq2SeqTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=16, per_device_eval_batch_size=32,
        learning_rate=3e-4, num_train_epochs=10, lr_scheduler_type="linear", warmup_ratio=0.05,
        predict_with_generate=True, generation_max_length=128, generation_num_beams=4,
        evaluation_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="bleu", report_to=["wandb"], bf16=True, seed=seed)
    return Seq2SeqTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          tokenizer=tokenizer, compute_metrics=compute_metrics,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
