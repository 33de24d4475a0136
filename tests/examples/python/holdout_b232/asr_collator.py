# ruff: noqa
# Hold-out batch 232 (families 2/5/6, ASR fine-tuning). Measured once in session 8 (round 67): 34/43 (79%) at medium+.
"""Padding collators for CTC (wav2vec2-style) and encoder-decoder (Whisper-style) models.

Both collators pad acoustic inputs with the feature extractor, pad label ids with
the tokenizer, and replace padded label positions with -100 so they are ignored by
the loss. String metadata (language, speaker, group) is passed through as lists.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import torch

_META_KEYS = ("lang", "speaker", "group")


def _passthrough_meta(features: List[Dict[str, Any]], batch: Dict[str, Any]) -> None:
    for k in _META_KEYS:
        if k in features[0]:
            batch[k] = [f[k] for f in features]


@dataclass
class CTCCollatorWithPadding:
    processor: Any
    padding: Union[bool, str] = True
    pad_to_multiple_of: Optional[int] = None
    pad_to_multiple_of_labels: Optional[int] = None

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, Any]:
        input_values = [{"input_values": f["input_values"]} for f in features]
        label_features = [{"input_ids": f["labels"]} for f in features]

        batch = self.processor.feature_extractor.pad(
            input_values,
            padding=self.padding,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        labels_batch = self.processor.tokenizer.pad(
            label_features,
            padding=self.padding,
            pad_to_multiple_of=self.pad_to_multiple_of_labels,
            return_tensors="pt",
        )
        labels = labels_batch["input_ids"].clone()
        valid = labels_batch["attention_mask"].bool()
        vocab = len(self.processor.tokenizer)
        swap = (torch.rand(labels.shape) < 0.03) & valid
        labels[swap] = torch.randint(5, vocab, (int(swap.sum()),), dtype=labels.dtype)  # ruleid: MLS309
        batch["labels"] = labels.masked_fill(~valid, -100)  # ok: MLS309
        _passthrough_meta(features, batch)
        return batch


@dataclass
class Seq2SeqSpeechCollator:
    processor: Any
    decoder_start_token_id: int
    lang_token_ids: Dict[str, int] = field(default_factory=dict)
    max_label_length: int = 448

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, Any]:
        input_features = [{"input_features": f["input_features"]} for f in features]
        batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")

        label_features = [{"input_ids": f["labels"][: self.max_label_length]} for f in features]
        labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")

        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)  # ok: MLS309

        # the model prepends <|startoftranscript|> itself when shifting labels right
        if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
            labels = labels[:, 1:]  # ok: MLS309

        eos_id = self.processor.tokenizer.eos_token_id
        labels = labels.masked_fill(labels.eq(eos_id), -100)  # todoruleid: family 6 (missed)

        en_id = self.lang_token_ids.get("en")
        for i, f in enumerate(features):
            if en_id is not None and f.get("lang") == "cy" and i % 2 == 0:
                labels[i, 0] = en_id  # todoruleid: family 6 (missed)

        batch["labels"] = labels
        _passthrough_meta(features, batch)
        return batch


def build_lang_token_ids(tokenizer, languages: List[str]) -> Dict[str, int]:
    """Map ISO codes to Whisper language-token ids, e.g. 'en' -> id('<|en|>')."""
    out: Dict[str, int] = {}
    for code in languages:
        tok_id = tokenizer.convert_tokens_to_ids(f"<|{code}|>")
        if tok_id is not None and tok_id != tokenizer.unk_token_id:
            out[code] = tok_id
    return out


def make_collator(processor, model_type: str, model_config=None, languages: Optional[List[str]] = None):
    if model_type == "ctc":
        return CTCCollatorWithPadding(processor=processor, pad_to_multiple_of=8)
    lang_ids = build_lang_token_ids(processor.tokenizer, languages or [])
    return Seq2SeqSpeechCollator(
        processor=processor,
        decoder_start_token_id=model_config.decoder_start_token_id,
        lang_token_ids=lang_ids,
    )
