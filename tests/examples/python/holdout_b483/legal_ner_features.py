# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Tokenisation and label alignment for legal NER (court rulings, contracts) with an on-disk cache."""
import hashlib
import logging
import os
import pickle

import yaml
from transformers import AutoTokenizer

log = logging.getLogger(__name__)


def load_label_schema(path):
    with open(path) as f:
        schema = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    labels = ["O"] + [f"{p}-{t}" for t in schema["entity_types"] for p in ("B", "I")]
    return {lab: i for i, lab in enumerate(labels)}


def align_labels(word_ids, word_labels, label2id, label_all_tokens=False):
    out, prev = [], None
    for wid in word_ids:
        if wid is None:
            out.append(-100)
        elif wid != prev:
            out.append(label2id[word_labels[wid]])
        else:
            lab = word_labels[wid]
            if label_all_tokens and lab.startswith("B-"):
                lab = "I-" + lab[2:]
            out.append(label2id[lab] if label_all_tokens else -100)
        prev = wid
    return out


def _cache_key(model_name, data_path, max_len):
    h = hashlib.sha1(f"{model_name}|{os.path.abspath(data_path)}|{max_len}".encode())
    return h.hexdigest()[:16]


def build_features(examples, model_name, data_path, label2id, cache_dir, max_len=512):
    path = os.path.join(cache_dir, f"feat_{_cache_key(model_name, data_path, max_len)}.pkl")
    if os.path.exists(path):
        log.info("loading cached features from %s", path)
        with open(path, "rb") as f:
            return pickle.load(f)  # ruleid: MLS103
    tok = AutoTokenizer.from_pretrained(model_name)
    feats = []
    for ex in examples:
        enc = tok(ex["tokens"], is_split_into_words=True, truncation=True, max_length=max_len)
        enc["labels"] = align_labels(enc.word_ids(), ex["ner_tags"], label2id)
        feats.append(dict(enc))
    os.makedirs(cache_dir, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(feats, f)
    log.info("cached %d features to %s", len(feats), path)
    return feats
