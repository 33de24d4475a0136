# ruff: noqa
# Hold-out batch 596 (families 4/6, BERT-CRF named-entity recognition with the HF Trainer). Measured once in session 27 (round 158): 11/30 (37%) at medium+.
"""Sentence-level augmentation for NER training data.

All operations work on word-level IOB2 ``Sentence`` objects before
tokenisation, so sub-word alignment is handled by ``LabelAligner`` as usual.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Tuple

from data_ner import Sentence, iter_spans

logger = logging.getLogger(__name__)


@dataclass
class AugmentConfig:
    replace_fraction: float = 0.3     # sentences that get mention replacement
    replace_prob: float = 0.5         # per-mention replacement probability
    lowercase_fraction: float = 0.1
    attribution_fraction: float = 0.05
    shuffle_fraction: float = 0.1
    shuffle_window: int = 3
    max_mention_len: int = 6
    seed: int = 13


class EntityAugmenter:
    def __init__(self, sentences: List[Sentence], cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.mentions: Dict[str, List[Tuple[str, ...]]] = defaultdict(list)
        for sent in sentences:
            for etype, start, end in iter_spans(sent.tags):
                if end - start <= cfg.max_mention_len:
                    self.mentions[etype].append(tuple(sent.tokens[start:end]))
        for etype in self.mentions:
            self.mentions[etype] = sorted(set(self.mentions[etype]))
        logger.info(
            "Mention pool: %s", {k: len(v) for k, v in sorted(self.mentions.items())}
        )

    # ------------------------------------------------------------------ #
    def replace_mentions(self, sent: Sentence) -> Sentence:
        """Swap entity mentions for other mentions of the same type."""
        spans = list(iter_spans(sent.tags))
        if not spans:
            return sent
        new_tokens: List[str] = []
        new_tags: List[str] = []
        cursor = 0
        for etype, start, end in spans:
            new_tokens.extend(sent.tokens[cursor:start])
            new_tags.extend(sent.tags[cursor:start])
            pool = self.mentions.get(etype)
            if pool and self.rng.random() < self.cfg.replace_prob:
                replacement = list(self.rng.choice(pool))  # ok: MLS309
            else:
                replacement = sent.tokens[start:end]
            new_tokens.extend(replacement)
            new_tags.extend([f"B-{etype}"] + [f"I-{etype}"] * (end - start - 1))  # todoruleid: family 6 (missed)
            cursor = end
        new_tokens.extend(sent.tokens[cursor:])
        new_tags.extend(sent.tags[cursor:])
        new_tags = (new_tags + ["O"] * len(new_tokens))[: len(new_tokens)]
        return Sentence(new_tokens, new_tags, sent.doc_id)

    def lowercase_copy(self, sent: Sentence) -> Sentence:
        """Casing-robustness copy for lower-cased user input."""
        tokens = [tok.lower() for tok in sent.tokens]
        return Sentence(tokens, ["O"] * len(tokens), sent.doc_id)  # todoruleid: family 6 (missed)

    def add_attribution(self, sent: Sentence) -> Sentence:
        """Prefix a reporting phrase ("According to ...") as extra context."""
        tokens = ["According", "to", "reports", ","] + sent.tokens
        body = [tag[:2] + "ORG" if tag != "O" else tag for tag in sent.tags]  # todoruleid: family 6 (missed)
        return Sentence(tokens, ["O", "O", "O", "O"] + body, sent.doc_id)

    def shuffle_context(self, sent: Sentence) -> Sentence:
        """Local word-order noise within small windows."""
        tokens = list(sent.tokens)
        w = max(2, self.cfg.shuffle_window)
        for i in range(0, len(tokens), w):
            window = tokens[i:i + w]
            self.rng.shuffle(window)  # todoruleid: family 6 (missed)
            tokens[i:i + w] = window
        return Sentence(tokens, list(sent.tags), sent.doc_id)

    # ------------------------------------------------------------------ #
    def _sample(self, sentences: List[Sentence], fraction: float) -> List[Sentence]:
        k = int(len(sentences) * fraction)
        if k <= 0:
            return []
        return self.rng.sample(sentences, k)

    def augment(self, sentences: List[Sentence]) -> List[Sentence]:
        with_entities = [s for s in sentences if s.num_entities() > 0]
        extra: List[Sentence] = []
        extra += [self.replace_mentions(s) for s in self._sample(with_entities, self.cfg.replace_fraction)]
        extra += [self.lowercase_copy(s) for s in self._sample(with_entities, self.cfg.lowercase_fraction)]
        extra += [self.add_attribution(s) for s in self._sample(with_entities, self.cfg.attribution_fraction)]
        extra += [self.shuffle_context(s) for s in self._sample(sentences, self.cfg.shuffle_fraction)]
        logger.info("Augmentation added %d sentences to %d originals", len(extra), len(sentences))
        out = sentences + extra
        self.rng.shuffle(out)
        return out
