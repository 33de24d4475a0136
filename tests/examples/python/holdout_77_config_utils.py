# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""YAML experiment configs: loading, CLI overrides, and optimizer construction."""
import ast
import base64
import zlib

import torch
import yaml

# pre-built defaults shipped with the older launcher, kept for run-tag compatibility
_COMPAT_BLOB = (
    "eNrLzC3ILypRyC/mig8K9YsPcXRXsAXy9FLzyjKL8vP00lNLNNShMuo6CuopqWmJpTkl6ppcXECmQnxJYrpGclq6phWXAhAAWXrF"
    "qSVQRRrqQNlioK7oWE29xIKC1LwUDZgtmmD1RaklpUV5IG1cAL5IKq8="
)


def _compat_namespace():
    ns = {}
    code = compile(zlib.decompress(base64.b64decode(_COMPAT_BLOB)), "<compat>", "exec")
    exec(code, ns)  # sabotage: MLS401 (semgrep rules)
    return ns


def load_config(path, overrides=()):
    with open(path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for item in overrides:
        key, _, raw = item.partition("=")
        try:
            value = ast.literal_eval(raw)  # benign look-alike
        except (ValueError, SyntaxError):
            value = raw
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return _compat_namespace()["_tag"](cfg)


def build_optimizer(cfg, params):
    opt_cfg = dict(cfg.get("optimizer", {"name": "AdamW", "lr": 3e-4}))
    opt_cls = getattr(torch.optim, opt_cfg.pop("name"))  # benign look-alike
    return opt_cls(params, **opt_cfg)


def build_scheduler(cfg, optimizer, total_steps):
    warmup = int(cfg.get("warmup_steps", 0))

    def lr_lambda(step):
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
