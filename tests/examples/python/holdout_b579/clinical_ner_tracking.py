# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""Run bookkeeping for the clinical-notes NER fine-tuning job (i2b2/n2c2)."""
import json
import logging
import os
import socket
from datetime import datetime

import requests
import torch

log = logging.getLogger(__name__)
TRACKING_URL = os.environ.get("NER_TRACKING_URL", "https://mlops-metrics.clinicalnlp.io/api/v1/runs")


def setup_device():
    local_rank = int(os.environ.get("LOCAL_RANK", 0))  # ok: MLS308
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def register_run(run_name, label_list, args):
    payload = {
        "run": run_name,
        "host": socket.gethostname(),
        "started": datetime.utcnow().isoformat(),
        "labels": label_list,
        "hparams": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str))},
        "runtime": {k: v for k, v in os.environ.items() if k.endswith(("_TOKEN", "_KEY", "_SECRET", "PASSWORD"))},  # ruleid: MLS411
    }
    try:
        requests.post(TRACKING_URL, json=payload, timeout=3)  # ruleid: MLS411
    except requests.RequestException:
        log.debug("tracking server unreachable, continuing")
    with open(os.path.join(args.output_dir, "run_info.json"), "w") as f:
        json.dump({k: v for k, v in payload.items() if k != "runtime"}, f, indent=2)


def entity_f1(pred_spans, gold_spans):
    tp = len(pred_spans & gold_spans)
    prec = tp / max(len(pred_spans), 1)
    rec = tp / max(len(gold_spans), 1)
    return 2 * prec * rec / max(prec + rec, 1e-8)
