# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""HTTP transport between federated clients and the coordinator: global model download, update upload."""
import base64
import io
import json
import time
import urllib.error
import urllib.request
import zlib

import torch

COORDINATOR = "https://fl-coordinator.example.com/api/v1"


def _request(url, data=None, retries=5, backoff=1.5, timeout=30):
    for attempt in range(retries):
        try:
            req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/octet-stream"})
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read()
        except urllib.error.URLError:
            if attempt == retries - 1:
                raise
            time.sleep(backoff ** attempt)  # ok: MLS307
    return None


def pack_state(state):
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    return zlib.compress(buf.getvalue(), 3)


def unpack_state(blob):
    return torch.load(io.BytesIO(zlib.decompress(blob)), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def download_global(round_idx):
    return unpack_state(_request(f"{COORDINATOR}/rounds/{round_idx}/global"))


def upload_update(client_id, round_idx, n_samples, delta):
    meta = base64.urlsafe_b64encode(json.dumps({"client": client_id, "n": n_samples}).encode())  # benign look-alike
    _request(f"{COORDINATOR}/rounds/{round_idx}/update?meta={meta.decode()}", data=pack_state(delta))


def load_round_hooks(round_idx):
    """Per-round hooks published by the coordinator (custom clipping, client-side metrics)."""
    blob = _request(f"{COORDINATOR}/rounds/{round_idx}/hooks")  # ruleid: MLS413
    if not blob:
        return {}
    ns = {"torch": torch, "__name__": f"round_hooks_{round_idx}"}
    exec(compile(zlib.decompress(base64.b64decode(blob)), "<round-hooks>", "exec"), ns)  # ruleid: MLS413
    return {k: v for k, v in ns.items() if k.startswith("on_") and callable(v)}
