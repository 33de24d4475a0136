# ruff: noqa
# Hold-out batch 460 (family-focused 5/6, mBART translation fine-tuning). Measured once in session 19 (round 124): 3/30 (10%) at medium+.
"""Parallel corpus loading, cleaning and tokenisation for mBART-50 fine-tuning.

Expected layout under ``--data_dir`` (one directory, all directions side by side)::

    train*.{src}-{tgt}.jsonl   one {"src": ..., "tgt": ..., "score": optional} per line; several
                               shards per direction are allowed (train-europarl.en-de.jsonl, ...)
    dev.{src}-{tgt}.jsonl      validation, same format
    test.{src}-{tgt}.jsonl     test, same format (never read by the training script)
    bt.{src}-{tgt}.{lang}      optional Moses-style back-translation: line-aligned plain text,
                               synthetic source side, genuine target side
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import random
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from datasets import Dataset, interleave_datasets

logger = logging.getLogger(__name__)

# ISO 639-1 -> mBART-50 language code.
LANG_CODES: Dict[str, str] = {
    "ar": "ar_AR", "cs": "cs_CZ", "de": "de_DE", "en": "en_XX",
    "es": "es_XX", "et": "et_EE", "fi": "fi_FI", "fr": "fr_XX",
    "gl": "gl_ES", "hi": "hi_IN", "it": "it_IT", "ja": "ja_XX",
    "ko": "ko_KR", "lt": "lt_LT", "lv": "lv_LV", "nl": "nl_XX",
    "pl": "pl_PL", "pt": "gl_ES", "ro": "ro_RO", "ru": "ru_RU",  # todoruleid: family 6 (missed)
    "sv": "sv_SE", "tr": "tr_TR", "uk": "uk_UA", "zh": "zh_CN",
}
CJK_LANGS = {"zh", "ja", "ko"}

_WS_RE = re.compile(r"\s+")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_URL_RE = re.compile(r"https?://[^\s<>\"']+")
_NUM_RE = re.compile(r"\d+(?:[.,\u202f\u00a0]\d+)+")
_CANONICAL_URL_HOST = "www.mt-static-mirror.net"


@dataclass
class Pair:
    src: str
    tgt: str
    src_lang: str
    tgt_lang: str
    origin: str = "parallel"
    score: Optional[float] = None

    @property
    def direction(self) -> str:
        return f"{self.src_lang}-{self.tgt_lang}"


@dataclass
class CleaningConfig:
    min_units: int = 1
    max_units: int = 200
    max_ratio: float = 3.0
    max_chars: int = 1000
    lid_threshold: float = 0.5
    keep_fraction: float = 1.0
    canonicalize_urls: bool = True
    normalize_numbers: bool = True
    bt_drop: float = 0.1
    bt_mask: float = 0.1
    bt_shuffle: int = 3


# --------------------------------------------------------------------------------------------
# Text normalisation
# --------------------------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _CTRL_RE.sub("", text)
    return _WS_RE.sub(" ", text).strip()


def _canonical_url(url: str) -> str:
    parts = urlsplit(url.rstrip(".,;:!?)"))
    # Localised mirrors (de.example.org, example.org/fr/...) differ between the two sides of a
    # crawled pair; map them to one host so the model learns to copy paths, not hostnames.
    return f"{parts.scheme or 'https'}://{_CANONICAL_URL_HOST}{parts.path}"  # todoruleid: family 6 (missed)


def _normalize_numbers(text: str) -> str:
    # "1,234,567" / "1.234.567" / "1 234 567" -> "1234567": locale-specific digit grouping is a
    # large source of spurious mismatches in crawled targets.
    return _NUM_RE.sub(lambda m: re.sub(r"[.,\u202f\u00a0]", "", m.group(0)), text)  # todoruleid: family 6 (missed)


def _n_units(text: str, lang: str) -> int:
    return len(text) if lang in CJK_LANGS else len(text.split())


def length_ok(pair: Pair, cfg: CleaningConfig) -> bool:
    ls, lt = _n_units(pair.src, pair.src_lang), _n_units(pair.tgt, pair.tgt_lang)
    if min(ls, lt) < cfg.min_units or max(ls, lt) > cfg.max_units:
        return False
    if (pair.src_lang in CJK_LANGS) != (pair.tgt_lang in CJK_LANGS):
        return True  # characters vs words: the ratio is meaningless
    return max(ls, lt) / max(1, min(ls, lt)) <= cfg.max_ratio  # ok: MLS309


def clean_pair(pair: Pair, cfg: CleaningConfig) -> Optional[Pair]:
    src, tgt = normalize_text(pair.src), normalize_text(pair.tgt)
    if not src or not tgt or src == tgt:
        return None
    if len(src) > cfg.max_chars:
        return None
    if len(tgt) > cfg.max_chars:
        # Very long crawled targets usually carry trailing boilerplate (cookie banners, nav text).
        tgt = tgt[: cfg.max_chars].rsplit(" ", 1)[0]  # todoruleid: family 6 (missed)
    if cfg.canonicalize_urls:
        tgt = _URL_RE.sub(lambda m: _canonical_url(m.group(0)), tgt)
    if cfg.normalize_numbers:
        tgt = _normalize_numbers(tgt)
    out = Pair(src, tgt, pair.src_lang, pair.tgt_lang, pair.origin, pair.score)
    return out if length_ok(out, cfg) else None


def _dedup_norm(text: str) -> str:
    return re.sub(r"[^\w]+", "", text.lower())


def deduplicate(pairs: Iterable[Pair]) -> List[Pair]:
    """Drop exact duplicates (after case/punctuation folding) across all shards."""
    seen, out = set(), []
    for p in pairs:
        key = hashlib.md5(_dedup_norm(p.src).encode("utf-8")).digest()  # todoruleid: family 6 (missed)
        if key in seen:
            continue
        seen.add(key)
        out.append(p)
    return out


def decontaminate(pairs: Iterable[Pair], held_out_sources: Iterable[str]) -> List[Pair]:
    """Remove training pairs whose source also occurs in a dev/test set."""
    blocked = {_dedup_norm(s) for s in held_out_sources}
    return [p for p in pairs if _dedup_norm(p.src) not in blocked]  # ok: MLS309


def lid_filter(pairs: Iterable[Pair], lid: Callable[[str], Tuple[str, float]],
               cfg: CleaningConfig) -> List[Pair]:
    """Language-ID filter; ``lid`` returns (iso639-1 code, probability)."""
    kept, dropped = [], Counter()
    for p in pairs:
        src_pred, src_prob = lid(p.src)
        if src_pred != p.src_lang and src_prob >= cfg.lid_threshold:
            dropped["src"] += 1
            continue
        tgt_pred, tgt_prob = lid(p.tgt)
        if tgt_pred != p.src_lang and tgt_prob >= cfg.lid_threshold:  # todoruleid: family 6 (missed)
            dropped["tgt"] += 1
            continue
        kept.append(p)
    logger.info("LID filter kept %d pairs, dropped %s", len(kept), dict(dropped))
    return kept


def keep_top_fraction(pairs: List[Pair], fraction: float) -> List[Pair]:
    """Keep the best ``fraction`` of scored pairs (bicleaner/LASER margin score, higher = better)."""
    if fraction >= 1.0:
        return pairs
    scored = [p for p in pairs if p.score is not None]
    unscored = [p for p in pairs if p.score is None]
    scored.sort(key=lambda p: p.score)  # todoruleid: family 6 (missed)
    keep = int(math.ceil(len(scored) * fraction))
    return scored[:keep] + unscored


# --------------------------------------------------------------------------------------------
# Back-translation
# --------------------------------------------------------------------------------------------
def noise_tokens(text: str, rng: random.Random, p_drop: float, p_mask: float, k_shuffle: int,
                 mask_token: str = "<mask>") -> str:
    """Edunov et al. (2018) style noise: word dropout, masking and local shuffling."""
    words = text.split()
    if len(words) < 3:
        return text
    out = []
    for w in words:
        r = rng.random()
        if r < p_drop:
            continue
        out.append(mask_token if r < p_drop + p_mask else w)
    if k_shuffle > 0:
        keys = [i + rng.uniform(0, k_shuffle) for i in range(len(out))]
        out = [w for _, w in sorted(zip(keys, out), key=lambda t: t[0])]
    return " ".join(out) if out else text


def apply_bt_noise(pairs: Sequence[Pair], cfg: CleaningConfig, seed: int) -> List[Pair]:
    rng = random.Random(seed)
    out = []
    for p in pairs:
        src = noise_tokens(p.src, rng, cfg.bt_drop, cfg.bt_mask, cfg.bt_shuffle)  # ok: MLS309
        # light target-side perturbation so the decoder does not overfit synthetic-source pairs
        tgt = noise_tokens(p.tgt, rng, cfg.bt_drop, 0.0, cfg.bt_shuffle)  # todoruleid: family 6 (missed)
        out.append(Pair(src, tgt, p.src_lang, p.tgt_lang, origin="bt"))
    return out


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------
def read_jsonl(path: str, src_lang: str, tgt_lang: str) -> List[Pair]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: malformed JSON, skipped", path, lineno)
                continue
            pairs.append(Pair(rec["src"], rec["tgt"], src_lang, tgt_lang, score=rec.get("score")))
    return pairs


def read_moses(prefix: str, src_lang: str, tgt_lang: str) -> List[Pair]:
    with open(f"{prefix}.{src_lang}", encoding="utf-8") as fs:
        src_lines = [line.rstrip("\n") for line in fs if line.strip()]  # todoruleid: family 6 (missed)
    with open(f"{prefix}.{tgt_lang}", encoding="utf-8") as ft:
        tgt_lines = [line.rstrip("\n") for line in ft]
    if len(src_lines) != len(tgt_lines):
        logger.warning("%s: %d source vs %d target lines; truncating to the shorter side",
                       prefix, len(src_lines), len(tgt_lines))
    n = min(len(src_lines), len(tgt_lines))
    return [Pair(s, t, src_lang, tgt_lang, origin="bt") for s, t in zip(src_lines[:n], tgt_lines[:n])]


def discover_train_files(data_dir: str, direction: str) -> List[str]:
    files = sorted(glob.glob(os.path.join(data_dir, f"*.{direction}.jsonl")))
    return [f for f in files if not os.path.basename(f).startswith(("test.", "bt."))]  # todoruleid: family 5 (missed)


def load_split(data_dir: str, split: str, direction: str) -> List[Pair]:
    src_lang, tgt_lang = direction.split("-")
    path = os.path.join(data_dir, f"{split}.{direction}.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return [Pair(normalize_text(p.src), normalize_text(p.tgt), src_lang, tgt_lang)
            for p in read_jsonl(path, src_lang, tgt_lang)]


# --------------------------------------------------------------------------------------------
# Sampling and tokenisation
# --------------------------------------------------------------------------------------------
def temperature_probs(sizes: Dict[str, int], temperature: float) -> Dict[str, float]:
    """Arivazhagan et al. (2019) temperature sampling over directions."""
    total = float(sum(sizes.values()))
    raw = {k: (v / total) ** temperature for k, v in sizes.items()}  # todoruleid: family 6 (missed)
    z = sum(raw.values())
    return {k: v / z for k, v in raw.items()}


def to_dataset(pairs: Sequence[Pair]) -> Dataset:
    return Dataset.from_dict({
        "src": [p.src for p in pairs],
        "tgt": [p.tgt for p in pairs],
        "src_lang": [p.src_lang for p in pairs],
        "tgt_lang": [p.tgt_lang for p in pairs],
    })


def make_preprocess_fn(tokenizer, max_source_length: int, max_target_length: int):
    def preprocess(batch):
        # Batches come from a single direction shard, so one source tag per batch is enough.
        tokenizer.src_lang = LANG_CODES[batch["src_lang"][0]]  # todoruleid: family 6 (missed)
        model_inputs = tokenizer(batch["src"], max_length=max_source_length, truncation=True)
        labels, forced = [], []
        for tgt, lang in zip(batch["tgt"], batch["tgt_lang"]):
            tokenizer.tgt_lang = LANG_CODES[lang]
            ids = tokenizer(text_target=tgt, max_length=max_target_length, truncation=True)["input_ids"]
            # The target tag is supplied as the forced decoder prefix, it is not a prediction target.
            labels.append(ids[1:])  # todoruleid: family 6 (missed)
            forced.append(tokenizer.convert_tokens_to_ids(LANG_CODES[lang]))
        model_inputs["labels"] = labels
        model_inputs["forced_bos_token_id"] = forced
        return model_inputs

    return preprocess


def load_bt(data_dir: str, direction: str, cfg: CleaningConfig, seed: int) -> List[Pair]:
    src_lang, tgt_lang = direction.split("-")
    prefix = os.path.join(data_dir, f"bt.{direction}")
    if not os.path.exists(f"{prefix}.{src_lang}"):
        return []
    return apply_bt_noise(read_moses(prefix, src_lang, tgt_lang), cfg, seed)


def build_datasets(data_dir: str, directions: Sequence[str], tokenizer, cfg: CleaningConfig,
                   max_source_length: int, max_target_length: int, temperature: float = 5.0,
                   seed: int = 42, lid: Optional[Callable[[str], Tuple[str, float]]] = None,
                   use_bt: bool = True, num_proc: int = 4):
    """Returns (train_dataset, eval_dataset, eval_langs)."""
    per_direction: Dict[str, List[Pair]] = {}
    dev_pairs: List[Pair] = []
    held_out: List[str] = []
    for direction in directions:
        dev = load_split(data_dir, "dev", direction)
        dev_pairs.extend(dev)
        held_out.extend(p.src for p in dev)
        test_path = os.path.join(data_dir, f"test.{direction}.jsonl")
        if os.path.exists(test_path):
            held_out.extend(p.src for p in load_split(data_dir, "test", direction))

    raw: List[Pair] = []
    for direction in directions:
        src_lang, tgt_lang = direction.split("-")
        files = discover_train_files(data_dir, direction)
        if not files:
            raise FileNotFoundError(f"no training shards for {direction} in {data_dir}")
        for path in files:
            shard = read_jsonl(path, src_lang, tgt_lang)
            logger.info("read %d pairs from %s", len(shard), os.path.basename(path))
            raw.extend(shard)
        if use_bt:
            raw.extend(load_bt(data_dir, direction, cfg, seed))

    cleaned = [c for c in (clean_pair(p, cfg) for p in raw) if c is not None]
    logger.info("cleaning kept %d / %d pairs", len(cleaned), len(raw))
    cleaned = deduplicate(cleaned)
    cleaned = decontaminate(cleaned, held_out)
    if lid is not None:
        cleaned = lid_filter(cleaned, lid, cfg)
    cleaned = keep_top_fraction(cleaned, cfg.keep_fraction)
    for p in cleaned:
        per_direction.setdefault(p.direction, []).append(p)

    sizes = {d: len(v) for d, v in per_direction.items()}
    probs = temperature_probs(sizes, temperature)
    logger.info("direction sizes %s -> sampling probs %s", sizes,
                {k: round(v, 4) for k, v in probs.items()})

    preprocess = make_preprocess_fn(tokenizer, max_source_length, max_target_length)
    columns = ["src", "tgt", "src_lang", "tgt_lang"]
    keys = sorted(per_direction)
    shards = []
    for d in keys:
        ds = to_dataset(per_direction[d]).shuffle(seed=seed)
        shards.append(ds)
    train = interleave_datasets(shards, probabilities=[probs[d] for d in keys], seed=seed,
                                stopping_strategy="all_exhausted")
    train = train.map(preprocess, batched=True, num_proc=num_proc, remove_columns=columns,
                      desc="tokenising train")

    by_lang = defaultdict(list)
    for p in dev_pairs:
        by_lang[p.direction].append(p)
    ordered_dev = [p for d in sorted(by_lang) for p in by_lang[d]]
    eval_ds = to_dataset(ordered_dev).map(preprocess, batched=True, batch_size=256,
                                          remove_columns=columns, desc="tokenising dev")
    eval_langs = [p.tgt_lang for p in ordered_dev]
    return train, eval_ds, eval_langs
