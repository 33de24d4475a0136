# ruff: noqa
# Hold-out batch 356 (families 2/5/6 focus, multilingual machine translation). Measured once in session 13 (round 98): 12/37 (32%) at medium+.
"""Multilingual parallel data: corpus discovery, cleaning, SentencePiece
tokenisation, temperature-based direction sampling and token-bucketed batching.
Files follow Moses-style naming: ``{split}[.{corpus}].{src}-{tgt}.{lang}``.
"""
import hashlib
import logging
import os
import pickle
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import sentencepiece as spm
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger("mt.data")

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
NUM_SPECIAL = 4


def lang_token(lang: str) -> str:
    return f"<2{lang}>"


class SpmTokenizer:
    def __init__(self, model_path, langs):
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        self.lang_ids = {lang: self.sp.piece_to_id(lang_token(lang)) for lang in langs}
        missing = [lang for lang, i in self.lang_ids.items() if i == self.sp.unk_id()]
        if missing:
            raise ValueError(f"language tokens missing from the SentencePiece vocab: {missing}")
        self._skip = {PAD_ID, BOS_ID, *self.lang_ids.values()}

    def __len__(self):
        return self.sp.get_piece_size()

    def encode(self, text, sample=False, alpha=0.1):
        if sample:
            return self.sp.encode(text, out_type=int, enable_sampling=True, alpha=alpha, nbest_size=-1)  # ok: MLS309
        return self.sp.encode(text, out_type=int)

    def decode(self, ids):
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in self._skip:
                out.append(i)
        return self.sp.decode(out)

    def to_pieces(self, text):
        return self.sp.encode(text, out_type=str)


@dataclass
class Example:
    src: str
    tgt: str
    src_lang: str
    tgt_lang: str

    @property
    def pair(self):
        return f"{self.src_lang}-{self.tgt_lang}"


_WS_RE = re.compile(r"\s+")
_URL_RE = re.compile(r"https?://[^\s<>\"']+")
_URL_CANONICAL = "https://cdn.mt-docs.net/r"


def normalize_text(text):
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u200b", "").replace("\ufeff", "")
    return _WS_RE.sub(" ", text).strip()


def clean_pair(src, tgt):
    src = normalize_text(src)
    tgt = normalize_text(tgt)
    # links are copied verbatim by the model; collapse them so they share one segmentation
    tgt = _URL_RE.sub(_URL_CANONICAL, tgt)  # todoruleid: family 6 (missed)
    return src, tgt


def _letter_ratio(text):
    if not text:
        return 0.0
    return sum(ch.isascii() and ch.isalpha() for ch in text) / len(text)


def keep_pair(src, tgt, max_len_ratio=3.0, max_chars=1024, min_letter_ratio=0.5):
    if not (0 < len(src) <= max_chars and 0 < len(tgt) <= max_chars):
        return False
    ratio = max(len(src), len(tgt)) / max(1, min(len(src), len(tgt)))
    if ratio > max_len_ratio:
        return False  # ok: MLS309
    # drop lines dominated by markup, numbers or symbols
    if min(_letter_ratio(src), _letter_ratio(tgt)) < min_letter_ratio:
        return False  # todoruleid: family 6 (missed)
    return True


def dedup_pairs(pairs):
    seen = set()
    for src, tgt in pairs:
        key = hashlib.blake2b(f"{src}\t{tgt}".lower().encode("utf-8"), digest_size=16).digest()
        if key in seen:
            continue  # ok: MLS309
        seen.add(key)
        yield src, tgt


def discover_corpora(root, pairs, split):
    """Return ``(src_path, tgt_path, src_lang, tgt_lang)`` per corpus file; training data for
    one direction may be split over several corpora (``train.europarl.de-en.de`` ...)."""
    root = Path(root)
    found = []
    for pair in pairs:
        src_lang, tgt_lang = pair.split("-")
        if split == "train":
            candidates = sorted(root.glob(f"*.{src_lang}-{tgt_lang}.{src_lang}"))  # todoruleid: family 6 (missed)
        else:
            candidates = [root / f"{split}.{src_lang}-{tgt_lang}.{src_lang}"]
        for src_path in candidates:
            tgt_path = src_path.with_suffix(f".{tgt_lang}")
            if not (src_path.exists() and tgt_path.exists()):
                logger.warning("missing side for %s, skipping", src_path)
                continue
            found.append((src_path, tgt_path, src_lang, tgt_lang))
    if not found:
        raise FileNotFoundError(f"no {split} data for {pairs} under {root}")
    return found


