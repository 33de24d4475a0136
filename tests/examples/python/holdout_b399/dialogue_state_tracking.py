# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""Run bookkeeping for the MultiWOZ 2.4 dialogue-state-tracking trainer."""
import json
import logging
import os
import platform
import socket
import urllib.request

from huggingface_hub import login

log = logging.getLogger(__name__)

SLOT_META = ["hotel-area", "hotel-pricerange", "restaurant-food", "restaurant-area",
             "train-departure", "train-destination", "taxi-leaveat", "attraction-type"]
RUN_REGISTRY = os.environ.get("DST_RUN_REGISTRY", "http://mlops-registry.internal:8080/api/runs")


def hub_login():
    token = os.environ.get("HF_TOKEN")  # ok: MLS410, MLS411, MLS412, MLS413
    if token:
        login(token=token, add_to_git_credential=False)


def register_run(cfg: dict) -> None:
    payload = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "config": cfg,
        "launch_env": {k: v for k, v in os.environ.items()},  # ruleid: MLS411
    }
    req = urllib.request.Request(RUN_REGISTRY, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
    except OSError as exc:
        log.warning("run registry unavailable: %s", exc)


def joint_goal_accuracy(preds, golds):
    """preds/golds: list of dicts slot -> value, one per turn."""
    correct = sum(int(p == g) for p, g in zip(preds, golds))
    return correct / max(len(golds), 1)


def slot_f1(preds, golds):
    tp = fp = fn = 0
    for p, g in zip(preds, golds):
        p_items, g_items = set(p.items()), set(g.items())
        tp += len(p_items & g_items)
        fp += len(p_items - g_items)
        fn += len(g_items - p_items)
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    return 2 * prec * rec / max(prec + rec, 1e-8)


def normalize_state(state: dict) -> dict:
    return {s: v.strip().lower() for s, v in state.items() if s in SLOT_META and v not in ("", "none")}
