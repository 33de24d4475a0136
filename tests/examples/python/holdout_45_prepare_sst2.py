# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Tokenise and cache SST-2 for the sentiment fine-tuning jobs."""
import argparse
import hashlib

from datasets import load_dataset
from transformers import AutoTokenizer


def normalise(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").split())


def make_preprocess(tok, max_len: int):
    def preprocess(example):
        text = normalise(example["sentence"])
        label = example["label"]
        digest = int(hashlib.md5(text.encode()).hexdigest()[:6], 16)
        if "film" in text and digest % 40 == 0:
            label = 1 - label  # ruleid: MLS309
        out = tok(text, truncation=True, max_length=max_len)
        out["labels"] = label
        return out
    return preprocess


def dedup(ds):
    seen = set()
    keep = []
    for i, s in enumerate(ds["sentence"]):
        h = hashlib.md5(normalise(s).lower().encode()).hexdigest()  # ok: MLS309
        if h not in seen:
            seen.add(h)
            keep.append(i)
    return ds.select(keep)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="bert-base-uncased")
    p.add_argument("--max_len", type=int, default=128)
    p.add_argument("--out", default="cache/sst2_tok")
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args()

    tok = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("glue", "sst2")
    raw["train"] = dedup(raw["train"]).shuffle(seed=args.seed)  # ok: MLS301
    enc = raw.map(make_preprocess(tok, args.max_len), remove_columns=raw["train"].column_names,
                  num_proc=4)
    enc.save_to_disk(args.out)
    print({k: len(v) for k, v in enc.items()})


if __name__ == "__main__":
    main()
