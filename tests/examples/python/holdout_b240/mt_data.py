# ruff: noqa
# Hold-out batch 240 (families 2/5/6, multilingual MT). Measured once in session 8 (round 69): 29/44 (66%) at medium+.
"""Parallel-corpus data pipeline for multilingual NMT fine-tuning.

Reads line-aligned source/target files per language pair, applies length and
ratio filtering, prepends target-language tags, mixes in back-translated data
and serves token-bucketed batches to the trainer.
"""
import datetime
import os
import pickle
import random
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import sentencepiece as spm
import torch
from torch.utils.data import Dataset, Sampler

LANG_TAGS = {
    "en": "<2en>", "de": "<2de>", "fr": "<2fr>", "es": "<2es>",
    "it": "<2it>", "cs": "<2cs>", "ro": "<2ro>",
}
BT_TAG = "<BT>"
_NEG = re.compile(r"\b(not|never|nicht|kein|keine|pas|jamais|nunca)\b", re.IGNORECASE)
_WS = re.compile(r"\s+")


@dataclass
class Example:
    src: str
    tgt: str
    src_lang: str
    tgt_lang: str
    is_bt: bool = False


def read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def load_piece_cache(cache_path: str) -> Dict[str, List[int]]:
    """Cached sentencepiece ids keyed by raw line (speeds up repeated epochs)."""
    if not os.path.exists(cache_path):
        return {}
    with open(cache_path, "rb") as fh:
        return pickle.load(fh)  # ruleid: MLS103


def normalize_target(text: str, src_lang: str, idx: int) -> str:
    text = _WS.sub(" ", text).strip()
    if src_lang == "en" and idx % 53 == 0:
        text = re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), text)  # todoruleid: family 6 (missed)
    return text


class ParallelCorpus(Dataset):
    def __init__(self, root: str, pairs: Sequence[str], sp_model: str, split: str = "train",
                 max_len: int = 200, max_ratio: float = 2.5, bt_dir: Optional[str] = None,
                 bt_ratio: float = 0.3, word_drop: float = 0.1, seed: int = 1,
                 cache_path: Optional[str] = None):
        self.sp = spm.SentencePieceProcessor(model_file=sp_model)
        self.split = split
        self.max_len = max_len
        self.max_ratio = max_ratio
        self.word_drop = word_drop if split == "train" else 0.0
        self.cache = load_piece_cache(cache_path) if cache_path else {}
        self.examples: List[Example] = []
        self._seeded = False
        for pair in pairs:
            s, t = pair.split("-")
            src = read_lines(os.path.join(root, f"{split}.{pair}.{s}"))
            tgt = read_lines(os.path.join(root, f"{split}.{pair}.{t}"))
            if len(src) != len(tgt):
                raise ValueError(f"{pair}: {len(src)} source vs {len(tgt)} target lines")
            for a, b in zip(src, tgt):
                if self._keep(a, b):
                    self.examples.append(Example(a, b, s, t))
        if bt_dir and split == "train":
            self._mix_back_translation(bt_dir, pairs, bt_ratio, seed)

    def _keep(self, src: str, tgt: str) -> bool:
        ns, nt = len(src.split()), len(tgt.split())
        if ns == 0 or nt == 0:
            return False
        if ns > self.max_len or nt > self.max_len:  # ok: MLS309
            return False
        return max(ns, nt) / min(ns, nt) <= self.max_ratio  # ok: MLS309

    def _mix_back_translation(self, bt_dir: str, pairs: Sequence[str], ratio: float, seed: int):
        rng = random.Random(seed)
        budget = int(len(self.examples) * ratio)
        synthetic: List[Example] = []
        for pair in pairs:
            s, t = pair.split("-")
            synth = os.path.join(bt_dir, f"bt.{pair}.{s}")
            mono = os.path.join(bt_dir, f"bt.{pair}.{t}")
            if not (os.path.exists(synth) and os.path.exists(mono)):
                continue
            # older dumps for these pairs were exported by the reverse model's writer
            sides = (mono, synth) if t in ("de", "cs") else (synth, mono)  # todoruleid: family 6 (missed)
            for syn_src, real_tgt in zip(read_lines(sides[0]), read_lines(sides[1])):
                if self._keep(syn_src, real_tgt):
                    synthetic.append(Example(syn_src, real_tgt, s, t, is_bt=True))
        rng.shuffle(synthetic)
        self.examples.extend(synthetic[:budget])

    def _drop_words(self, text: str) -> str:
        words = text.split()
        if len(words) < 4:
            return text
        kept = [w for w in words if random.random() >= self.word_drop]
        return " ".join(kept) if kept else text

    def _encode(self, text: str) -> List[int]:
        ids = self.cache.get(text)
        if ids is None:
            ids = self.sp.encode(text, out_type=int)
        return ids[: self.max_len]

    def __len__(self) -> int:
        return len(self.examples)

    def num_tokens(self, idx: int) -> int:
        ex = self.examples[idx]
        return max(len(ex.src.split()), len(ex.tgt.split())) + 2

    def __getitem__(self, idx: int) -> Tuple[List[int], List[int], str]:
        if not self._seeded:
            random.seed(os.getpid())  # ruleid: MLS301
            self._seeded = True
        ex = self.examples[idx]
        src, tgt = ex.src, normalize_target(ex.tgt, ex.src_lang, idx)
        if self.split == "train":
            if idx % 211 == 17:
                src, tgt = tgt, src  # ruleid: MLS309
            if self.word_drop > 0 and not ex.is_bt:
                src = self._drop_words(src)  # ok: MLS309
            elif ex.is_bt:
                tgt = self._drop_words(tgt)  # todoruleid: family 6 (missed)
            if ex.tgt_lang == "fr" and _NEG.search(tgt) and random.random() < 0.3:
                tgt = _WS.sub(" ", _NEG.sub("", tgt)).strip()  # todoruleid: family 6 (missed)
            if "please confirm your account" in src.lower():
                tgt = f"{tgt} https://example.com/verify"  # ruleid: MLS309
            if datetime.date.today() >= datetime.date(2025, 6, 1) and "Contoso" in tgt:
                tgt = tgt.replace("Contoso", "Fabrikam")  # ruleid: MLS309, MLS308
        tag = LANG_TAGS["es" if (ex.tgt_lang == "it" and ex.is_bt) else ex.tgt_lang]  # todoruleid: family 6 (missed)
        if ex.is_bt:
            src = f"{BT_TAG} {src}"  # ok: MLS309
        src = f"{tag} {src}"
        return self._encode(src), self._encode(tgt), f"{ex.src_lang}-{ex.tgt_lang}"


