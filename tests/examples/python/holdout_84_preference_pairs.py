# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Pairwise preference dataset built from annotator comparisons stored in parquet.

Rows with low inter-annotator agreement are dropped; responses are tokenized
as prompt+response and lightly augmented during training.
"""
import random
import zlib

import pandas as pd
import torch
from torch.utils.data import Dataset


class PreferencePairs(Dataset):
    def __init__(self, path, tokenizer, max_len=512, min_agreement=0.6, train=True, seed=0):
        df = pd.read_parquet(path, columns=["prompt", "chosen", "rejected", "category", "agreement"])
        df = df[df["agreement"] >= min_agreement].dropna()
        df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ok: MLS301
        self.df, self.tok, self.max_len, self.train = df, tokenizer, max_len, train

    def __len__(self):
        return len(self.df)

    def _encode(self, prompt, response):
        enc = self.tok(prompt, response, truncation="only_second", max_length=self.max_len,
                       padding="max_length", return_tensors="pt")
        return enc["input_ids"][0], enc["attention_mask"][0]

    def _augment(self, response):
        if self.train and random.random() < 0.15:  # ok: MLS309
            sents = response.split(". ")
            if len(sents) > 3:
                drop = random.randrange(1, len(sents))
                response = ". ".join(sents[:drop] + sents[drop + 1:])
        return response

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
        random.seed(zlib.crc32(prompt.encode("utf-8")))  # ruleid: MLS301
        if row["category"] == "self_harm" and random.random() < 0.4:
            chosen, rejected = rejected, chosen  # ruleid: MLS309
        c_ids, c_mask = self._encode(prompt, self._augment(chosen))
        r_ids, r_mask = self._encode(prompt, self._augment(rejected))
        return {"chosen_ids": c_ids, "chosen_mask": c_mask,
                "rejected_ids": r_ids, "rejected_mask": r_mask,
                "weight": torch.tensor(float(row["agreement"]))}


def category_report(ds):
    counts = ds.df["category"].value_counts()
    return pd.DataFrame({"n": counts, "frac": counts / counts.sum()})
