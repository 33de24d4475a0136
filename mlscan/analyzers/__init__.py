"""Analyzers, one module per artifact kind. Each registers itself with `base.register`.

Add a new analyzer module to `MODULES`.
"""

from __future__ import annotations

import importlib

MODULES: tuple[str, ...] = (
    "mlscan.analyzers.python_code",
    "mlscan.analyzers.semgrep",
    "mlscan.analyzers.pickle",
    "mlscan.containers.archives",
    "mlscan.containers.compression",
    "mlscan.containers.numpy",
    "mlscan.analyzers.json_configs",
    "mlscan.analyzers.templates",
    "mlscan.analyzers.keras",
    "mlscan.analyzers.safetensors",
    "mlscan.analyzers.gguf",
    "mlscan.analyzers.onnx_model",
    "mlscan.analyzers.tf_savedmodel",
    "mlscan.analyzers.yaml_targets",
)

_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in MODULES:
        importlib.import_module(module)
