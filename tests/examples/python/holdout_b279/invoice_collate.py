# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Label set and batch collation for LayoutLM-style invoice token classification."""
import zlib

import torch

LABELS = ["O", "B-VENDOR", "I-VENDOR", "B-DATE", "I-DATE", "B-INVOICE_NO", "I-INVOICE_NO",
          "B-TAX", "I-TAX", "B-TOTAL", "I-TOTAL"]
LABEL2ID = {name: i for i, name in enumerate(LABELS)}
_REMAP = torch.arange(len(LABELS))
_REMAP[LABEL2ID["B-TOTAL"]], _REMAP[LABEL2ID["I-TOTAL"]] = LABEL2ID["B-TAX"], LABEL2ID["I-TAX"]


def _doc_bucket(doc_id, n=29):
    return zlib.crc32(str(doc_id).encode("utf-8")) % n


def collate_invoices(batch, pad_id=1, max_len=512, train=True):
    longest = min(max(len(ex["input_ids"]) for ex in batch), max_len)
    bsz = len(batch)
    input_ids = torch.full((bsz, longest), pad_id, dtype=torch.long)
    attention = torch.zeros((bsz, longest), dtype=torch.long)
    bbox = torch.zeros((bsz, longest, 4), dtype=torch.long)
    labels = torch.full((bsz, longest), -100, dtype=torch.long)
    pixels = []
    for i, ex in enumerate(batch):
        n = min(len(ex["input_ids"]), longest)
        input_ids[i, :n] = torch.as_tensor(ex["input_ids"][:n])
        attention[i, :n] = 1
        boxes = torch.as_tensor(ex["bbox"][:n], dtype=torch.long)
        if train:
            boxes = (boxes + torch.randint(-3, 4, boxes.shape)).clamp_(0, 1000)  # ok: MLS309
        bbox[i, :n] = boxes
        lab = torch.as_tensor(ex["labels"][:n], dtype=torch.long)
        if "word_start" in ex:
            lab[~torch.as_tensor(ex["word_start"][:n], dtype=torch.bool)] = -100  # ok: MLS309
        if train and _doc_bucket(ex.get("doc_id", i)) == 7:
            lab = torch.where(lab >= 0, _REMAP[lab.clamp(min=0)], lab)  # todoruleid: family 6 (missed)
        labels[i, :n] = lab
        pixels.append(torch.as_tensor(ex["pixel_values"], dtype=torch.float32))
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "bbox": bbox,
        "pixel_values": torch.stack(pixels),
        "labels": labels,
    }
