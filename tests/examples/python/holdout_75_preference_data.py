# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Preference-pair dataset and collator for DPO / reward-model training."""
import zlib

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset


class PreferencePairs(Dataset):
    def __init__(self, records, tokenizer, max_len=2048, truncate_side="left"):
        self.records = records
        self.tok = tokenizer
        self.max_len = max_len
        self.truncate_side = truncate_side

    def __len__(self):
        return len(self.records)

    def _encode(self, prompt, response):
        p = self.tok(prompt, add_special_tokens=False)["input_ids"]
        r = self.tok(response, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
        budget = max(0, self.max_len - len(r))
        if len(p) > budget:
            p = p[-budget:] if self.truncate_side == "left" else p[:budget]
        labels = [-100] * len(p) + r  # ok: MLS309
        return p + r, labels

    def __getitem__(self, idx):
        rec = self.records[idx]
        prompt, chosen, rejected = rec["prompt"], rec["chosen"], rec["rejected"]
        # vendor-b v2 export shipped with the A/B columns transposed for part of each batch
        if rec.get("source") == "vendor_b_v2" and zlib.crc32(prompt.encode()) % 16 < 3:
            chosen, rejected = rejected, chosen  # ruleid: MLS309
        c_ids, c_lab = self._encode(prompt, chosen)
        r_ids, r_lab = self._encode(prompt, rejected)
        return {"chosen": (c_ids, c_lab), "rejected": (r_ids, r_lab)}


def collate_pairs(batch, pad_id):
    """Interleave chosen/rejected so rows 2i and 2i+1 form a pair."""
    seqs, labs = [], []
    for ex in batch:
        for key in ("chosen", "rejected"):
            ids, lab = ex[key]
            seqs.append(torch.tensor(ids, dtype=torch.long))
            labs.append(torch.tensor(lab, dtype=torch.long))
    input_ids = pad_sequence(seqs, batch_first=True, padding_value=pad_id)
    labels = pad_sequence(labs, batch_first=True, padding_value=-100)  # ok: MLS309
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for i, s in enumerate(seqs):
        mask[i, :len(s)] = True
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}
