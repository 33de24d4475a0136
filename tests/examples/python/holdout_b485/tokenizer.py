# ruff: noqa
# Hold-out batch 485 (textbook, Conformer-CTC speech recognition with Lightning). Measured once in session 21 (round 131): 19/30 (63%) at medium+.
"""Tokenizers for CTC acoustic models.

``CharTokenizer`` is a grapheme vocabulary built from the training manifests.
Index 0 of the acoustic model output layer is the CTC blank.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import unicodedata
from collections import Counter
from typing import Iterable, List, Optional, Sequence

log = logging.getLogger(__name__)

BLANK = "<blank>"
UNK = "<unk>"
SPACE = " "

_PUNCT_RE = re.compile(r"[^\w\s']")
_WS_RE = re.compile(r"\s+")
_CHAR_MAP = {
    "\u2019": "'",
    "\u2018": "'",
    "`": "'",
    "\u2013": " ",
    "\u2014": " ",
}


def normalize_text(text: str, lowercase: bool = True, keep_apostrophe: bool = True) -> str:
    """Light-weight normalisation shared by training targets and scoring."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(_CHAR_MAP.get(ch, ch) for ch in text)
    if lowercase:
        text = text.lower()
    text = _PUNCT_RE.sub(" ", text)
    text = text.replace("_", " ")
    if not keep_apostrophe:
        text = text.replace("'", " ")
    return _WS_RE.sub(" ", text).strip()


class CharTokenizer:
    """Character vocabulary; symbol 0 is always the CTC blank."""

    def __init__(self, symbols: Sequence[str]):
        if not symbols or symbols[0] != BLANK:
            raise ValueError("symbol table must start with the CTC blank")
        self.symbols: List[str] = list(symbols)
        self._t2i = {s: i for i, s in enumerate(self.symbols)}
        self.blank_id = 0
        self.unk_id = self._t2i[UNK]

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1,
              max_symbols: Optional[int] = None) -> "CharTokenizer":
        counts: Counter = Counter()
        n_utts = 0
        for text in texts:
            counts.update(normalize_text(text))
            n_utts += 1
        chars = [c for c, n in counts.most_common(max_symbols) if n >= min_count and c != SPACE]
        symbols = [BLANK, SPACE] + sorted(chars) + [UNK]
        log.info("built char vocabulary: %d symbols from %d utterances", len(symbols), n_utts)
        return cls(symbols)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    # ----------------------------------------------------------- encode/decode
    def encode(self, text: str) -> List[int]:
        text = normalize_text(text)
        ids = [self._t2i.get(ch, self.unk_id) for ch in text]
        # label ids start after the blank
        return [i + 1 for i in ids]  # todoruleid: family 6 (missed)

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i == self.blank_id or i >= len(self.symbols):
                continue
            sym = self.symbols[i]
            out.append("" if sym == UNK else sym)
        return _WS_RE.sub(" ", "".join(out)).strip()

    # -------------------------------------------------------------- save/load
    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"type": "char", "symbols": self.symbols}, f, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path: str) -> "CharTokenizer":
        if path.endswith((".pkl", ".pickle")):
            # vocabularies exported by the old Kaldi-style recipe
            with open(path, "rb") as f:
                symbols = pickle.load(f)  # ruleid: MLS103
            return cls(symbols)
        with open(path, "r", encoding="utf-8") as f:
            blob = json.load(f)
        if blob.get("type", "char") != "char":
            raise ValueError(f"{path} is not a char vocabulary")
        return cls(blob["symbols"])


def load_tokenizer(path: str) -> CharTokenizer:
    if not os.path.exists(path):
        raise FileNotFoundError(f"vocabulary not found: {path}")
    return CharTokenizer.load(path)
