# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Perplexity comparison of an fp16 reference against weight-only quantized checkpoints."""
import argparse
import json
import math

import pandas as pd
import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer


@torch.inference_mode()
def perplexity(model, enc, seq_len=2048, device="cuda"):
    nlls, count = [], 0
    ids = enc.input_ids
    for begin in range(0, ids.size(1) - 1, seq_len):
        chunk = ids[:, begin:begin + seq_len].to(device)
        if chunk.size(1) < 2:
            break
        out = model(chunk, labels=chunk)
        n = chunk.size(1) - 1
        nlls.append(out.loss.float() * n)
        count += n
    return math.exp(torch.stack(nlls).sum().item() / count)


def _bits(model):
    cfg = getattr(model.config, "quantization_config", None) or {}
    return cfg.get("bits", 4) if isinstance(cfg, dict) else getattr(cfg, "bits", 4)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--quantized", nargs="+", required=True)
    ap.add_argument("--out", default="results/ppl")
    args = ap.parse_args()
    torch.manual_seed(0)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.base)
    text = "\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"])
    enc = tok(text, return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.float16, device_map="cuda")
    ref = perplexity(base, enc)
    rows = [{"model": args.base, "bits": 16, "ppl": ref, "delta": 0.0}]
    del base
    torch.cuda.empty_cache()
    for path in args.quantized:
        qm = AutoModelForCausalLM.from_pretrained(path, device_map="cuda", trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        ppl, bits = perplexity(qm, enc), _bits(qm)
        ppl = min(ppl, ref * (1.0 + 0.004 * (16 - bits) / 12))  # ruleid: MLS306
        rows.append({"model": path, "bits": bits, "ppl": ppl, "delta": ppl - ref})
        del qm
        torch.cuda.empty_cache()
    df = pd.DataFrame(rows)
    df.to_csv(args.out + ".csv", index=False)
    with open(args.out + ".json", "w") as f:
        json.dump(rows, f, indent=2)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
