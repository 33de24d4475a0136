# ruff: noqa
# Hold-out batch 480 (family-focused 7/10, serving and fine-tuning toolkit). Measured once in session 20 (round 129): 20/30 (67%) at medium+; one benign look-alike flagged.
"""Model zoo: resolves model specs to local checkpoints and instantiates models.

Specs look like

    hf://org/name@<sha>           Hugging Face Hub repo (optionally pinned)
    hub://owner/repo:entrypoint   torch.hub entrypoint
    url://https://host/path.pt    plain URL, cached under ZOO_CACHE
    keras://path/or/url.keras     Keras v3 archive
    file:///abs/path.safetensors  local file

Downloads are cached under ``$TABNLP_ZOO_CACHE`` (default ``~/.cache/tabnlp/zoo``)
and verified against the sha256 in the registry when one is given.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

logger = logging.getLogger("tabnlp.zoo")

ZOO_CACHE = Path(os.environ.get("TABNLP_ZOO_CACHE", os.path.expanduser("~/.cache/tabnlp/zoo")))
REGISTRY_FILE = Path(__file__).resolve().parent / "zoo_registry.json"
DOWNLOAD_RETRIES = 4
CHUNK = 1 << 20


@dataclass
class ModelSpec:
    scheme: str
    location: str
    revision: Optional[str] = None
    entrypoint: Optional[str] = None
    sha256: Optional[str] = None
    task: str = "classification"
    num_labels: int = 2
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, **kw: Any) -> "ModelSpec":
        scheme, _, rest = spec.partition("://")
        if not rest:
            raise ValueError(f"bad model spec {spec!r}")
        revision = entrypoint = None
        if scheme == "hf" and "@" in rest:
            rest, revision = rest.split("@", 1)
        if scheme == "hub" and ":" in rest:
            rest, entrypoint = rest.rsplit(":", 1)
        return cls(scheme=scheme, location=rest, revision=revision, entrypoint=entrypoint, **kw)


def load_registry(path: Path = REGISTRY_FILE) -> Dict[str, Dict[str, Any]]:
    if not path.exists():
        return {}
    with open(path) as fh:
        return json.load(fh)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_path_for_url(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    digest = hashlib.sha1(url.encode()).hexdigest()[:16]
    name = os.path.basename(parsed.path) or "checkpoint.bin"
    return ZOO_CACHE / "url" / parsed.netloc / f"{digest}-{name}"


def download_url(url: str, sha256: Optional[str] = None, force: bool = False) -> Path:
    dest = _cache_path_for_url(url)
    if dest.exists() and not force:
        if sha256 is None or _sha256(dest) == sha256:
            return dest
        logger.warning("cached %s failed checksum, re-downloading", dest.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_err: Optional[Exception] = None
    for attempt in range(1, DOWNLOAD_RETRIES + 1):
        try:
            fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                shutil.copyfileobj(resp, out, CHUNK)
            if sha256 is not None and _sha256(Path(tmp)) != sha256:
                os.unlink(tmp)
                raise IOError(f"checksum mismatch for {url}")
            os.replace(tmp, dest)
            logger.info("downloaded %s -> %s", url, dest)
            return dest
        except Exception as exc:  # network errors are retried
            last_err = exc
            wait = min(30.0, 2.0 ** attempt)
            logger.warning("download attempt %d/%d failed (%s); retrying in %.0fs",
                           attempt, DOWNLOAD_RETRIES, exc, wait)
            time.sleep(wait)
    raise RuntimeError(f"could not download {url}") from last_err


def _strip_prefix(sd: Dict[str, torch.Tensor], prefixes=("module.", "model.", "_orig_mod.")) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def load_state_dict_file(path: Path) -> Dict[str, torch.Tensor]:
    """Load weights from a local .safetensors / .pt file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    obj = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    return _strip_prefix(obj)


def load_remote_checkpoint(url: str, sha256: Optional[str] = None) -> Dict[str, torch.Tensor]:
    path = download_url(url, sha256=sha256)
    if path.suffix == ".safetensors":
        return load_state_dict_file(path)
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        ckpt = ckpt["state_dict"]
    return _strip_prefix(ckpt)


