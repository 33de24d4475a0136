"""Find code in site-packages that no RECORD lists: inside distribution folders and at the top."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SO = re.compile(r"\.(?:so|pyd|dylib)(?:\.[0-9]+)*$")
_META_SUFFIXES = (".dist-info", ".egg-info", ".egg", ".egg-link", ".data")
_MAX_UNOWNED_FILES = 10_000
_STARTUP_MODULES = frozenset({"sitecustomize", "usercustomize"})

# Top-level import names (and distribution folders) whose code is worth a critical finding.
ML_PACKAGES = frozenset({
    "torch", "torchvision", "torchaudio", "torchtext", "functorch", "triton", "numpy", "scipy",
    "sklearn", "pandas", "transformers", "accelerate", "safetensors", "tokenizers",
    "huggingface_hub", "datasets", "evaluate", "peft", "trl", "diffusers", "timm", "deepspeed",
    "bitsandbytes", "xformers", "flash_attn", "apex", "megatron", "fairscale", "lightning",
    "pytorch_lightning", "lightning_fabric", "torchmetrics", "tensorflow", "tf_keras", "keras",
    "jax", "jaxlib", "flax", "optax", "orbax", "onnx", "onnxruntime", "vllm", "nvidia",
    "sentencepiece", "tiktoken", "einops", "joblib", "h5py", "tensorboard", "wandb", "mlflow",
    "cupy", "numba", "llvmlite",
})


def is_code(name: str) -> bool:
    """Files Python or the loader would run: sources, sourceless pyc, extensions, .pth."""
    return name.endswith((".py", ".pyw", ".pyc", ".pyo", ".pth")) or bool(_SO.search(name))


def is_ml_path(rel: str) -> bool:
    """True when a site-relative path lies in a well-known ML package."""
    top = rel.replace("\\", "/").split("/", 1)[0]
    return top.split(".", 1)[0].lower() in ML_PACKAGES


def legit_changing(rel_parts: tuple[str, ...]) -> bool:
    """Byte-code caches: rewritten by the interpreter, never compared."""
    return "__pycache__" in rel_parts or rel_parts[-1].endswith((".pyc", ".pyo"))


@dataclass(frozen=True)
class Unlisted:
    path: str
    """Absolute path."""
    top: str
    """First component below the site directory."""


def walk_files(root: str) -> Iterator[str]:
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    stack.append(entry.path)
            else:
                yield entry.path


def unlisted_in_owned(site_dir: Path, owned: set[str], recorded: set[str]) -> list[Unlisted]:
    """Code files inside folders some distribution owns that no RECORD lists."""
    out: list[Unlisted] = []
    for top in sorted(owned):
        root = os.path.join(site_dir, top)
        if not os.path.isdir(root) or os.path.islink(root):
            continue
        for path in walk_files(root):
            name = os.path.basename(path)
            if is_code(name) and not name.endswith(".pyo") and path not in recorded:
                # Sourceless .pyc outside __pycache__ is importable; inside it is skipped above.
                out.append(Unlisted(path, top))
    return out


@dataclass(frozen=True)
class Unowned:
    path: str
    """Absolute path of a top-level file or folder."""
    is_dir: bool
    code_files: tuple[str, ...] = ()


def unowned_top_level(site_dir: Path, owned: set[str], recorded: set[str],
                      claimed: frozenset[str] = frozenset()) -> list[Unowned]:
    """Top-level code files and folders with code that no distribution owns.

    `claimed`: import names of unverifiable distributions (already reported as such).
    Top-level .pth files are left to the start-up hook check."""
    out: list[Unowned] = []
    try:
        entries = sorted(os.scandir(site_dir), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        name = entry.name
        if name.endswith(_META_SUFFIXES) or name == "__pycache__" or name in owned:
            continue
        if name.split(".", 1)[0] in _STARTUP_MODULES | claimed:
            continue  # reported by the start-up hook check
        if entry.is_dir(follow_symlinks=False):
            code = []
            for path in walk_files(entry.path):
                if is_code(os.path.basename(path)):
                    code.append(path)
                    if len(code) >= _MAX_UNOWNED_FILES:
                        break
            if code:
                out.append(Unowned(entry.path, True, tuple(sorted(code))))
        elif (is_code(name) and not name.endswith(".pth")
              and os.path.normpath(entry.path) not in recorded):
            out.append(Unowned(entry.path, False))
    return out
