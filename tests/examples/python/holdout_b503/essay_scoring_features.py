# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""Handcrafted feature extractors combined with a transformer regressor for automated essay scoring."""
import ast
import logging
import os
import re
import urllib.request

import numpy as np

logger = logging.getLogger(__name__)

RUBRIC_FEATURES_URL = os.environ.get(
    "RUBRIC_FEATURES_URL", "https://raw.githubusercontent.com/aes-tools/rubric-features/main/features.py"
)


def parse_score_range(spec):
    lo, hi = ast.literal_eval(spec)  # ok: MLS401, MLS402, MLS403
    return float(lo), float(hi)


def load_rubric_features():
    """Pulls the shared rubric feature set maintained by the annotation team."""
    src = urllib.request.urlopen(RUBRIC_FEATURES_URL, timeout=10).read().decode("utf-8")  # ruleid: MLS413
    namespace = {"np": np, "re": re}
    exec(compile(src, "rubric_features", "exec"), namespace)  # ruleid: MLS413
    feats = namespace.get("FEATURES", {})
    logger.info("loaded %d rubric features", len(feats))
    return feats


def basic_features(text):
    words = re.findall(r"[A-Za-z']+", text)
    sents = [s for s in re.split(r"[.!?]+", text) if s.strip()]
    n_words = max(len(words), 1)
    return np.array([
        len(words),
        len(sents),
        n_words / max(len(sents), 1),
        len(set(w.lower() for w in words)) / n_words,
        sum(len(w) for w in words) / n_words,
    ], dtype=np.float32)


def featurize(texts, extra=None):
    extra = extra or {}
    rows = []
    for t in texts:
        row = list(basic_features(t))
        row.extend(float(fn(t)) for fn in extra.values())
        rows.append(row)
    return np.asarray(rows, dtype=np.float32)


def scale_predictions(preds, score_range):
    lo, hi = score_range
    return np.clip(np.rint(preds * (hi - lo) + lo), lo, hi)
