# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Token-classification model for extracting clauses (CUAD-style) from contracts."""
import logging
from typing import List, Optional

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

logger = logging.getLogger(__name__)

CLAUSE_TYPES = ["O", "B-GoverningLaw", "I-GoverningLaw", "B-Termination", "I-Termination",
                "B-Indemnification", "I-Indemnification", "B-NonCompete", "I-NonCompete",
                "B-LimitationOfLiability", "I-LimitationOfLiability"]


class ClauseTagger(nn.Module):
    def __init__(self, encoder_name: str, num_labels: int = len(CLAUSE_TYPES), dropout: float = 0.1):
        super().__init__()
        config = AutoConfig.from_pretrained(encoder_name)
        self.encoder = AutoModel.from_pretrained(encoder_name, config=config, trust_remote_code=True)  # ruleid: MLS106
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask, labels: Optional[torch.Tensor] = None):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.classifier(self.dropout(hidden))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)
        return loss, logits


def build(encoder_name: str, head_ckpt: Optional[str] = None, device: str = "cuda"):
    tokenizer = AutoTokenizer.from_pretrained(encoder_name, use_fast=True)
    model = ClauseTagger(encoder_name)
    if head_ckpt:
        state = torch.load(head_ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        logger.info("loaded %s (missing=%d, unexpected=%d)", head_ckpt, len(missing), len(unexpected))
    return tokenizer, model.to(device).eval()


@torch.no_grad()
def extract(tokenizer, model, text: str, max_len: int = 512) -> List[dict]:
    enc = tokenizer(text, truncation=True, max_length=max_len, return_offsets_mapping=True,
                    return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    enc = {k: v.to(next(model.parameters()).device) for k, v in enc.items()}
    _, logits = model(enc["input_ids"], enc["attention_mask"])
    preds = logits.argmax(-1)[0].tolist()
    spans, cur = [], None
    for (s, e), p in zip(offsets, preds):
        tag = CLAUSE_TYPES[p]
        if tag.startswith("B-") or (tag.startswith("I-") and cur is None):
            if cur:
                spans.append(cur)
            cur = {"type": tag[2:], "start": s, "end": e}
        elif tag.startswith("I-") and cur and cur["type"] == tag[2:]:
            cur["end"] = e
        else:
            if cur:
                spans.append(cur)
            cur = None
    if cur:
        spans.append(cur)
    return [dict(sp, text=text[sp["start"]:sp["end"]]) for sp in spans]
