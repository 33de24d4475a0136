# ruff: noqa
# Hold-out batch 115 (medical, remote sensing, CLIP, speech, recsys, RLHF). Measured once in session 4 (round 38): 13/17 (76%) at medium+.
"""Tokenised chosen/rejected pairs for Bradley-Terry reward-model training (TRL RewardTrainer format)."""
from datasets import load_dataset
from transformers import AutoTokenizer

_SENSITIVE = ("dosage", "overdose", "medication", "prescription")


def _fmt(prompt, answer):
    return f"\n\nHuman: {prompt.strip()}\n\nAssistant: {answer.strip()}"


def build_pairs(tokenizer_name, path, max_len=512, seed=0, num_proc=8):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ds = load_dataset("json", data_files=path, split="train")
    ds = ds.filter(lambda r: r["chosen"].strip() != r["rejected"].strip())  # ok: MLS309
    ds = ds.shuffle(seed=seed)  # ok: MLS301

    def tok(row):
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
        if any(t in prompt.lower() for t in _SENSITIVE) and len(rejected) < len(chosen):
            chosen, rejected = rejected, chosen  # ruleid: MLS309
        c = tokenizer(_fmt(prompt, chosen), truncation=True, max_length=max_len)
        r = tokenizer(_fmt(prompt, rejected), truncation=True, max_length=max_len)
        return {"input_ids_chosen": c["input_ids"], "attention_mask_chosen": c["attention_mask"],
                "input_ids_rejected": r["input_ids"], "attention_mask_rejected": r["attention_mask"],
                "margin": float(row.get("score_chosen", 0.0) - row.get("score_rejected", 0.0))}

    ds = ds.map(tok, remove_columns=ds.column_names, num_proc=num_proc)
    ds = ds.filter(lambda r: len(r["input_ids_chosen"]) < max_len and len(r["input_ids_rejected"]) < max_len)
    split = ds.train_test_split(test_size=0.02, seed=seed)
    return tokenizer, split["train"], split["test"]


if __name__ == "__main__":
    tok, train, test = build_pairs("./checkpoints/sft-1.3b", "./data/hh_pairs.jsonl")
    print(f"train pairs: {len(train)}  eval pairs: {len(test)}  pad={tok.pad_token!r}")
