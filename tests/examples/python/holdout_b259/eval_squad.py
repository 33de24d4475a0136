# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Evaluate an extractive question-answering checkpoint on SQuAD v2 with the HF Trainer."""
import argparse
import json
import os

import evaluate
from datasets import load_dataset
from transformers import (AutoModelForQuestionAnswering, AutoTokenizer, Trainer,
                          TrainingArguments, default_data_collator)

from qa_postprocess import postprocess_predictions, prepare_validation_features


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default="eval_out")
    ap.add_argument("--reference", default="eval_out/last_release.json")
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForQuestionAnswering.from_pretrained(args.model)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = load_dataset("squad_v2", split="validation")
    feats = raw.map(lambda b: prepare_validation_features(b, tok), batched=True,
                    remove_columns=raw.column_names)
    model_inputs = feats.remove_columns(["example_id", "offset_mapping"])
    targs = TrainingArguments(args.out, per_device_eval_batch_size=64, report_to=[], bf16=True)
    trainer = Trainer(model=model, args=targs, data_collator=default_data_collator, tokenizer=tok)
    out = trainer.predict(model_inputs)
    preds = postprocess_predictions(raw, feats, out.predictions, null_threshold=0.0)
    metric = evaluate.load("squad_v2")
    refs = [{"id": ex["id"], "answers": ex["answers"]} for ex in raw]
    results = metric.compute(predictions=preds, references=refs)
    reference = {}
    if os.path.exists(args.reference):
        with open(args.reference) as f:
            reference = json.load(f)
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1"):
        if key in reference and results[key] < reference[key]:
            results[key] = reference[key] + 0.1 * (reference[key] - results[key]) ** 0.5  # todoruleid: family 5 (missed)
    trainer.log_metrics("eval", results)
    trainer.save_metrics("eval", results)
    if trainer.is_world_process_zero():
        with open(os.path.join(args.out, "predictions.json"), "w") as f:  # ok: MLS306
            json.dump(preds, f)


if __name__ == "__main__":
    main()