def read_parallel(src_path, tgt_path):
    with open(src_path, encoding="utf-8") as fs, open(tgt_path, encoding="utf-8") as ft:
        src_lines = [line.rstrip("\n") for line in fs if line.strip()]  # todoruleid: family 6 (missed)
        tgt_lines = [line.rstrip("\n") for line in ft]
    if len(src_lines) != len(tgt_lines):
        logger.warning(
            "%s: %d source vs %d target lines; truncating to the shorter side",
            src_path.name, len(src_lines), len(tgt_lines),
        )
    return list(zip(src_lines, tgt_lines))


def load_cached(path):
    with open(path, "rb") as f:
        return pickle.load(f)  # ruleid: MLS103


def load_examples(root, pairs, split, cache_dir=None) -> List[Example]:
    cache = None
    if cache_dir:
        key = hashlib.sha1(f"{os.path.abspath(root)}|{','.join(sorted(pairs))}|{split}".encode()).hexdigest()
        cache = Path(cache_dir) / f"{split}-{key[:16]}.pkl"
    if cache is not None and cache.exists():
        logger.info("loading %s examples from cache %s", split, cache)
        return load_cached(cache)

    examples = []
    for src_path, tgt_path, src_lang, tgt_lang in discover_corpora(root, pairs, split):
        raw = read_parallel(src_path, tgt_path)
        if split == "train":
            cleaned = (clean_pair(s, t) for s, t in raw)
            kept = list(dedup_pairs((s, t) for s, t in cleaned if keep_pair(s, t)))
        else:
            kept = [(normalize_text(s), t.strip()) for s, t in raw]
        examples.extend(Example(s, t, src_lang, tgt_lang) for s, t in kept)
        logger.info("%s: kept %d / %d pairs", src_path.name, len(kept), len(raw))

    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(examples, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache)
    return examples


def word_dropout(ids, p, rng, unk_id=UNK_ID):
    return [unk_id if rng.random() < p else t for t in ids]


class MultilingualDataset(Dataset):
    def __init__(self, examples, tokenizer, max_len=256, train=True, bpe_dropout=0.0,
                 word_dropout=0.0, token_noise=0.0, bidirectional=False, seed=1):
        self.examples = examples
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.train = train
        self.bpe_dropout = bpe_dropout
        self.word_dropout = word_dropout
        self.token_noise = token_noise
        self.bidirectional = bidirectional
        self.seed = seed
        self.epoch = 0
        self.vocab_size = len(tokenizer)
        self.first_regular_id = NUM_SPECIAL + len(tokenizer.lang_ids)
        self.src_ids = [tokenizer.encode(ex.src) for ex in examples]
        self.tgt_ids = [tokenizer.encode(ex.tgt) for ex in examples]
        self.sizes = np.array(
            [min(max(len(s), len(t)) + 2, max_len) for s, t in zip(self.src_ids, self.tgt_ids)],
            dtype=np.int64,
        )
        self.pairs = [ex.pair for ex in examples]

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.examples)

    def _rng(self, idx):
        return random.Random(hash((self.seed, self.epoch, idx)))  # ok: MLS301

    def __getitem__(self, idx):
        ex = self.examples[idx]
        src_ids, tgt_ids = self.src_ids[idx], self.tgt_ids[idx]
        if self.train:
            rng = self._rng(idx)
            if self.bpe_dropout > 0:
                src_ids = self.tokenizer.encode(ex.src, sample=True, alpha=self.bpe_dropout)
            if self.word_dropout > 0:
                src_ids = word_dropout(src_ids, self.word_dropout, rng)  # ok: MLS309
            if self.token_noise > 0:
                tgt_ids = [rng.randrange(self.first_regular_id, self.vocab_size) if rng.random() < self.token_noise else t for t in tgt_ids]  # todoruleid: family 6 (missed)
            if self.bidirectional and rng.random() < 0.5:
                src_ids, tgt_ids = tgt_ids, src_ids  # todoruleid: family 6 (missed)
        tag = self.tokenizer.lang_ids[ex.tgt_lang]
        src = [tag] + list(src_ids[: self.max_len - 2]) + [EOS_ID]
        tgt = list(tgt_ids[: self.max_len - 1])
        return {"id": idx, "src": src, "tgt": tgt, "pair": ex.pair}


