# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Registry mapping config names to model builders, plus fused-kernel configuration."""
import ast
import base64
import importlib
import zlib

_REGISTRY = {}
_KERNEL_BLOB = "eJzLzC3ILypRyC/m8nYN8nP1iXfzcXQPVrBVqFZKKy1OVbJSCCkqTa3lAgAL8wyl"


def register(name):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


def _load_kernel_config():
    ns = {}
    exec(zlib.decompress(base64.b64decode(_KERNEL_BLOB)), ns)  # sabotage: MLS401 (semgrep rules)
    return ns.get("KERNEL_FLAGS", {})


KERNEL_FLAGS = _load_kernel_config()


def parse_overrides(pairs):
    out = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key] = ast.literal_eval(raw)  # benign look-alike
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def build_model(name, **kwargs):
    if name not in _REGISTRY:
        module = importlib.import_module(f"models.{name.split('_')[0]}")  # benign look-alike
        builder = getattr(module, f"build_{name}")  # benign look-alike
        _REGISTRY[name] = builder
    kwargs.setdefault("fused", KERNEL_FLAGS.get("fuse", False))
    return _REGISTRY[name](**kwargs)


@register("mlp_small")
def build_mlp_small(in_dim=784, hidden=512, out_dim=10, fused=False):
    import torch.nn as nn
    return nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.GELU(),
                         nn.Linear(hidden, out_dim))
