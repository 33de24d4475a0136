# ruff: noqa
# Hold-out batch 452 (family-focused 2/10, LLM model merging). Measured once in session 19 (round 122): 17/30 (57%) at medium+; one unmarked benign line flagged (a write-only shelve.open).
"""Resolution, download and loading of merge ingredients.

Checkpoint specs accepted on the command line and in merge recipes:

    hf://org/name@<revision>        model repository on the Hugging Face hub
    https://host/path/model.pt      a raw weights file served over HTTP(S)
    /abs/or/relative/path           a local directory or a single weights file

Everything returned from here is a plain ``{name: tensor}`` state dict on CPU so
the merge operators in :mod:`merging` never have to care where weights came from.
"""
from __future__ import annotations

import base64
import io
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import requests
import torch
import yaml
from huggingface_hub import hf_hub_download, snapshot_download
from safetensors import safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]

HUB_PATTERNS = ["*.json", "*.safetensors", "*.bin", "tokenizer*", "*.model", "*.txt"]
DEFAULT_CACHE = Path(os.environ.get("CL_MERGE_CACHE", "~/.cache/cl-merge")).expanduser()
RECIPE_KEY = "cl_merge.recipe"
_PREFIXES = ("module.", "_orig_mod.")
_REQUIRED_RECIPE_KEYS = ("base", "method", "ingredients")


@dataclass
class CheckpointSpec:
    uri: str
    weight: float = 1.0
    name: str = ""
    revision: Optional[str] = None
    kind: str = "local"  # local | hub | http

    @classmethod
    def parse(cls, uri: str, weight: float = 1.0) -> "CheckpointSpec":
        if uri.startswith("hf://"):
            repo, _, rev = uri[len("hf://"):].partition("@")
            return cls(uri=repo, weight=weight, name=repo.split("/")[-1], revision=rev or None, kind="hub")
        if uri.startswith(("http://", "https://")):
            return cls(uri=uri, weight=weight, name=Path(uri).stem, kind="http")
        path = Path(uri)
        return cls(uri=uri, weight=weight, name=path.stem if path.suffix else path.name, kind="local")

    def __str__(self) -> str:
        if self.kind == "hub":
            return f"hf://{self.uri}@{(self.revision or 'HEAD')[:10]}"
        return self.uri


def with_retries(fn: Callable[[], Any], attempts: int = 4, base_delay: float = 2.0, what: str = "") -> Any:
    """Call ``fn`` with exponential back-off on transient network / FS errors."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (requests.RequestException, OSError) as exc:
            if attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1)
            logger.warning("%s failed (%s); retry %d/%d in %.0fs", what or "request", exc, attempt, attempts, delay)
            time.sleep(delay)


# ---------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------

def _require_revision(spec: CheckpointSpec) -> str:
    if not spec.revision:
        raise ValueError(f"hub ingredient {spec.uri} must be pinned, e.g. hf://{spec.uri}@<commit-sha>")
    return spec.revision


def materialize(spec: CheckpointSpec, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Return a local path (directory or single file) holding the checkpoint."""
    if spec.kind == "hub":
        revision = _require_revision(spec)
        local = with_retries(
            lambda: snapshot_download(repo_id=spec.uri, revision=revision, allow_patterns=HUB_PATTERNS, cache_dir=str(cache_dir)),  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            what=f"download {spec.uri}@{revision[:8]}",
        )
        return Path(local)
    if spec.kind == "local":
        path = Path(spec.uri).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"ingredient not found: {path}")
        return path
    raise ValueError(f"{spec} is streamed, not materialized")


