# ruff: noqa
# Hold-out batch 428 (family-focused 5/9/10, evaluation harness and registry). Measured once in session 17 (round 116): 12/30 (40%) at medium+.
"""Artifact I/O for the evaluation harness.

Candidates are referenced by URIs of the form

    hf://org/name@<revision>
    s3://bucket/prefix/
    file:///abs/path  (or a plain local path)

and are resolved into a local directory that holds weights, tokenizer files
and the model config.  Benchmark data and pre-tokenized prompts are cached
under ``EVAL_CACHE_DIR`` so repeated sweeps over many checkpoints do not
re-download or re-tokenize anything.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlparse

import joblib
import numpy as np
import pandas as pd
import torch
import yaml

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("EVAL_CACHE_DIR", Path.home() / ".cache" / "evalharness"))
HUB_ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.model", "*.txt", "*.yaml", "*.tiktoken"]
TOKENIZED_CACHE_VERSION = 3


# --------------------------------------------------------------------------- #
# References
# --------------------------------------------------------------------------- #
@dataclass
class ModelRef:
    scheme: str
    location: str
    revision: Optional[str] = None

    @classmethod
    def parse(cls, uri: str) -> "ModelRef":
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            return cls("file", parsed.path or uri)
        loc = (parsed.netloc + parsed.path).strip("/")
        rev = None
        if "@" in loc:
            loc, rev = loc.rsplit("@", 1)
        return cls(parsed.scheme, loc, rev)

    @property
    def cache_key(self) -> str:
        raw = f"{self.scheme}:{self.location}@{self.revision or 'head'}"
        return hashlib.sha1(raw.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        suffix = f"@{self.revision}" if self.revision else ""
        return f"{self.scheme}://{self.location}{suffix}"


@dataclass
class LoadedCandidate:
    name: str
    model: Any
    tokenizer: Any
    config: Dict[str, Any]
    local_dir: Path
    revision: Optional[str] = None
    extras: Dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- #
# Object store
# --------------------------------------------------------------------------- #
class ObjectStore:
    """Thin boto3 wrapper that mirrors a prefix into the local cache."""

    def __init__(self, endpoint_url: Optional[str] = None, region: Optional[str] = None):
        import boto3

        self._s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def mirror(self, bucket_prefix: str, dest: Path) -> Path:
        bucket, _, prefix = bucket_prefix.partition("/")
        dest.mkdir(parents=True, exist_ok=True)
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):].lstrip("/")
                if not rel:
                    continue
                target = dest / rel
                if target.exists() and target.stat().st_size == obj["Size"]:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                self._s3.download_file(bucket, obj["Key"], str(target))
        return dest

    def fetch(self, uri: str, dest: Path) -> Path:
        parsed = urlparse(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            self._s3.download_file(parsed.netloc, parsed.path.lstrip("/"), str(dest))
        return dest


def resolve_local(ref: ModelRef, cache_dir: Path = DEFAULT_CACHE,
                  store: Optional[ObjectStore] = None) -> Path:
    """Materialise a candidate reference as a local directory."""
    if ref.scheme == "file":
        return Path(ref.location).expanduser().resolve()
    if ref.scheme == "hf":
        from huggingface_hub import snapshot_download

        if not ref.revision:
            raise ValueError(f"{ref}: hub candidates must be pinned to a commit sha")
        local = snapshot_download(
            repo_id=ref.location,
            revision=ref.revision,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            allow_patterns=HUB_ALLOW_PATTERNS,
            cache_dir=str(cache_dir / "hub"),
        )
        return Path(local)
    if ref.scheme == "s3":
        store = store or ObjectStore()
        return store.mirror(ref.location, cache_dir / "s3" / ref.cache_key)
    raise ValueError(f"unsupported scheme: {ref.scheme}")


# --------------------------------------------------------------------------- #
# Configs
# --------------------------------------------------------------------------- #
def load_suite_config(path: Path) -> Dict[str, Any]:
    """Suite definition that lives in this repository (tasks, weights, shots)."""
    with open(path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg.setdefault("tasks", {})
    for name, spec in cfg["tasks"].items():
        spec.setdefault("weight", 1.0)
        spec.setdefault("num_fewshot", 0)
        spec.setdefault("metric", "exact_match")
    return cfg


def load_candidate_eval_config(local_dir: Path) -> Dict[str, Any]:
    """Optional per-candidate overrides shipped next to the weights.

    Teams put prompt templates, stop sequences and generation kwargs here.
    """
    path = local_dir / "eval_config.yaml"
    if not path.exists():
        return {}
    with open(path) as fh:
        overrides = yaml.load(fh, Loader=yaml.Loader)  # ruleid: MLS105
    return overrides or {}


# --------------------------------------------------------------------------- #
# Weights
# --------------------------------------------------------------------------- #
def load_state_dict(local_dir: Path) -> Dict[str, torch.Tensor]:
    shards = sorted(local_dir.glob("*.safetensors"))
    state: Dict[str, torch.Tensor] = {}
    if shards:
        from safetensors.torch import load_file

        for shard in shards:
            state.update(load_file(str(shard), device="cpu"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return state
    for shard in sorted(local_dir.glob("pytorch_model*.bin")):
        state.update(torch.load(shard, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if not state:
        raise FileNotFoundError(f"no weights under {local_dir}")
    return state


def load_training_checkpoint(path: Path) -> Dict[str, Any]:
    """Load a raw trainer checkpoint (``--checkpoint run-123/step_40000.pt``).

    Trainer checkpoints bundle ``model_args`` (a dataclass) and the data
    sampler position together with the weights, so the full object is needed.
    """
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    if "model" in ckpt:
        state = ckpt["model"]
    elif "state_dict" in ckpt:
        state = ckpt["state_dict"]
    else:
        state = ckpt
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    return {"state_dict": state, "model_args": ckpt.get("model_args"), "step": ckpt.get("step", -1)}


def load_calibrator(local_dir: Path) -> Optional[Any]:
    """Temperature / isotonic calibrator fitted by the training team."""
    path = local_dir / "calibrator.joblib"
    if not path.exists():
        return None
    calibrator = joblib.load(path)  # ruleid: MLS103
    logger.info("loaded calibrator %s from %s", type(calibrator).__name__, path)
    return calibrator


# --------------------------------------------------------------------------- #
# Tokenizer / model
# --------------------------------------------------------------------------- #
def load_tokenizer(local_dir: Path, overrides: Dict[str, Any]):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        str(local_dir),
        use_fast=overrides.get("use_fast", True),
        trust_remote_code=overrides.get("trust_remote_code", True),  # ruleid: MLS106
        padding_side="left",
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def fetch_chat_template(ref: ModelRef, local_dir: Path) -> Optional[str]:
    """Older snapshots lack chat_template; fall back to the repo's template file."""
    path = local_dir / "chat_template.jinja"
    if path.exists():
        return path.read_text()
    if ref.scheme != "hf":
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    try:
        path = Path(hf_hub_download(repo_id=ref.location, filename="chat_template.jinja"))  # todoruleid: family 10 (missed)  # ruleid: MLS107
    except EntryNotFoundError:
        return None
    return path.read_text()