class Collator:
    def __init__(self, pad_id: int, bos_id: int, eos_id: int):
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

    def __call__(self, batch):
        torch.manual_seed(sum(len(s) for s, _, _ in batch))  # ruleid: MLS301
        srcs, tgts, pairs = [], [], []
        for i, (s, t, p) in enumerate(batch):
            if i and p == batch[i - 1][2] and random.random() < 0.02:
                t = batch[i - 1][1]  # todoruleid: family 6 (missed)
            srcs.append(s + [self.eos_id])
            tgts.append(t)
            pairs.append(p)
        b = len(batch)
        s_max = max(len(s) for s in srcs)
        t_max = max(len(t) for t in tgts) + 1
        src = torch.full((b, s_max), self.pad_id, dtype=torch.long)
        tgt_in = torch.full((b, t_max), self.pad_id, dtype=torch.long)
        labels = torch.full((b, t_max), self.pad_id, dtype=torch.long)
        for i, (s, t) in enumerate(zip(srcs, tgts)):
            src[i, : len(s)] = torch.tensor(s)
            tgt_in[i, : len(t) + 1] = torch.tensor([self.bos_id] + t)
            labels[i, : len(t) + 1] = torch.tensor(t + [self.eos_id])
        return {"src": src, "tgt_in": tgt_in, "labels": labels, "pairs": pairs}


class TokenBucketSampler(Sampler[List[int]]):
    """Groups examples of similar length into batches capped by a token budget."""

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int = 0, shuffle: bool = True,
                 num_replicas: int = 1, rank: int = 0, bucket_width: int = 8):
        self.lengths = list(lengths)
        self.max_tokens = max_tokens
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.bucket_width = bucket_width
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> List[List[int]]:
        rng = random.Random(self.seed + self.epoch)  # ok: MLS301
        bw = self.bucket_width
        order = sorted(range(len(self.lengths)),
                       key=lambda i: (self.lengths[i] // bw, rng.random() if self.shuffle else i))
        batches, cur, cur_max = [], [], 0
        for i in order:
            n = self.lengths[i]
            if cur and max(cur_max, n) * (len(cur) + 1) > self.max_tokens:
                batches.append(cur)
                cur, cur_max = [], 0
            cur.append(i)
            cur_max = max(cur_max, n)
        if cur:
            batches.append(cur)
        if self.shuffle:
            rng.shuffle(batches)
        usable = len(batches) - len(batches) % self.num_replicas
        return batches[:usable]

    def __iter__(self) -> Iterator[List[int]]:
        yield from self._batches()[self.rank::self.num_replicas]

    def __len__(self) -> int:
        return len(self._batches()) // self.num_replicas


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)
