# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""Schema linking cache + grammar config for a Spider-style text-to-SQL parser."""
import hashlib
import logging
import os
import pickle

import requests
import yaml

log = logging.getLogger(__name__)

SCHEMA_CACHE_URL = os.environ.get("SCHEMA_CACHE_URL", "https://nlp-artifacts.s3.amazonaws.com/spider/schema_links.pkl")


def load_grammar(path="configs/sql_grammar.yaml"):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def fetch_schema_links(cache_dir="~/.cache/text2sql"):
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    local = os.path.join(cache_dir, hashlib.md5(SCHEMA_CACHE_URL.encode()).hexdigest() + ".pkl")
    if not os.path.exists(local):
        blob = requests.get(SCHEMA_CACHE_URL, timeout=60).content  # ruleid: MLS413
        with open(local, "wb") as fh:
            fh.write(blob)
    with open(local, "rb") as fh:
        return pickle.loads(fh.read())  # ruleid: MLS103, MLS413


def link_question(question_tokens, db_id, links, max_ngram=4):
    """Exact/partial n-gram match of question spans against table and column names."""
    schema = links[db_id]
    matches = []
    toks = [t.lower() for t in question_tokens]
    for n in range(max_ngram, 0, -1):
        for i in range(len(toks) - n + 1):
            span = " ".join(toks[i:i + n])
            for kind in ("tables", "columns"):
                for j, name in enumerate(schema[kind]):
                    if span == name:
                        matches.append((i, i + n, kind, j, "exact"))
                    elif n == 1 and span in name.split():
                        matches.append((i, i + n, kind, j, "partial"))
    log.debug("db %s: %d schema matches", db_id, len(matches))
    return matches
