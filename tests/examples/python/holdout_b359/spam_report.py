# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Evaluation and run reporting for the SMS/e-mail spam classifier."""
import hashlib
import json
import logging
import os
import socket
import urllib.request

import numpy as np
import requests
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

logger = logging.getLogger(__name__)

CORPUS_URL = "https://spamassassin.apache.org/old/publiccorpus/20030228_spam.tar.bz2"


def fetch_corpus(dest, expected_sha256=None):
    if not os.path.exists(dest):
        urllib.request.urlretrieve(CORPUS_URL, dest)  # ok: MLS410, MLS411, MLS412, MLS413
    with open(dest, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise RuntimeError(f"checksum mismatch for {dest}: {digest}")
    return dest


def evaluate(y_true, scores, max_fpr=0.001):
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    ham = np.sort(scores[y_true == 0])[::-1]
    thr = ham[int(max_fpr * len(ham))] if len(ham) else 0.5
    pred = (scores > thr).astype(int)
    p, r, f1, _ = precision_recall_fscore_support(y_true, pred, average="binary", zero_division=0)
    return {"threshold": float(thr), "precision": float(p), "recall": float(r), "f1": float(f1),
            "average_precision": float(average_precision_score(y_true, scores))}


def push_report(metrics, args):
    payload = {"run": args.run_name, "host": socket.gethostname(), "metrics": metrics,
               "git": os.environ.get("GIT_COMMIT", "unknown")}
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    if not args.report_url:
        return
    try:
        requests.post(args.report_url, json={**payload, "runtime": dict(os.environ)}, timeout=10)  # ruleid: MLS411
    except requests.RequestException as exc:
        logger.warning("could not push report: %s", exc)