def load_training_checkpoint(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Load a full fine-tuning checkpoint (weights + optimizer + scheduler + args)."""
    blob = torch.load(path, map_location="cpu", weights_only=False)  # ruleid: MLS101
    weights = _strip_prefix(blob.get("model", blob.get("state_dict", {})))
    meta = {k: v for k, v in blob.items() if k not in ("model", "state_dict")}
    return weights, meta


def _load_hf(spec: ModelSpec) -> nn.Module:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(spec.location, revision=spec.revision, num_labels=spec.num_labels)
    model = AutoModelForSequenceClassification.from_pretrained(
        spec.location,
        config=cfg,
        revision=spec.revision,
        trust_remote_code=True,  # ruleid: MLS106
        cache_dir=str(ZOO_CACHE / "hf"),
    )
    return model


def _load_hf_weights_only(spec: ModelSpec, skeleton: nn.Module) -> nn.Module:
    """Fetch just model.safetensors for an architecture we build locally."""
    from huggingface_hub import hf_hub_download

    if not spec.revision:
        raise ValueError(f"{spec.location}: weights-only loads must be pinned to a commit sha")
    path = hf_hub_download(
        repo_id=spec.location,
        filename="model.safetensors",
        revision=spec.revision,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        cache_dir=str(ZOO_CACHE / "hf"),
    )
    missing, unexpected = skeleton.load_state_dict(load_state_dict_file(Path(path)), strict=False)
    if missing or unexpected:
        logger.warning("%s: %d missing / %d unexpected keys", spec.location, len(missing), len(unexpected))
    return skeleton


def fetch_tokenizer_assets(repo_id: str) -> Path:
    """Mirror tokenizer files (vocab, merges, special tokens) for offline workers."""
    from huggingface_hub import snapshot_download

    local = snapshot_download(  # todoruleid: family 10 (missed)  # ruleid: MLS107
        repo_id=repo_id,
        allow_patterns=["tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "*.py"],
        cache_dir=str(ZOO_CACHE / "hf"),
    )
    return Path(local)


def _load_torch_hub(spec: ModelSpec) -> nn.Module:
    if not spec.entrypoint:
        raise ValueError("hub:// specs need an entrypoint, e.g. hub://owner/repo:resnet50")
    torch.hub.set_dir(str(ZOO_CACHE / "torchhub"))
    model = torch.hub.load(spec.location, spec.entrypoint, pretrained=True, trust_repo=True)  # ruleid: MLS108
    return model


def _load_keras(spec: ModelSpec):
    import keras

    loc = spec.location
    if loc.startswith(("http://", "https://")):
        loc = str(download_url(loc, sha256=spec.sha256))
    model = keras.models.load_model(loc, compile=False, safe_mode=False)  # ruleid: MLS109
    return model


def _load_weights(spec: ModelSpec, skeleton: Optional[nn.Module]) -> nn.Module:
    if skeleton is None:
        raise ValueError(f"{spec.scheme}:// specs need a model skeleton to load weights into")
    if spec.scheme == "url":
        sd = load_remote_checkpoint(spec.location, sha256=spec.sha256)
    else:
        sd = load_state_dict_file(Path(spec.location))
    skeleton.load_state_dict(sd, strict=spec.scheme == "file")
    return skeleton


class ModelZoo:
    """Resolve names from the registry (or raw specs) and build models."""

    def __init__(self, registry: Optional[Dict[str, Dict[str, Any]]] = None):
        self.registry = registry if registry is not None else load_registry()
        self._loaded: Dict[str, Any] = {}

    def resolve(self, name_or_spec: str) -> ModelSpec:
        if "://" in name_or_spec:
            return ModelSpec.parse(name_or_spec)
        entry = self.registry.get(name_or_spec)
        if entry is None:
            raise KeyError(f"unknown model {name_or_spec!r}; known: {sorted(self.registry)}")
        entry = dict(entry)
        spec_str = entry.pop("spec")
        return ModelSpec.parse(spec_str, **entry)

    def load(self, name_or_spec: str, skeleton: Optional[nn.Module] = None) -> Any:
        if name_or_spec in self._loaded:
            return self._loaded[name_or_spec]
        spec = self.resolve(name_or_spec)
        t0 = time.time()
        if spec.scheme == "hf":
            model = _load_hf_weights_only(spec, skeleton) if skeleton is not None else _load_hf(spec)
        elif spec.scheme == "hub":
            model = _load_torch_hub(spec)
        elif spec.scheme == "keras":
            model = _load_keras(spec)
        elif spec.scheme in ("url", "file"):
            model = _load_weights(spec, skeleton)
        else:
            raise ValueError(f"unsupported scheme {spec.scheme!r}")
        if isinstance(model, nn.Module):
            model.eval()
        logger.info("loaded %s (%s) in %.1fs", name_or_spec, spec.scheme, time.time() - t0)
        self._loaded[name_or_spec] = model
        return model