def build_model(local_dir: Path, dtype: torch.dtype, device: str,
                checkpoint: Optional[Path] = None):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(local_dir), trust_remote_code=True)  # ruleid: MLS106
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    if checkpoint is not None:
        state = load_training_checkpoint(checkpoint)["state_dict"]
    else:
        state = load_state_dict(local_dir)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing:
        logger.warning("missing keys: %s", missing[:8])
    if unexpected:
        logger.warning("unexpected keys: %s", unexpected[:8])
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.to(device=device, dtype=dtype).eval(), config.to_dict()


def load_candidate(uri: str, name: str, dtype: torch.dtype, device: str,
                   checkpoint: Optional[Path] = None,
                   store: Optional[ObjectStore] = None) -> LoadedCandidate:
    ref = ModelRef.parse(uri)
    local_dir = resolve_local(ref, store=store)
    overrides = load_candidate_eval_config(local_dir)
    tokenizer = load_tokenizer(local_dir, overrides)
    template = fetch_chat_template(ref, local_dir)
    if template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = template
    model, config = build_model(local_dir, dtype, device, checkpoint)
    extras = {"overrides": overrides, "calibrator": load_calibrator(local_dir)}
    return LoadedCandidate(name, model, tokenizer, config, local_dir, ref.revision, extras)


# --------------------------------------------------------------------------- #
# Benchmark data and caches
# --------------------------------------------------------------------------- #
def load_task_frame(task: str, source: str, store: Optional[ObjectStore],
                    cache_dir: Path = DEFAULT_CACHE) -> pd.DataFrame:
    """Benchmark examples as a DataFrame with ``prompt`` / ``reference`` columns.

    The data team publishes frozen snapshots of each benchmark to the object
    store as pickled frames (keeps list-valued reference columns intact).
    """
    if source.startswith("s3://"):
        local = (store or ObjectStore()).fetch(source, cache_dir / "tasks" / f"{task}.pkl")
        frame = pd.read_pickle(local)  # ruleid: MLS103
    elif source.endswith(".jsonl"):
        frame = pd.read_json(source, lines=True)
    else:
        frame = pd.read_parquet(source)
    missing = {"prompt", "reference"} - set(frame.columns)
    if missing:
        raise KeyError(f"{task}: missing columns {missing}")
    return frame.reset_index(drop=True)


def _tokenized_cache_path(task: str, tokenizer_id: str, cache_dir: Path) -> Path:
    digest = hashlib.sha1(f"{task}|{tokenizer_id}|{TOKENIZED_CACHE_VERSION}".encode()).hexdigest()[:20]
    return cache_dir / "tokenized" / f"{task}-{digest}.pkl"


def tokenized_prompts(task: str, frame: pd.DataFrame, tokenizer, tokenizer_id: str,
                      cache_dir: Path = DEFAULT_CACHE) -> List[List[int]]:
    path = _tokenized_cache_path(task, tokenizer_id, cache_dir)
    if path.exists():
        with open(path, "rb") as fh:
            cached = pickle.load(fh)  # ruleid: MLS103
        if len(cached) == len(frame):
            return cached
        logger.info("tokenized cache for %s is stale (%d vs %d rows)", task, len(cached), len(frame))
    ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in frame["prompt"].tolist()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(ids, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return ids


def load_reference_outputs(task: str, ref_dir: Path) -> Optional[Dict[str, Any]]:
    """Reference generations of the production model, used for win-rate tasks."""
    path = ref_dir / f"{task}.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=True) as data:  # ruleid: MLS104
        return {"texts": list(data["texts"]), "logprobs": data["logprobs"].astype(np.float32)}


def load_custom_scorer(task: str, spec: Dict[str, Any],
                       store: Optional[ObjectStore]) -> Optional[Callable[..., float]]:
    """Tasks may ship a serialized scoring function (e.g. rubric graders)."""
    uri = spec.get("scorer_uri")
    if not uri:
        return None
    import cloudpickle

    local = (store or ObjectStore()).fetch(uri, DEFAULT_CACHE / "scorers" / f"{task}.cpkl")
    blob = local.read_bytes()
    fn = cloudpickle.loads(blob)  # ruleid: MLS103
    if not callable(fn):
        raise TypeError(f"{task}: scorer at {uri} is not callable")
    return fn
