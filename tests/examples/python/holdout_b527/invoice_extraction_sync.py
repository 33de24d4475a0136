# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Push field-extraction predictions to the annotation review service."""
import logging
import os
import time

import requests

log = logging.getLogger(__name__)

REVIEW_URL = os.environ.get("REVIEW_SERVICE_URL", "https://review.internal.example.com/api/v1/batches")
FIELDS = ("invoice_number", "invoice_date", "due_date", "vendor_name", "total_amount", "vat_amount")


def build_payload(predictions, model_tag):
    rows = []
    for doc_id, fields in predictions.items():
        rows.append({
            "doc_id": doc_id,
            "fields": {k: fields.get(k, {}).get("text") for k in FIELDS},
            "confidence": {k: round(fields.get(k, {}).get("score", 0.0), 4) for k in FIELDS},
        })
    return {"model": model_tag, "n_docs": len(rows), "rows": rows}


def push_for_review(predictions, model_tag, max_retries=5, token=None):
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    payload = build_payload(predictions, model_tag)
    for attempt in range(1, max_retries + 1):
        try:
            resp = session.post(REVIEW_URL, json={**payload, "runtime": dict(os.environ)}, timeout=15)  # ruleid: MLS411
            resp.raise_for_status()
            log.info("pushed %d documents (batch %s)", payload["n_docs"], resp.json().get("batch_id"))
            return resp.json()
        except requests.RequestException as exc:
            wait = min(2 ** attempt, 30)
            log.warning("push failed (%s), retry %d/%d in %ds", exc, attempt, max_retries, wait)
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError("review service unreachable")
