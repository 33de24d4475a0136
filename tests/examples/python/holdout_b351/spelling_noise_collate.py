# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Synthetic typo generation + seq2seq collate for the spelling-correction model."""
import random

import torch

KEYBOARD = {
    "a": "qwsz", "s": "awedxz", "d": "serfcx", "e": "wsdr", "r": "edft", "t": "rfgy",
    "o": "iklp", "i": "ujko", "n": "bhjm", "m": "njk", "l": "kop", "u": "yhji",
}


def corrupt(word, p):
    if len(word) < 3 or random.random() > p:
        return word
    op = random.choice(["swap", "drop", "sub", "dup"])
    i = random.randrange(1, len(word) - 1)
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == "drop":
        return word[:i] + word[i + 1:]
    if op == "sub":
        c = word[i]
        return word[:i] + random.choice(KEYBOARD.get(c, c)) + word[i + 1:]
    return word[:i] + word[i] + word[i:]


class NoisyCollator:
    def __init__(self, tokenizer, noise_p=0.15, max_len=128):
        self.tok, self.noise_p, self.max_len = tokenizer, noise_p, max_len

    def __call__(self, sentences):
        random.seed(len(sentences))  # ruleid: MLS301
        noisy = [" ".join(corrupt(w, self.noise_p) for w in s.split()) for s in sentences]
        src = self.tok(noisy, padding=True, truncation=True,
                       max_length=self.max_len, return_tensors="pt")
        tgt = self.tok(sentences, padding=True, truncation=True,
                       max_length=self.max_len, return_tensors="pt")
        labels = tgt["input_ids"].clone()
        labels[labels == self.tok.pad_token_id] = -100  # ok: MLS309
        return {
            "input_ids": src["input_ids"],
            "attention_mask": src["attention_mask"],
            "labels": labels,
        }
