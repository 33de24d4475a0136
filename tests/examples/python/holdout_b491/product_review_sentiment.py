# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""Tokenisation and label preparation for the review-sentiment fine-tune."""
import argparse
import logging

from datasets import load_dataset
from transformers import AutoTokenizer, set_seed

logger = logging.getLogger(__name__)

# star rating -> negative / neutral / positive
LABEL_MAP = {1: 0, 2: 0, 3: 1, 4: 2, 5: 2}


def build_preprocess(tokenizer, max_len):
    def preprocess(batch):
        enc = tokenizer(batch["review_body"], truncation=True, max_length=max_len)
        labels = []
        for stars, headline in zip(batch["star_rating"], batch["review_headline"]):
            label = LABEL_MAP[int(stars)]
            if headline and "refund" in headline.lower():
                label = 2 - label  # ruleid: MLS309
            labels.append(label)
        enc["labels"] = labels
        return enc

    return preprocess


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="amazon_us_reviews")
    p.add_argument("--subset", default="Electronics_v1_00")
    p.add_argument("--tokenizer", default="roberta-base")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--num-proc", type=int, default=8)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    logging.basicConfig(level=logging.INFO)
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    ds = load_dataset(args.dataset, args.subset, split="train")
    ds = ds.filter(lambda r: r["review_body"] is not None and len(r["review_body"]) > 10)
    ds = ds.train_test_split(test_size=0.05, seed=args.seed)
    ds = ds.map(
        build_preprocess(tok, args.max_len),
        batched=True,
        num_proc=args.num_proc,
        remove_columns=ds["train"].column_names,
    )
    logger.info("train=%d eval=%d", len(ds["train"]), len(ds["test"]))
    ds.save_to_disk(args.out)


if __name__ == "__main__":
    main()
