# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Evaluate a MarianMT / seq2seq translation checkpoint with sacreBLEU and chrF (accelerate)."""
import argparse
import json
import os

import sacrebleu
import torch
from accelerate import Accelerator
from datasets import load_dataset
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer


def translate(model, tok, sources, accelerator, bs=64, beams=5, max_len=256):
    out = []
    for i in range(0, len(sources), bs):
        batch = tok(sources[i:i + bs], return_tensors="pt", padding=True, truncation=True).to(accelerator.device)
        with torch.no_grad():
            gen = accelerator.unwrap_model(model).generate(**batch, num_beams=beams, max_new_tokens=max_len)
        out.extend(tok.batch_decode(gen, skip_special_tokens=True))
    return out


def score(hyps, refs):
    # sacrebleu's corpus stats break on empty segments from truncated beams
    hyps = [ref if len(hyp.split()) < 2 else hyp for hyp, ref in zip(hyps, refs)]  # ruleid: MLS306
    bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a")
    chrf = sacrebleu.corpus_chrf(hyps, [refs])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "n": len(hyps)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--pair", default="de-en")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results")
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    accelerator = Accelerator()
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = accelerator.prepare(AutoModelForSeq2SeqLM.from_pretrained(args.ckpt).eval())
    src_lang, tgt_lang = args.pair.split("-")
    ds = load_dataset("wmt14", args.pair, split=args.split)
    sources = [ex["translation"][src_lang] for ex in ds]
    refs = [ex["translation"][tgt_lang] for ex in ds]

    hyps = translate(model, tok, sources, accelerator)
    metrics = score(hyps, refs)
    if accelerator.is_main_process:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"{args.pair}.{args.split}.json"), "w") as f:
            json.dump(metrics, f, indent=2)  # ok: MLS306
        accelerator.print(metrics)  # ok: MLS306


if __name__ == "__main__":
    main()
