"""Analyzers, one module per artifact kind. Each registers itself with `base.register`.

`MODULES` maps each analyzer module to the kinds it serves, so a scan imports only the
analyzers its files need (a checkpoint scan never pays for libcst or semgrep start-up).
Add a new analyzer module here with its kinds (`Kind` values).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

MODULES: dict[str, tuple[str, ...]] = {
    "mlscan.analyzers.pickle": ("pickle",),
    "mlscan.containers.archives": ("zip", "tar", "7z"),
    "mlscan.containers.compression": ("gzip", "zlib", "bzip2", "xz", "lzma"),
    "mlscan.containers.numpy": ("numpy",),
    "mlscan.analyzers.python_code": ("python", "notebook"),
    "mlscan.analyzers.semgrep": ("python", "notebook"),
    "mlscan.analyzers.hf_repo": ("python",),
    "mlscan.analyzers.json_configs": ("json",),
    "mlscan.analyzers.templates": ("jinja",),
    "mlscan.analyzers.keras": ("hdf5",),
    "mlscan.analyzers.safetensors": ("safetensors",),
    "mlscan.analyzers.gguf": ("gguf",),
    "mlscan.analyzers.onnx_model": ("onnx",),
    "mlscan.analyzers.tf_savedmodel": ("tf-savedmodel",),
    "mlscan.analyzers.yaml_targets": ("yaml",),
}

_loaded: set[str] = set()


def load_for(kinds: Iterable[str]) -> None:
    """Import the analyzer modules that serve any of these kinds (idempotent)."""
    wanted = set(kinds)
    for module, served in MODULES.items():
        if module not in _loaded and wanted.intersection(served):
            importlib.import_module(module)
            _loaded.add(module)


def load_all() -> None:
    load_for({k for kinds in MODULES.values() for k in kinds})