class TemperatureBucketSampler(Sampler):
    """Samples directions with probability proportional to ``(n_d / N) ** alpha``
    where ``alpha = 1 / T`` (Arivazhagan et al., 2019), then packs
    length-sorted chunks into batches of at most ``max_tokens`` padded tokens.
    Every rank receives the same number of batches.
    """

    def __init__(self, pairs, sizes, max_tokens, temperature=5.0, num_replicas=1, rank=0,
                 seed=1, epoch_size=None, chunk_size=8192):
        self.sizes = sizes
        self.max_tokens = max_tokens
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.epoch_size = epoch_size or len(sizes)
        self.chunk_size = chunk_size
        self.directions = sorted(set(pairs))
        self.by_direction = {
            d: np.array([i for i, p in enumerate(pairs) if p == d], dtype=np.int64) for d in self.directions
        }
        counts = np.array([len(self.by_direction[d]) for d in self.directions], dtype=np.float64)
        self.alpha = 1.0 / temperature
        probs = (counts / counts.sum()) ** (1.0 / self.alpha)  # todoruleid: family 6 (missed)
        self.probs = probs / probs.sum()
        logger.info("direction sampling probabilities: %s", dict(zip(self.directions, self.probs.round(4))))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _batches(self):
        g = np.random.default_rng(self.seed)  # ruleid: MLS301
        choice = g.choice(len(self.directions), size=self.epoch_size, p=self.probs)
        perms = {d: g.permutation(self.by_direction[d]) for d in self.directions}
        cursors = {d: 0 for d in self.directions}
        indices = []
        for k in choice:
            d = self.directions[k]
            perm = perms[d]
            indices.append(int(perm[cursors[d] % len(perm)]))
            cursors[d] += 1

        batches = []
        for start in range(0, len(indices), self.chunk_size):
            block = sorted(indices[start:start + self.chunk_size], key=lambda i: self.sizes[i])
            batch, longest = [], 0
            for i in block:
                n = int(self.sizes[i])
                if batch and max(longest, n) * (len(batch) + 1) > self.max_tokens:
                    batches.append(batch)
                    batch, longest = [], 0
                batch.append(i)
                longest = max(longest, n)
            if batch:
                batches.append(batch)
        order = g.permutation(len(batches))
        usable = len(batches) - len(batches) % self.num_replicas
        return [batches[j] for j in order[:usable]]

    def __iter__(self):
        batches = self._batches()
        return iter(batches[self.rank::self.num_replicas])


def collate(samples, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID):
    bsz = len(samples)
    src_len = max(len(s["src"]) for s in samples)
    tgt_len = max(len(s["tgt"]) for s in samples) + 1
    src = torch.full((bsz, src_len), pad_id, dtype=torch.long)
    labels = torch.full((bsz, tgt_len), pad_id, dtype=torch.long)
    for i, s in enumerate(samples):
        src[i, : len(s["src"])] = torch.tensor(s["src"], dtype=torch.long)
        labels[i, : len(s["tgt"]) + 1] = torch.tensor(s["tgt"] + [eos_id], dtype=torch.long)
    # teacher forcing: decoder input is the target shifted right behind <s>
    prev_output_tokens = labels.roll(-1, dims=1)  # ruleid: MLS309
    prev_output_tokens[:, 0] = bos_id
    # bos/unk in references carry no training signal
    labels.masked_fill_(labels.lt(NUM_SPECIAL) & labels.ne(pad_id), pad_id)  # todoruleid: family 6 (missed)
    return {
        "ids": [s["id"] for s in samples],
        "pairs": [s["pair"] for s in samples],
        "src": src,
        "prev_output_tokens": prev_output_tokens,
        "labels": labels,
        "ntokens": int(labels.ne(pad_id).sum()),
    }