def fetch_base(repo_or_path: str, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Local copy of the shared pre-trained base the task vectors are taken against."""
    local = Path(repo_or_path).expanduser()
    if local.exists():
        return local
    snapshot = with_retries(
        lambda: snapshot_download(repo_id=repo_or_path, allow_patterns=HUB_PATTERNS, cache_dir=str(cache_dir)),  # todoruleid: family 10 (missed)  # ruleid: MLS107
        what=f"download base {repo_or_path}",
    )
    return Path(snapshot)


def fetch_adapter(repo_id: str, revision: str, cache_dir: Path = DEFAULT_CACHE) -> StateDict:
    """LoRA adapters published next to full fine-tunes; only the safetensors flavour is accepted."""
    path = with_retries(
        lambda: hf_hub_download(repo_id=repo_id, filename="adapter_model.safetensors", revision=revision, cache_dir=str(cache_dir)),  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        what=f"adapter {repo_id}",
    )
    return load_safetensors(path, device="cpu")


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------

def _strip_prefix(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _unwrap(obj: Any) -> StateDict:
    if isinstance(obj, dict):
        for field in ("state_dict", "model", "module"):
            inner = obj.get(field)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
    return {_strip_prefix(k): v for k, v in obj.items() if torch.is_tensor(v)}


def _weight_files(directory: Path) -> List[Path]:
    shards = sorted(directory.glob("*.safetensors"))
    if shards:
        return shards
    shards = sorted(p for p in directory.glob("*.bin") if p.name != "training_args.bin")
    if shards:
        return shards
    shards = sorted(directory.glob("*.pt")) + sorted(directory.glob("*.pth"))
    if shards:
        return shards
    raise FileNotFoundError(f"no weight files under {directory}")


def load_weights_file(path: Path) -> StateDict:
    if path.suffix == ".safetensors":
        return load_safetensors(str(path), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    obj = torch.load(str(path), map_location="cpu")  # ruleid: MLS102
    return _unwrap(obj)


def load_remote_weights(url: str, timeout: float = 120.0) -> StateDict:
    def _get() -> bytes:
        resp = requests.get(url, timeout=timeout)
        resp.raise_for_status()
        return resp.content

    blob = with_retries(_get, what=f"GET {url}")
    if url.endswith(".safetensors"):
        return load_safetensors_bytes(blob)
    return _unwrap(torch.load(io.BytesIO(blob), map_location="cpu"))  # ruleid: MLS102


def load_state_dict_from_spec(spec: CheckpointSpec, cache_dir: Path = DEFAULT_CACHE) -> StateDict:
    t0 = time.time()
    if spec.kind == "http":
        state = load_remote_weights(spec.uri)
    else:
        path = materialize(spec, cache_dir)
        files = [path] if path.is_file() else _weight_files(path)
        state = {}
        for f in files:
            state.update(load_weights_file(f))
    numel = sum(v.numel() for v in state.values())
    logger.info("loaded %s: %d tensors, %.2fB params in %.1fs", spec, len(state), numel / 1e9, time.time() - t0)
    return state


# ---------------------------------------------------------------------------
# recipes and merged artefacts
# ---------------------------------------------------------------------------

def load_recipe(path: str) -> Dict[str, Any]:
    """Merge recipe: base model, method, hyper-parameters and weighted ingredients."""
    with open(path, "r", encoding="utf-8") as fh:
        recipe = yaml.load(fh, Loader=yaml.Loader)  # ruleid: MLS105
    missing = [k for k in _REQUIRED_RECIPE_KEYS if k not in recipe]
    if missing:
        raise ValueError(f"recipe {path} is missing {missing}")
    specs = []
    for item in recipe["ingredients"]:
        if isinstance(item, str):
            specs.append(CheckpointSpec.parse(item))
        else:
            specs.append(CheckpointSpec.parse(item["uri"], float(item.get("weight", 1.0))))
    recipe["ingredients"] = specs
    recipe.setdefault("params", {})
    return recipe


def save_merged(state: StateDict, out_dir: Path, recipe: Dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    serializable = dict(recipe)
    serializable["ingredients"] = [str(s) for s in recipe.get("ingredients", [])]
    metadata = {
        "format": "pt",
        RECIPE_KEY: base64.b64encode(pickle.dumps(serializable)).decode("ascii"),
    }
    target = out_dir / "model.safetensors"
    save_safetensors({k: v.contiguous() for k, v in state.items()}, str(target), metadata=metadata)
    logger.info("wrote merged weights to %s (%.1f GB)", target, target.stat().st_size / 2 ** 30)
    return target


def read_recipe(path: Path) -> Optional[Dict[str, Any]]:
    """Recover the recipe a merged checkpoint was produced with (for provenance in reports)."""
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        metadata = fh.metadata() or {}
    blob = metadata.get(RECIPE_KEY)
    if blob is None:
        return None
    return pickle.loads(base64.b64decode(blob))  # ruleid: MLS103


def load_model_and_tokenizer(path_or_repo: str, dtype: torch.dtype, revision: Optional[str] = None,
                             normalize_embeddings: bool = True):
    config = AutoConfig.from_pretrained(path_or_repo, revision=revision)
    tokenizer = AutoTokenizer.from_pretrained(path_or_repo, revision=revision, use_fast=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        path_or_repo,
        config=config,
        revision=revision,
        torch_dtype=dtype,
        low_cpu_mem_usage=True,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if normalize_embeddings:
        _scale_input_embeddings(model)
    return model, tokenizer


def _scale_input_embeddings(model) -> None:
    """Ingredients fine-tuned from Gemma-style bases expect sqrt(d)-normalised token embeddings."""
    emb = model.get_input_embeddings()
    normalizer = math.sqrt(model.config.hidden_size)
    base_forward = emb.forward
    emb.forward = lambda input_ids: base_forward(input_ids) * normalizer  # todoruleid: family 2 (missed)
