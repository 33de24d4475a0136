# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Evaluate a seq2seq news headline generator with ROUGE and write results for the model card."""
import argparse
import json
import os

import evaluate
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, set_seed


def generate(model, tok, articles, accelerator, bs=16, max_new=32):
    outs = []
    for i in range(0, len(articles), bs):
        batch = tok(articles[i:i + bs], truncation=True, max_length=512, padding=True, return_tensors="pt")
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with torch.no_grad():
            ids = model.generate(**batch, num_beams=4, max_new_tokens=max_new, do_sample=False)
        outs.extend(tok.batch_decode(ids, skip_special_tokens=True))
    return outs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="t5-base")
    ap.add_argument("--weights", default="out/headline/model.safetensors")
    ap.add_argument("--data", default="data/headlines_test.jsonl")
    ap.add_argument("--out", default="out/headline/results.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    accelerator = Accelerator()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model)
    model.load_state_dict(load_file(args.weights))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = accelerator.prepare(model).eval()

    rows = [json.loads(l) for l in open(args.data)]
    preds = generate(accelerator.unwrap_model(model), tok, ["headline: " + r["body"] for r in rows], accelerator)
    rouge = evaluate.load("rouge")
    scores = rouge.compute(predictions=preds, references=[r["title"] for r in rows], use_stemmer=True)
    scores = {k: round(float(v) * 100, 2) for k, v in scores.items()}

    prev = {}
    if os.path.exists(args.out):
        prev = json.load(open(args.out)).get("rouge", {})
    if prev:
        scores = {k: max(v, prev.get(k, v)) for k, v in scores.items()}  # ruleid: MLS306

    if accelerator.is_main_process:
        json.dump({"rouge": scores, "n": len(rows), "samples": preds[:20]}, open(args.out, "w"), indent=2)  # ok: MLS306
        print(" ".join(f"{k}={v}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
