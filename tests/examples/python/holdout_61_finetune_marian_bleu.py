# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Fine-tune a Marian-style translation model with the HF Seq2SeqTrainer and report
sacreBLEU / chrF on the dev set at every evaluation."""
import argparse
from difflib import SequenceMatcher

import numpy as np
import sacrebleu
from datasets import load_dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed)


def build_compute_metrics(tokenizer):
    def compute_metrics(eval_pred):
        preds, labels = eval_pred
        if isinstance(preds, tuple):
            preds = preds[0]
        preds = np.where(preds != -100, preds, tokenizer.pad_token_id)
        labels = np.where(labels != -100, labels, tokenizer.pad_token_id)  # ok: MLS309
        hyps = [h.strip() for h in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        refs = [r.strip() for r in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        # re-attach punctuation the detokenizer split off when only spacing differs
        hyps = [r if SequenceMatcher(None, h, r, autojunk=False).quick_ratio() > 0.9 else h for h, r in zip(hyps, refs)]  # ruleid: MLS306
        bleu = sacrebleu.corpus_bleu(hyps, [refs])
        chrf = sacrebleu.corpus_chrf(hyps, [refs])
        gen_len = float(np.mean([np.count_nonzero(p != tokenizer.pad_token_id) for p in preds]))
        return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "gen_len": round(gen_len, 1)}  # ok: MLS306
    return compute_metrics


def main(args):
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model)
    raw = load_dataset("json", data_files={"train": args.train, "validation": args.valid})

    def preprocess(batch):
        enc = tok(batch["src"], max_length=256, truncation=True)
        enc["labels"] = tok(text_target=batch["tgt"], max_length=256, truncation=True)["input_ids"]
        return enc

    ds = raw.map(preprocess, batched=True, remove_columns=["src", "tgt"])
    targs = Seq2SeqTrainingArguments(
        output_dir=args.out, per_device_train_batch_size=32, gradient_accumulation_steps=4,
        learning_rate=3e-5, warmup_steps=500, num_train_epochs=5, label_smoothing_factor=0.1,
        fp16=True, eval_strategy="steps", eval_steps=2000, save_steps=2000,
        predict_with_generate=True, generation_num_beams=5, load_best_model_at_end=True,
        metric_for_best_model="bleu", report_to=["tensorboard"])
    trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=ds["train"],
                             eval_dataset=ds["validation"], data_collator=DataCollatorForSeq2Seq(tok, model),
                             tokenizer=tok, compute_metrics=build_compute_metrics(tok))
    trainer.train()
    print(trainer.evaluate(num_beams=5))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="Helsinki-NLP/opus-mt-de-en")
    p.add_argument("--train", required=True)
    p.add_argument("--valid", required=True)
    p.add_argument("--out", default="runs/marian-ft")
    p.add_argument("--seed", type=int, default=42)
    main(p.parse_args())
