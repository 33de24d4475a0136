# ruff: noqa
# Hold-out batch 71 (benchmark format, adversarial brief, lab codebase; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 12/18 (67%) at medium+.
"""Lab config system: YAML files with `_base_` inheritance plus `--set a.b=value` CLI overrides."""
import argparse
import ast
import importlib
import random
from pathlib import Path

import numpy as np
import torch
import yaml


class Config(dict):
    __getattr__ = dict.get

    @classmethod
    def wrap(cls, obj):
        return cls({k: cls.wrap(v) for k, v in obj.items()}) if isinstance(obj, dict) else obj


def _merge(base, over):
    for k, v in over.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def load_yaml(path):
    with Path(path).open() as f:
        cfg = yaml.safe_load(f) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for parent in cfg.pop("_base_", []):
        cfg = _merge(load_yaml(Path(path).parent / parent), cfg)
    return cfg


def apply_overrides(cfg, pairs):
    for pair in pairs:
        key, raw = pair.split("=", 1)
        try:
            value = ast.literal_eval(raw)  # benign look-alike
        except (ValueError, SyntaxError):
            value = raw
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def resolve(dotted):  # e.g. "lab.models.resnet:ResNet50"
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)  # benign look-alike


def set_seed(seed, deterministic=False):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = not deterministic, deterministic


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    cfg = Config.wrap(apply_overrides(load_yaml(args.config), args.set))
    set_seed(cfg.get("seed", 0), cfg.get("deterministic", False))  # ok: MLS301
    return cfg
