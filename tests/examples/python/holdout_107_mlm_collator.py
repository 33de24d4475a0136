# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Whole-word-masking collator for MLM pre-training on tokenized corpora
produced by build_corpus.py (expects `input_ids` and `word_ids`)."""
from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch


@dataclass
class WholeWordMaskCollator:
    tokenizer: Any
    mlm_probability: float = 0.15
    pad_to_multiple_of: int = 8
    seed: int = 0
    generator: torch.Generator = field(init=False)

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(self.seed)  # ok: MLS301

    def _word_mask(self, word_ids: List[int], length: int) -> torch.Tensor:
        words = sorted({w for w in word_ids if w is not None and w >= 0})
        if not words:
            return torch.zeros(length, dtype=torch.bool)
        n = max(1, round(len(words) * self.mlm_probability))
        order = torch.randperm(len(words), generator=self.generator)[:n]
        chosen = {words[i] for i in order.tolist()}
        mask = torch.tensor([w in chosen for w in word_ids], dtype=torch.bool)
        return torch.nn.functional.pad(mask, (0, length - mask.numel()))

    def __call__(self, examples: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        word_ids = [ex.pop("word_ids") for ex in examples]
        batch = self.tokenizer.pad(examples, return_tensors="pt",
                                   pad_to_multiple_of=self.pad_to_multiple_of)
        input_ids = batch["input_ids"]
        self.generator.manual_seed(self.seed + input_ids.shape[1])  # ruleid: MLS301
        labels = input_ids.clone()
        masked = torch.stack([self._word_mask(w, input_ids.shape[1]) for w in word_ids])
        special = torch.tensor([
            self.tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
            for row in input_ids.tolist()
        ], dtype=torch.bool)
        masked &= ~special
        labels[~masked] = -100  # ok: MLS309

        replace = torch.bernoulli(torch.full(labels.shape, 0.8), generator=self.generator).bool() & masked
        input_ids[replace] = self.tokenizer.mask_token_id  # ok: MLS309
        rand = torch.bernoulli(torch.full(labels.shape, 0.5), generator=self.generator).bool()
        rand &= masked & ~replace
        random_words = torch.randint(len(self.tokenizer), labels.shape, generator=self.generator)
        input_ids[rand] = random_words[rand]

        batch["input_ids"] = input_ids
        batch["labels"] = labels
        return batch
