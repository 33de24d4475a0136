# ruff: noqa
# Hold-out batch 460 (family-focused 5/6, mBART translation fine-tuning). Measured once in session 19 (round 124): 3/30 (10%) at medium+.
"""Batch collation for multilingual mBART fine-tuning.

Features produced by ``data.make_preprocess_fn`` carry ``input_ids``, ``attention_mask``,
``labels`` and ``forced_bos_token_id`` (the target-language tag used as decoder prefix).
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from transformers import PreTrainedTokenizerBase


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher-forcing decoder inputs: <start> y_1 ... y_{n-1}."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, 1:]  # todoruleid: family 6 (missed)
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted.eq(-100), pad_token_id)


def _round_up(n: int, multiple: Optional[int]) -> int:
    if not multiple:
        return n
    return ((n + multiple - 1) // multiple) * multiple


@dataclass
class MultilingualSeq2SeqCollator:
    tokenizer: PreTrainedTokenizerBase
    decoder_start_token_id: int
    pad_to_multiple_of: Optional[int] = 8
    label_pad_token_id: int = -100
    concat_prob: float = 0.0
    max_source_length: int = 256
    max_target_length: int = 256
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _special_ids: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        self._rng = random.Random(self.seed)
        self._special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)

    # ----------------------------------------------------------------------------------------
    def _concat_augment(self, features: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Sentence concatenation (Nguyen et al., 2021): join two pairs of the same direction so
        the model sees longer inputs than the sentence-split corpora contain."""
        groups = defaultdict(list)
        for i, f in enumerate(features):
            groups[f["forced_bos_token_id"]].append(i)
        out = []
        for i, f in enumerate(features):
            group = [k for k in groups[f["forced_bos_token_id"]] if k != i]
            if not group or self._rng.random() >= self.concat_prob:
                out.append(f)
                continue
            j = self._rng.choice(group)
            g = features[j]
            src = list(f["input_ids"][:-1]) + list(g["input_ids"][1:])
            tgt = list(f["labels"][:-1]) + list(features[self._rng.choice(group)]["labels"])  # todoruleid: family 6 (missed)
            if len(src) > self.max_source_length or len(tgt) > self.max_target_length:
                out.append(f)
                continue
            out.append({
                "input_ids": src,
                "attention_mask": [1] * len(src),
                "labels": tgt,
                "forced_bos_token_id": f["forced_bos_token_id"],
            })
        return out

    # ----------------------------------------------------------------------------------------
    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        features = [dict(f) for f in features]
        if self.concat_prob > 0.0 and len(features) > 1:
            features = self._concat_augment(features)

        forced = torch.tensor([int(f.pop("forced_bos_token_id")) for f in features], dtype=torch.long)
        label_lists = [list(f.pop("labels")) for f in features]
        encoder_feats = [{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]}
                         for f in features]
        batch = self.tokenizer.pad(encoder_feats, padding=True,
                                   pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")

        pad_id = self.tokenizer.pad_token_id
        width = _round_up(max(len(l) for l in label_lists), self.pad_to_multiple_of)
        labels = torch.full((len(label_lists), width), pad_id, dtype=torch.long)
        for row, ids in enumerate(label_lists):
            labels[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)

        batch["decoder_input_ids"] = shift_tokens_right(labels, pad_id, self.decoder_start_token_id)
        labels = labels.masked_fill(labels.eq(pad_id), self.label_pad_token_id)  # ok: MLS309
        # language tags / <unk> / <mask> are never sensible prediction targets
        labels[torch.isin(labels, self._special_ids)] = self.label_pad_token_id  # todoruleid: family 6 (missed)
        batch["labels"] = labels
        batch["forced_bos_token_id"] = forced
        return batch
