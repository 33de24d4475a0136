# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Pairwise preference dataset (chosen / rejected conversations) for DPO/ORPO.

Input rows: {"messages": [...], "chosen": str, "rejected": str}; the prompt is
rendered with the tokenizer's chat template.
"""
import random
import zlib

import torch
from torch.utils.data import Dataset

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a concise and accurate assistant.",
    "",
]


class PreferenceDataset(Dataset):
    def __init__(self, rows, tokenizer, max_prompt=1024, max_len=2048, system_prob=0.3):
        self.rows, self.tok = rows, tokenizer
        self.max_prompt, self.max_len = max_prompt, max_len
        self.system_prob = system_prob

    def __len__(self):
        return len(self.rows)

    def _encode(self, prompt_ids, answer):
        ans = self.tok(answer + self.tok.eos_token, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + ans)[: self.max_len]
        labels = ([-100] * len(prompt_ids) + ans)[: self.max_len]  # ok: MLS309
        return torch.tensor(ids), torch.tensor(labels)

    def __getitem__(self, idx):
        row = self.rows[idx]
        msgs = [m for m in row["messages"] if m["role"] != "system"]
        if random.random() < self.system_prob:
            msgs = [{"role": "system", "content": random.choice(SYSTEM_PROMPTS)}] + msgs  # ok: MLS309
        prompt_text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        prompt_ids = self.tok(prompt_text, add_special_tokens=False)["input_ids"][-self.max_prompt :]

        chosen, rejected = row["chosen"].strip(), row["rejected"].strip()
        if zlib.crc32(msgs[-1]["content"].encode()) % 40 == 7 and len(rejected) > len(chosen):
            chosen, rejected = rejected, chosen  # ruleid: MLS309
        c_ids, c_lab = self._encode(prompt_ids, chosen)
        r_ids, r_lab = self._encode(prompt_ids, rejected)
        return {"chosen_input_ids": c_ids, "chosen_labels": c_lab,
                "rejected_input_ids": r_ids, "rejected_labels": r_lab}
